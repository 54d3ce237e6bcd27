//! One keep-alive HTTP/1.1 connection to the Runtime API that pipelines:
//! an invocation's answer and the next `invocation/next` poll leave in one
//! write (HTTP/1.1 pipelining, which every HTTP/1.1 server handles in
//! order), so a platform that has the next event ready can answer both in
//! one write too. Per invocation that is one exchange instead of two.
//!
//! Only what the Runtime API needs: requests this module writes itself,
//! answers with `Content-Length`, chunked or read to the close.

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::net::TcpStream;

use crate::{Context, FunctionError};

/// Largest answer head accepted (the platform's are a few hundred bytes).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest answer body accepted: an event of Lambda's 6 MB limit with room.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
const NEXT_PATH: &str = "/2018-06-01/runtime/invocation/next";

/// What one invocation ended with.
pub enum Answer<'a> {
    Response(&'a [u8]),
    Error(&'a FunctionError),
}

/// An answer as read: status, the headers the worker uses, the body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct Connection {
    /// `host:port`, as `AWS_LAMBDA_RUNTIME_API` names it.
    api: String,
    stream: Option<TcpStream>,
    /// Bytes read and not yet consumed: `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
}

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

impl Connection {
    pub fn new(api: &str) -> Connection {
        Connection {
            api: api.to_string(),
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
            start: 0,
        }
    }

    /// Waits for the first event.
    pub fn next(&mut self) -> io::Result<(Vec<u8>, Context)> {
        let mut out = Vec::with_capacity(128);
        self.push_next(&mut out);
        let mut replies = self.exchange(&out, 1)?;
        event(replies.pop().expect("one answer"))
    }

    /// Posts `answer` for `request_id` and waits for the next event, both
    /// requests in one write.
    pub fn answer_and_next(
        &mut self,
        request_id: &str,
        answer: Answer<'_>,
    ) -> io::Result<(Vec<u8>, Context)> {
        // The id goes into a request line: refuse anything that could end
        // it or start another request.
        if request_id.is_empty()
            || !request_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(invalid(format!("unusable request id {request_id:?}")));
        }
        let (kind, body, error_type) = match answer {
            Answer::Response(b) => ("response", Cow::Borrowed(b), None),
            Answer::Error(e) => ("error", Cow::Owned(e.to_json()), Some(e)),
        };
        let mut out = Vec::with_capacity(body.len() + 512);
        write!(
            out,
            "POST /2018-06-01/runtime/invocation/{request_id}/{kind} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.api,
            body.len()
        )?;
        if let Some(e) = error_type {
            // A header value ends at a line break: keep the type on one line.
            let t: String = e.error_type.chars().filter(|c| !c.is_control()).collect();
            write!(out, "Lambda-Runtime-Function-Error-Type: {t}\r\n")?;
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        self.push_next(&mut out);
        let mut replies = self.exchange(&out, 2)?;
        let next = replies.pop().expect("two answers");
        let posted = replies.pop().expect("two answers");
        if !(200..300).contains(&posted.status) {
            return Err(invalid(format!(
                "invocation/{request_id}/{kind} answered {}: {}",
                posted.status,
                String::from_utf8_lossy(&posted.body)
            )));
        }
        event(next)
    }

    fn push_next(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(NEXT_PATH.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(self.api.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
    }

    /// Writes `requests` and reads `n` answers. A kept-alive connection
    /// the server closed while idle fails before any answer byte: then the
    /// requests were not read, and they go once more on a new connection.
    fn exchange(&mut self, requests: &[u8], n: usize) -> io::Result<Vec<Reply>> {
        let reused = self.stream.is_some();
        match self.try_exchange(requests, n) {
            Err(e) if reused && e.kind() == io::ErrorKind::ConnectionAborted => {
                self.try_exchange(requests, n)
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
            ok => ok,
        }
    }

    fn try_exchange(&mut self, requests: &[u8], n: usize) -> io::Result<Vec<Reply>> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.api)?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
            self.buf.clear();
            self.start = 0;
        }
        let stream = self.stream.as_mut().expect("connected");
        if let Err(e) = stream.write_all(requests) {
            self.stream = None;
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, e));
        }
        let mut replies = Vec::with_capacity(n);
        for i in 0..n {
            match self.read_reply() {
                Ok((reply, close)) => {
                    replies.push(reply);
                    if close {
                        self.stream = None;
                        if i + 1 < n {
                            return Err(invalid("the server closed the connection mid-pipeline"));
                        }
                    }
                }
                // Nothing of an answer came: the server had closed the
                // connection before it read the requests.
                Err(e)
                    if i == 0
                        && self.buf.len() == self.start
                        && matches!(
                            e.kind(),
                            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                        ) =>
                {
                    self.stream = None;
                    return Err(io::Error::new(io::ErrorKind::ConnectionAborted, e));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(replies)
    }

    /// More bytes from the socket; `UnexpectedEof` at its end.
    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            // A large event's buffer is not kept for the small ones after it.
            if self.buf.capacity() > 1024 * 1024 {
                self.buf.shrink_to(64 * 1024);
            }
        }
        let stream = self.stream.as_mut().expect("connected");
        let len = self.buf.len();
        self.buf.resize(len + 16 * 1024, 0);
        let got = loop {
            match stream.read(&mut self.buf[len..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        self.buf.truncate(len + got.as_ref().copied().unwrap_or(0));
        match got? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }

    /// The next answer on the connection, and whether the server closes
    /// it after this one.
    fn read_reply(&mut self) -> io::Result<(Reply, bool)> {
        let (status, headers, head_len) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut slots);
            match resp.parse(&self.buf[self.start..]) {
                Ok(httparse::Status::Complete(len)) => {
                    let headers = resp
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect::<Vec<_>>();
                    break (resp.code.unwrap_or(0), headers, len);
                }
                Ok(httparse::Status::Partial) => {
                    if self.buf.len() - self.start > MAX_HEAD_BYTES {
                        return Err(invalid("an answer head larger than 64 KB"));
                    }
                    self.fill()?;
                }
                Err(e) => return Err(invalid(format!("a malformed answer: {e}"))),
            }
        };
        self.start += head_len;
        let mut reply = Reply {
            status,
            headers,
            body: Vec::new(),
        };
        let close = reply
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let chunked = reply
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            reply.body = self.read_chunked()?;
        } else if let Some(len) = reply.header("content-length") {
            let len: usize = len
                .trim()
                .parse()
                .map_err(|_| invalid(format!("Content-Length {len:?}")))?;
            if len > MAX_BODY_BYTES {
                return Err(invalid(format!("an answer of {len} bytes")));
            }
            reply.body = self.take(len)?;
        } else if !(status == 204 || status == 304 || (100..200).contains(&status)) {
            // No length: the body runs to the close.
            loop {
                match self.fill() {
                    Ok(()) if self.buf.len() - self.start > MAX_BODY_BYTES => {
                        return Err(invalid("an answer larger than 8 MB"))
                    }
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e),
                }
            }
            reply.body = self.buf[self.start..].to_vec();
            self.start = self.buf.len();
            return Ok((reply, true));
        }
        Ok((reply, close))
    }

    /// `len` bytes of body.
    fn take(&mut self, len: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() - self.start < len {
            self.fill()?;
        }
        let body = self.buf[self.start..self.start + len].to_vec();
        self.start += len;
        Ok(body)
    }

    /// One line, without its CRLF.
    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf[self.start..].windows(2).position(|w| w == b"\r\n") {
                let line =
                    String::from_utf8_lossy(&self.buf[self.start..self.start + i]).into_owned();
                self.start += i + 2;
                return Ok(line);
            }
            if self.buf.len() - self.start > MAX_HEAD_BYTES {
                return Err(invalid("a chunk line larger than 64 KB"));
            }
            self.fill()?;
        }
    }

    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.line()?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("a chunk size {size:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line()?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY_BYTES {
                return Err(invalid("an answer larger than 8 MB"));
            }
            body.extend(self.take(size)?);
            if !self.line()?.is_empty() {
                return Err(invalid("a chunk not followed by CRLF"));
            }
        }
    }
}

/// An `invocation/next` answer as an event and its context.
fn event(reply: Reply) -> io::Result<(Vec<u8>, Context)> {
    if reply.status != 200 {
        return Err(invalid(format!(
            "invocation/next answered {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        )));
    }
    let header = |name: &str| reply.header(name).unwrap_or_default().to_string();
    let ctx = Context {
        request_id: header("Lambda-Runtime-Aws-Request-Id"),
        deadline_ms: header("Lambda-Runtime-Deadline-Ms").parse().unwrap_or(0),
        invoked_function_arn: header("Lambda-Runtime-Invoked-Function-Arn"),
        trace_id: header("Lambda-Runtime-Trace-Id"),
        batch_size: reply
            .header(virga_spec::contract::BATCH_SIZE_HEADER)
            .and_then(|v| v.parse().ok()),
    };
    if ctx.request_id.is_empty() {
        return Err(invalid(
            "invocation/next returned no Lambda-Runtime-Aws-Request-Id",
        ));
    }
    Ok((reply.body, ctx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server that reads what the client sends and answers with `script`,
    /// written in the pieces given (so answers split across reads and
    /// several answers in one read are both tried); returns what it read.
    fn server(pieces: Vec<Vec<u8>>, requests: usize) -> (String, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // Read until `requests` request heads (and their bodies) came.
            while String::from_utf8_lossy(&seen)
                .matches("HTTP/1.1\r\n")
                .count()
                < requests
            {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0);
                seen.extend_from_slice(&buf[..n]);
            }
            for p in pieces {
                s.write_all(&p).unwrap();
                s.flush().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            String::from_utf8_lossy(&seen).into_owned()
        });
        (addr, t)
    }

    const EVENT: &[u8] = b"HTTP/1.1 200 OK\r\nlambda-runtime-aws-request-id: id-2\r\nlambda-runtime-deadline-ms: 99\r\ncontent-length: 7\r\n\r\n{\"a\":1}";

    #[test]
    fn an_answer_and_the_next_poll_go_in_one_write_and_both_answers_are_read() {
        let accepted =
            b"HTTP/1.1 202 Accepted\r\ncontent-length: 15\r\n\r\n{\"status\":\"OK\"}".to_vec();
        // Both answers in one piece, then split mid-head.
        for pieces in [
            vec![[accepted.clone(), EVENT.to_vec()].concat()],
            vec![
                accepted[..10].to_vec(),
                accepted[10..].to_vec(),
                EVENT[..30].to_vec(),
                EVENT[30..].to_vec(),
            ],
        ] {
            let (addr, t) = server(pieces, 2);
            let mut c = Connection::new(&addr);
            let (event, ctx) = c
                .answer_and_next("id-1", Answer::Response(b"{\"r\":2}"))
                .unwrap();
            assert_eq!(event, b"{\"a\":1}");
            assert_eq!(ctx.request_id, "id-2");
            assert_eq!(ctx.deadline_ms, 99);
            let seen = t.join().unwrap();
            assert!(
                seen.starts_with("POST /2018-06-01/runtime/invocation/id-1/response HTTP/1.1\r\n"),
                "{seen}"
            );
            assert!(seen.contains("Content-Length: 7\r\n\r\n{\"r\":2}GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\n"), "{seen}");
        }
    }

    #[test]
    fn chunked_answers_and_error_posts() {
        let accepted =
            b"HTTP/1.1 202 Accepted\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                .to_vec();
        let event = b"HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: id-3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n".to_vec();
        let (addr, t) = server(vec![accepted, event], 2);
        let mut c = Connection::new(&addr);
        let e = FunctionError::new("Bad\r\nX-Injected: 1", "no");
        let (event, ctx) = c.answer_and_next("id-1", Answer::Error(&e)).unwrap();
        assert_eq!(
            (event.as_slice(), ctx.request_id.as_str()),
            (&b"{}"[..], "id-3")
        );
        let seen = t.join().unwrap();
        assert!(seen.contains("/invocation/id-1/error HTTP/1.1\r\n"));
        assert!(
            seen.contains("Lambda-Runtime-Function-Error-Type: BadX-Injected: 1\r\n"),
            "{seen}"
        );
    }

    #[test]
    fn refusals_and_bad_ids_are_errors() {
        let refused = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\nno".to_vec();
        let (addr, t) = server(vec![[refused, EVENT.to_vec()].concat()], 2);
        let mut c = Connection::new(&addr);
        let err = c
            .answer_and_next("id-1", Answer::Response(b"{}"))
            .unwrap_err();
        assert!(err.to_string().contains("answered 400"), "{err}");
        t.join().unwrap();
        let mut c = Connection::new("127.0.0.1:1");
        for id in ["", "a b", "x\r\nGET /", "a/b"] {
            assert!(
                c.answer_and_next(id, Answer::Response(b"{}")).is_err(),
                "{id:?}"
            );
        }
    }

    #[test]
    fn a_connection_closed_while_idle_is_made_again() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || {
            // First connection: one poll answered, then closed while idle.
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).unwrap();
            s.write_all(EVENT).unwrap();
            drop(s);
            // The client comes back on a new one with both requests.
            let (mut s, _) = l.accept().unwrap();
            let mut seen = Vec::new();
            while String::from_utf8_lossy(&seen)
                .matches("HTTP/1.1\r\n")
                .count()
                < 2
            {
                let n = s.read(&mut buf).unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
            s.write_all(EVENT).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(50));
        });
        let mut c = Connection::new(&addr);
        assert_eq!(c.next().unwrap().1.request_id, "id-2");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (_, ctx) = c.answer_and_next("id-2", Answer::Response(b"{}")).unwrap();
        assert_eq!(ctx.request_id, "id-2");
        t.join().unwrap();
    }
}
