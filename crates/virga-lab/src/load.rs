//! Load generators. Each simulated user owns one keep-alive HTTP/1.1
//! connection (as `wrk` does), so the client adds no pool contention of its
//! own. Closed loop: a user sends its next request when the previous one
//! returns. Open loop: requests have intended start times, and latency is
//! counted from the intended time (wrk2's correction for coordinated
//! omission), so a stalled server cannot hide its queue.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::LabError;

/// One request as the client saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Start, in ms since the scenario's start (intended start in open loop).
    pub t_ms: f64,
    /// Client-side latency in ms (open loop: from the intended start).
    pub client_ms: f64,
    /// Latency from the actual send (equals `client_ms` in closed loop).
    pub service_ms: f64,
    pub status: u16,
    /// `X-Amz-Function-Error`, or the transport error.
    pub error: Option<String>,
    pub request_id: Option<String>,
    /// Users active when it was sent (ramps, closed loops).
    pub users: u32,
}

impl Sample {
    /// Answered (200), or accepted for asynchronous delivery (202) and not
    /// marked failed by its record since.
    pub fn ok(&self) -> bool {
        matches!(self.status, 200 | 202) && self.error.is_none()
    }
}

/// Where requests go: `host:port` of a Lambda-compatible endpoint.
#[derive(Debug, Clone)]
pub struct Target {
    authority: String,
    base_path: String,
    /// Signs every request (AWS Signature V4) when set.
    signer: Option<std::sync::Arc<virga_sigv4::Signer>>,
    /// Delays every exchange as this link would.
    link: Option<Link>,
}

impl Target {
    pub fn parse(endpoint: &str) -> Result<Target, LabError> {
        let rest = endpoint.strip_prefix("http://").ok_or_else(|| {
            LabError::Config(format!(
                "endpoint {endpoint:?}: only http:// endpoints are supported (e.g. http://127.0.0.1:9000)"
            ))
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(LabError::Config(format!(
                "endpoint {endpoint:?} has no host"
            )));
        }
        Ok(Target {
            authority: authority.to_string(),
            base_path: path.to_string(),
            signer: None,
            link: None,
        })
    }

    /// Signs requests with these credentials (none: unsigned).
    pub fn signed(mut self, signer: Option<virga_sigv4::Signer>) -> Target {
        self.signer = signer.map(std::sync::Arc::new);
        self
    }

    /// Emulates `link` on every exchange (none: loopback as it is).
    pub fn over(mut self, link: Option<Link>) -> Target {
        self.link = link;
        self
    }

    fn invoke_path(&self, function: &str) -> String {
        format!(
            "{}/2015-03-31/functions/{function}/invocations",
            self.base_path
        )
    }
}

/// A client-side network link, emulated on every exchange: before a
/// request is sent, half the round trip plus its bytes at the link's rate;
/// after its answer arrived, the other half plus the answer's bytes. The
/// studies' clients reached their functions over a WAN, where payload size
/// shows in latency; on loopback it barely does. Each user has a link of
/// its own: a bottleneck the users share is not modelled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    pub bits_per_s: f64,
    pub rtt: Duration,
}

impl Link {
    /// Time `bytes` take at the link's rate.
    pub fn transfer(&self, bytes: usize) -> Duration {
        Duration::from_secs_f64(bytes as f64 * 8.0 / self.bits_per_s)
    }

    /// For reports: the rate and round trip, marked as emulated.
    pub fn label(&self) -> String {
        format!(
            "{} Mbit/s, {} ms round trip (emulated in the client)",
            self.bits_per_s / 1e6,
            self.rtt.as_secs_f64() * 1e3
        )
    }
}

impl std::str::FromStr for Link {
    type Err = String;

    /// `RATE,RTT`: e.g. `50mbit,20ms` (rates in bit, kbit, mbit or gbit per
    /// second; round trips in us, ms or s).
    fn from_str(s: &str) -> Result<Link, String> {
        let bad = |why: &str| format!("link {s:?}: {why}; write RATE,RTT, e.g. 50mbit,20ms");
        let (rate, rtt) = s.split_once(',').ok_or_else(|| bad("no comma"))?;
        let number = |text: &str, units: &[(&str, f64)]| -> Option<f64> {
            let text = text.trim().to_ascii_lowercase();
            let (unit, scale) = units
                .iter()
                .find(|(u, _)| text.ends_with(u) && text.len() > u.len())?;
            let v: f64 = text[..text.len() - unit.len()].trim().parse().ok()?;
            (v.is_finite() && v >= 0.0).then_some(v * scale)
        };
        // Longest unit first: "mbit" before "bit", "ms" before "s".
        let bits_per_s = number(
            rate,
            &[("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)],
        )
        .ok_or_else(|| bad("the rate is not a number with bit, kbit, mbit or gbit"))?;
        let rtt_s = number(rtt, &[("us", 1e-6), ("ms", 1e-3), ("s", 1.0)])
            .ok_or_else(|| bad("the round trip is not a number with us, ms or s"))?;
        if !(1e3..=1e12).contains(&bits_per_s) {
            return Err(bad(
                "the rate must be between 1 kbit and 1000 gbit per second",
            ));
        }
        if rtt_s > 10.0 {
            return Err(bad("the round trip must be at most 10 s"));
        }
        Ok(Link {
            bits_per_s,
            rtt: Duration::from_secs_f64(rtt_s),
        })
    }
}

/// Bytes of an HTTP/1.1 message head: start line and headers.
fn head_bytes(start_line: usize, headers: &hyper::HeaderMap) -> usize {
    start_line
        + 2
        + headers
            .iter()
            .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
            .sum::<usize>()
        + 2
}

/// The request a scenario repeats.
#[derive(Debug, Clone)]
pub struct Job {
    pub function: String,
    pub body: Bytes,
}

/// A stop flag shared with the Ctrl-C handler: generators finish the
/// request in flight and return what they measured.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    /// Sleeps `d` unless stopped first; returns false when stopped.
    pub async fn sleep(&self, d: Duration) -> bool {
        // tokio's clock, so paused-clock tests can drive it.
        let end = tokio::time::Instant::now() + d;
        loop {
            if self.stopped() {
                return false;
            }
            let now = tokio::time::Instant::now();
            if now >= end {
                return true;
            }
            tokio::time::sleep((end - now).min(Duration::from_millis(50))).await;
        }
    }
}

/// One keep-alive connection; reconnects after transport errors.
pub struct Conn {
    target: Target,
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// What one exchange returned.
pub struct Reply {
    pub status: u16,
    pub function_error: Option<String>,
    pub request_id: Option<String>,
    pub body: Bytes,
}

impl Conn {
    pub fn new(target: &Target) -> Conn {
        Conn {
            target: target.clone(),
            sender: None,
        }
    }

    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        if self.sender.as_ref().is_some_and(|s| s.is_closed()) {
            self.sender = None;
        }
        if self.sender.is_none() {
            let stream = TcpStream::connect(&self.target.authority)
                .await
                .map_err(|e| format!("connect {}: {e}", self.target.authority))?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("just connected"))
    }

    /// POSTs `body` to `path`.
    pub async fn post(&mut self, path: &str, body: Bytes) -> Result<Reply, String> {
        let authority = &self.target.authority;
        let mut req = hyper::Request::post(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())?;
        if let Some(s) = &self.target.signer {
            s.sign(
                "POST",
                authority,
                path,
                None,
                req.headers_mut(),
                Some(&body),
            )
            .map_err(|e| e.to_string())?;
        }
        let link = self.target.link;
        if let Some(l) = link {
            let bytes = head_bytes("POST  HTTP/1.1".len() + path.len(), req.headers()) + body.len();
            tokio::time::sleep(l.rtt / 2 + l.transfer(bytes)).await;
        }
        let sender = self.connect().await?;
        sender.ready().await.map_err(|e| e.to_string())?;
        let result = async {
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let head = head_bytes("HTTP/1.1 200 OK".len(), resp.headers());
            let header = |n: &str| {
                resp.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let status = resp.status().as_u16();
            let function_error = header("x-amz-function-error");
            let request_id = header("x-amzn-requestid");
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if let Some(l) = link {
                tokio::time::sleep(l.rtt / 2 + l.transfer(head + body.len())).await;
            }
            Ok(Reply {
                status,
                function_error,
                request_id,
                body,
            })
        }
        .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    /// Invokes `job` once, timing it from `intended` (or now).
    pub async fn invoke(&mut self, job: &Job, t0: Instant, intended: Option<Instant>) -> Sample {
        let sent = Instant::now();
        let start = intended.unwrap_or(sent);
        let path = self.target.invoke_path(&job.function);
        let r = self.post(&path, job.body.clone()).await;
        let done = Instant::now();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (status, error, request_id) = match r {
            Ok(r) => {
                let error = r
                    .function_error
                    .clone()
                    .or_else(|| (r.status != 200).then(|| error_message(r.status, &r.body)));
                (r.status, error, r.request_id)
            }
            Err(e) => (0, Some(e), None),
        };
        Sample {
            t_ms: ms(start.saturating_duration_since(t0)),
            client_ms: ms(done.saturating_duration_since(start)),
            service_ms: ms(done - sent),
            status,
            error,
            request_id,
            users: 0,
        }
    }
}

fn error_message(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .or_else(|| v.get("Message"))
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| text.chars().take(200).collect());
    format!("HTTP {status}: {msg}")
}

/// Waits for every user's samples; returns them in start order.
pub async fn gather(tasks: Vec<tokio::task::JoinHandle<Vec<Sample>>>) -> Vec<Sample> {
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(v) = t.await {
            all.extend(v);
        }
    }
    all.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
    all
}

/// Sequential requests on one connection, `n` of them, calling `before`
/// ahead of each (e.g. to force a cold start).
pub async fn sequential(target: &Target, job: &Job, n: u32, stop: &Stop) -> Vec<Sample> {
    let mut conn = Conn::new(target);
    let t0 = Instant::now();
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        if stop.stopped() {
            break;
        }
        let mut s = conn.invoke(job, t0, None).await;
        s.users = 1;
        out.push(s);
    }
    out
}

/// When user `i` of `users` sends its first request: paced users are spread
/// over one think time, since users that start together and wait the same
/// time would keep arriving in lockstep.
pub fn first_send(i: u32, users: u32, think: Duration) -> Duration {
    think.mul_f64(f64::from(i) / f64::from(users.max(1)))
}

/// `users` closed-loop users for `duration` (after `warmup`, whose requests
/// are not kept); each waits `think` after an answer before its next request.
#[allow(clippy::too_many_arguments)]
pub async fn closed_loop(
    target: &Target,
    job: &Job,
    users: u32,
    think: Duration,
    warmup: Duration,
    duration: Duration,
    stop: &Stop,
    on_done: impl Fn() + Send + Sync + 'static,
) -> Vec<Sample> {
    let on_done = Arc::new(on_done);
    let t0 = Instant::now();
    let measure_from = t0 + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::new();
    for i in 0..users {
        let (target, job, stop, on_done) =
            (target.clone(), job.clone(), stop.clone(), on_done.clone());
        let first = first_send(i, users, think);
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(&target);
            let mut out = Vec::new();
            if !first.is_zero() && !stop.sleep(first).await {
                return out;
            }
            while Instant::now() < end && !stop.stopped() {
                let mut s = conn.invoke(&job, measure_from, None).await;
                if Instant::now() > measure_from + Duration::from_micros(1) && s.t_ms > 0.0 {
                    s.users = users;
                    out.push(s);
                    on_done();
                } else if s.status == 0 {
                    // Cannot connect: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if !think.is_zero() {
                    // No longer than the run: the last wait would only delay the result.
                    let left = end.saturating_duration_since(Instant::now());
                    if !stop.sleep(think.min(left)).await {
                        break;
                    }
                }
            }
            out
        }));
    }
    gather(tasks).await
}

/// Arrival offsets for an open loop: `rate` per second for `duration`.
pub fn arrivals(rate: f64, duration: Duration, poisson: bool, seed: u64) -> Vec<Duration> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let end = duration.as_secs_f64();
    if !poisson {
        // Multiplied, not summed: no drift over long runs.
        let n = (end * rate).ceil() as u64;
        return (0..n)
            .map(|i| i as f64 / rate)
            .filter(|t| *t < end)
            .map(Duration::from_secs_f64)
            .collect();
    }
    let mut out = Vec::new();
    let mut t = 0.0;
    loop {
        // Exponential inter-arrival times.
        t += -(1.0 - rng.random::<f64>()).ln() / rate;
        if t >= end {
            break;
        }
        out.push(Duration::from_secs_f64(t));
    }
    out
}

/// Sends one request at each offset of `schedule` from `connections`
/// connections; a request whose time has come waits for a free connection
/// and that wait counts in its latency.
///
/// A pacer thread releases each arrival at its time with the OS's
/// microsecond sleep (tokio's timer rounds to the millisecond, which would
/// count up to a millisecond of the client's own lateness as latency).
pub async fn open_loop(
    target: &Target,
    job: &Job,
    schedule: Vec<Duration>,
    connections: u32,
    stop: &Stop,
    on_done: impl Fn() + Send + Sync + 'static,
) -> Vec<Sample> {
    let on_done = Arc::new(on_done);
    let t0 = Instant::now() + Duration::from_millis(20);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let pacer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for offset in schedule {
                let intended = t0 + offset;
                loop {
                    if stop.stopped() {
                        return;
                    }
                    let now = Instant::now();
                    if now >= intended {
                        break;
                    }
                    std::thread::sleep((intended - now).min(Duration::from_millis(50)));
                }
                if tx.send(intended).is_err() {
                    return;
                }
            }
        })
    };
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let (target, job, stop, rx, on_done) = (
            target.clone(),
            job.clone(),
            stop.clone(),
            rx.clone(),
            on_done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(&target);
            let mut out = Vec::new();
            loop {
                // A tokio mutex: the next free connection takes the next arrival.
                let next = rx.lock().await.recv().await;
                let Some(intended) = next else { break };
                if stop.stopped() {
                    break;
                }
                out.push(conn.invoke(&job, t0, Some(intended)).await);
                on_done();
            }
            out
        }));
    }
    let all = gather(tasks).await;
    let _ = pacer.join();
    all
}

/// Users over time: the target user count moves linearly through `stages`
/// (`(users, ramp, hold)`); each user sends, waits `think`, sends again.
pub async fn ramp(
    target: &Target,
    job: &Job,
    stages: &[(u32, Duration, Duration)],
    think: Duration,
    stop: &Stop,
    on_done: impl Fn() + Send + Sync + 'static,
) -> Vec<Sample> {
    let on_done = Arc::new(on_done);
    let max_users = stages.iter().map(|s| s.0).max().unwrap_or(0);
    let active = Arc::new(AtomicU32::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..max_users {
        let (target, job, stop, active, finished, on_done) = (
            target.clone(),
            job.clone(),
            stop.clone(),
            active.clone(),
            finished.clone(),
            on_done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(&target);
            let mut out = Vec::new();
            while !finished.load(Ordering::SeqCst) && !stop.stopped() {
                let users = active.load(Ordering::SeqCst);
                if i >= users {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let mut s = conn.invoke(&job, t0, None).await;
                s.users = users;
                out.push(s);
                on_done();
                if !think.is_zero() {
                    tokio::time::sleep(think).await;
                }
            }
            out
        }));
    }
    // The controller: interpolate the user count every 50 ms.
    let mut from = 0u32;
    'stages: for &(to, ramp, hold) in stages {
        let start = Instant::now();
        loop {
            let el = start.elapsed();
            if el >= ramp {
                break;
            }
            let f = el.as_secs_f64() / ramp.as_secs_f64();
            let u = f64::from(from) + (f64::from(to) - f64::from(from)) * f;
            active.store(u.round() as u32, Ordering::SeqCst);
            if !stop.sleep(Duration::from_millis(50)).await {
                break 'stages;
            }
        }
        active.store(to, Ordering::SeqCst);
        if !stop.sleep(hold).await {
            break;
        }
        from = to;
    }
    finished.store(true, Ordering::SeqCst);
    gather(tasks).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let t = Target::parse("http://127.0.0.1:9000/").unwrap();
        assert_eq!(t.authority, "127.0.0.1:9000");
        assert_eq!(t.invoke_path("f"), "/2015-03-31/functions/f/invocations");
        let t = Target::parse("http://h:1/prefix").unwrap();
        assert_eq!(
            t.invoke_path("f"),
            "/prefix/2015-03-31/functions/f/invocations"
        );
        assert!(Target::parse("https://h").is_err());
        assert!(Target::parse("http://").is_err());
    }

    #[test]
    fn links_parse_and_time_bytes() {
        let l: Link = "50mbit,20ms".parse().unwrap();
        assert_eq!(l.bits_per_s, 50e6);
        assert_eq!(l.rtt, Duration::from_millis(20));
        // 1 MB at 50 Mbit/s: 160 ms.
        let t = l.transfer(1_000_000).as_secs_f64();
        assert!((t - 0.16).abs() < 1e-9, "{t}");
        let l: Link = " 1.5 Gbit , 250us ".parse().unwrap();
        assert_eq!(l.bits_per_s, 1.5e9);
        assert_eq!(l.rtt, Duration::from_micros(250));
        assert_eq!("10kbit,1s".parse::<Link>().unwrap().bits_per_s, 1e4);
        assert!(l.label().contains("emulated"));
        for bad in [
            "50mbit",
            "fast,20ms",
            "50,20ms",
            "50mbit,20",
            "-5mbit,20ms",
            "nanmbit,1ms",
            "10bit,1ms",
            "50mbit,11s",
            "mbit,1ms",
        ] {
            let e = bad.parse::<Link>().unwrap_err();
            assert!(e.contains("RATE,RTT"), "{bad}: {e}");
        }
    }

    #[test]
    fn constant_arrivals_are_evenly_spaced() {
        let a = arrivals(10.0, Duration::from_secs(1), false, 1);
        assert_eq!(a.len(), 10);
        assert_eq!(a[0], Duration::ZERO);
        assert!((a[1].as_secs_f64() - 0.1).abs() < 1e-9);
    }

    #[test]
    fn poisson_arrivals_have_the_rate_on_average() {
        let a = arrivals(200.0, Duration::from_secs(50), true, 7);
        let n = a.len() as f64;
        // 10,000 expected; Poisson sd = 100.
        assert!((n - 10_000.0).abs() < 500.0, "{n}");
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(a, arrivals(200.0, Duration::from_secs(50), true, 7));
    }

    /// A bare HTTP/1.1 server answering `{}` at once on keep-alive
    /// connections; counts the requests it answered.
    async fn bare_server() -> (Target, Arc<AtomicU32>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = Target::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let answered = Arc::new(AtomicU32::new(0));
        let count = answered.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // One request: headers, then Content-Length bytes of body.
                        let Some(head) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let headers = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
                        let len: usize = headers
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() < head + 4 + len {
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        }
                        buf.drain(..head + 4 + len);
                        count.fetch_add(1, Ordering::SeqCst);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                        if sock.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (target, answered)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn think_time_paces_each_user() {
        let (target, answered) = bare_server().await;
        let job = Job {
            function: "f".into(),
            body: Bytes::from_static(b"{}"),
        };
        let (users, think, duration) = (3u32, Duration::from_millis(250), Duration::from_secs(1));
        let samples = closed_loop(
            &target,
            &job,
            users,
            think,
            Duration::ZERO,
            duration,
            &Stop::new(),
            || {},
        )
        .await;
        assert!(samples.iter().all(Sample::ok));
        // A user that waits 250 ms after each answer starts at most
        // 1 + 1000 / 250 requests in a second, however fast the server is.
        let per_user = 1 + (duration.as_millis() / think.as_millis()) as usize;
        assert!(!samples.is_empty());
        assert!(
            samples.len() <= users as usize * per_user,
            "{} requests from {users} paced users",
            samples.len()
        );
        // The server saw no more than that either (warm-up included).
        assert!(answered.load(Ordering::SeqCst) as usize <= users as usize * per_user);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_link_delays_each_exchange_by_its_round_trip_and_bytes() {
        let (target, answered) = bare_server().await;
        // 80 kbit/s: the 10 kB body alone takes 1 s; the round trip 200 ms.
        let link: Link = "80kbit,200ms".parse().unwrap();
        let mut conn = Conn::new(&target.clone().over(Some(link)));
        let body = Bytes::from(vec![b' '; 10_000]);
        let t = Instant::now();
        let reply = conn.post("/x", body).await.unwrap();
        let took = t.elapsed();
        assert_eq!(reply.status, 200);
        assert_eq!(answered.load(Ordering::SeqCst), 1);
        // A lower bound only: the emulated delays are slept, whatever the host.
        assert!(took >= Duration::from_millis(1200), "{took:?}");
        // Without a link the same exchange does not wait for them.
        let mut plain = Conn::new(&target);
        let t = Instant::now();
        plain.post("/x", Bytes::from_static(b"{}")).await.unwrap();
        assert!(t.elapsed() < took);
    }

    #[test]
    fn paced_users_start_spread_over_one_think_time() {
        let think = Duration::from_millis(1000);
        let starts: Vec<Duration> = (0..4).map(|i| first_send(i, 4, think)).collect();
        assert_eq!(
            starts,
            [0, 250, 500, 750].map(Duration::from_millis).to_vec()
        );
        // Unpaced users all start at once.
        assert_eq!(first_send(3, 4, Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_interrupts_sleep() {
        let s = Stop::new();
        let s2 = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            s2.stop();
        });
        assert!(!s.sleep(Duration::from_secs(3600)).await);
    }
}
