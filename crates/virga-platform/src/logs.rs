//! Function logs: what instances print, plus the platform's START/END/REPORT
//! lines, kept in a bounded ring per function (`virga logs`) and, where the
//! platform has a data dir, in rotated files (`<data-dir>/logs/<function>.log`,
//! then `.log.1` ...) that outlive restarts.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// The most recent lines of one function, at most `lines` of them in at
/// most `bytes`, kept as text in one buffer: a line costs the ring its
/// bytes, not an allocation of its own that lives for thousands of
/// invocations among short-lived ones (which kept the allocator's pages
/// from being reused), and a function printing long lines cannot make the
/// ring hold more than `bytes`.
#[derive(Debug)]
pub struct LogRing {
    ring: Mutex<Ring>,
    /// Where every line is also written, under this function's name.
    file: Option<(Arc<LogFiles>, Arc<str>)>,
}

/// Lines, each ended by `\n`, oldest first.
#[derive(Debug)]
struct Ring {
    text: VecDeque<u8>,
    lines: usize,
    max_lines: usize,
    max_bytes: usize,
}

impl Ring {
    fn new(max_lines: usize, max_bytes: usize) -> Self {
        Ring {
            text: VecDeque::new(),
            lines: 0,
            max_lines: max_lines.max(1),
            // Room for one empty line at least.
            max_bytes: max_bytes.max(1),
        }
    }

    fn push(&mut self, line: &str) {
        // A line longer than the ring keeps its start, cut on a character.
        let mut end = line.len().min(self.max_bytes - 1);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let line = &line[..end];
        while self.lines > 0
            && (self.lines == self.max_lines || self.text.len() + line.len() + 1 > self.max_bytes)
        {
            // The oldest line ends at the first newline, in either half.
            let (a, b) = self.text.as_slices();
            let first = match memchr::memchr(b'\n', a) {
                Some(i) => i + 1,
                None => memchr::memchr(b'\n', b).map_or(self.text.len(), |i| a.len() + i + 1),
            };
            self.text.drain(..first);
            self.lines -= 1;
        }
        // One line each: a newline inside would split it.
        self.text
            .extend(line.bytes().map(|b| if b == b'\n' { b' ' } else { b }));
        self.text.push_back(b'\n');
        self.lines += 1;
    }

    fn tail(&self, n: usize) -> Vec<String> {
        let (a, b) = self.text.as_slices();
        let text = [a, b].concat();
        let all: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
        all[all.len().saturating_sub(n)..]
            .iter()
            .map(|l| String::from_utf8_lossy(&l[..l.len() - 1]).into_owned())
            .collect()
    }
}

impl LogRing {
    pub fn new(lines: usize, bytes: usize) -> Self {
        LogRing {
            ring: Mutex::new(Ring::new(lines, bytes)),
            file: None,
        }
    }

    /// A ring that also writes to `function`'s log file, starting with the
    /// file's last lines (what the function logged before a restart).
    pub fn persistent(lines: usize, bytes: usize, files: Arc<LogFiles>, function: &str) -> Self {
        let mut ring = Ring::new(lines, bytes);
        for line in files.tail(function, lines) {
            ring.push(&line);
        }
        LogRing {
            ring: Mutex::new(ring),
            file: Some((files, Arc::from(function))),
        }
    }

    pub fn push(&self, line: impl AsRef<str>) {
        let line = line.as_ref();
        if let Some((files, function)) = &self.file {
            files.append(function, line);
        }
        self.ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<String> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner()).tail(n)
    }
}

/// What the log writer is asked to do.
enum Msg {
    Line(Arc<str>, String),
    Flush(mpsc::Sender<()>),
    /// The function is gone: close its file (a later line reopens it).
    Close(String),
}

/// Every function's log file, written by one thread so a log line never
/// costs an invocation a write(2); files rotate at a size.
#[derive(Debug)]
pub struct LogFiles {
    dir: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
}

/// Written lines reach the disk at least this often.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// After a line wakes the writer, how long it lets more gather.
const GATHER: Duration = Duration::from_millis(10);
/// A file nobody wrote to for this long is closed: open files stay few.
const CLOSE_IDLE: Duration = Duration::from_secs(30);

impl LogFiles {
    /// Writes under `dir`, rotating a function's file past `max_bytes` and
    /// keeping `keep` rotated files.
    pub fn open(dir: &Path, max_bytes: u64, keep: usize) -> io::Result<Arc<LogFiles>> {
        fs::create_dir_all(dir)?;
        let (tx, rx) = mpsc::channel();
        let writer_dir = dir.to_path_buf();
        std::thread::Builder::new()
            .name("virga-logs".into())
            .spawn(move || write_loop(&writer_dir, rx, max_bytes, keep))?;
        Ok(Arc::new(LogFiles {
            dir: dir.to_path_buf(),
            tx: Mutex::new(Some(tx)),
        }))
    }

    fn path(&self, function: &str, generation: usize) -> PathBuf {
        file_path(&self.dir, function, generation)
    }

    /// Queues a line; the function's name is shared, not copied per line.
    pub fn append(&self, function: &Arc<str>, line: &str) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = tx.send(Msg::Line(function.clone(), line.to_string()));
        }
    }

    /// Closes `function`'s file (after a delete).
    pub fn close(&self, function: &str) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = tx.send(Msg::Close(function.to_string()));
        }
    }

    /// Waits until every line appended so far is in its file.
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if let Some(tx) = self.tx.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            if tx.send(Msg::Flush(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }

    /// The last `n` lines `function` logged, oldest first, across its
    /// newest rotated file and the current one.
    pub fn tail(&self, function: &str, n: usize) -> Vec<String> {
        let mut lines = VecDeque::new();
        for generation in [1, 0] {
            let Ok(file) = File::open(self.path(function, generation)) else {
                continue;
            };
            for line in BufReader::new(file).lines().map_while(Result::ok) {
                if lines.len() == n {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
        }
        lines.into()
    }
}

fn file_path(dir: &Path, function: &str, generation: usize) -> PathBuf {
    match generation {
        0 => dir.join(format!("{function}.log")),
        g => dir.join(format!("{function}.log.{g}")),
    }
}

/// An open log file, how big it is and when it was last written.
struct Open {
    out: BufWriter<File>,
    bytes: u64,
    used: std::time::Instant,
}

fn open_append(path: &Path) -> io::Result<Open> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let bytes = file.metadata()?.len();
    Ok(Open {
        out: BufWriter::new(file),
        bytes,
        used: std::time::Instant::now(),
    })
}

fn write_loop(dir: &Path, rx: mpsc::Receiver<Msg>, max_bytes: u64, keep: usize) {
    let mut open: HashMap<String, Open> = HashMap::new();
    let flush_all = |open: &mut HashMap<String, Open>| {
        for f in open.values_mut() {
            let _ = f.out.flush();
        }
    };
    let mut flushed = std::time::Instant::now();
    let handle = |open: &mut HashMap<String, Open>, m: Msg| match m {
        Msg::Line(function, line) => {
            if let Err(e) = write_line(dir, open, &function, &line, max_bytes, keep) {
                tracing::warn!(function = &*function, error = %e, "cannot write the function's log file");
                open.remove(&*function);
            }
        }
        Msg::Flush(done) => {
            flush_all(open);
            let _ = done.send(());
        }
        Msg::Close(function) => {
            if let Some(mut f) = open.remove(&function) {
                let _ = f.out.flush();
            }
        }
    };
    loop {
        match rx.recv_timeout(FLUSH_EVERY) {
            Ok(first) => {
                // Let the lines of a busy moment gather: one wake-up of
                // this thread per batch, not three per invocation.
                if matches!(first, Msg::Line(..)) {
                    std::thread::sleep(GATHER);
                }
                handle(&mut open, first);
                loop {
                    match rx.try_recv() {
                        Ok(m) => handle(&mut open, m),
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => {
                            flush_all(&mut open);
                            return;
                        }
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                flush_all(&mut open);
                return;
            }
        }
        // On a clock, not on quiet: steady traffic is flushed too.
        if flushed.elapsed() >= FLUSH_EVERY {
            flush_all(&mut open);
            open.retain(|_, f| f.used.elapsed() < CLOSE_IDLE);
            flushed = std::time::Instant::now();
        }
    }
}

fn write_line(
    dir: &Path,
    open: &mut HashMap<String, Open>,
    function: &str,
    line: &str,
    max_bytes: u64,
    keep: usize,
) -> io::Result<()> {
    // The usual case, one lookup: the file is open and has room.
    if let Some(f) = open.get_mut(function) {
        if f.bytes == 0 || f.bytes + (line.len() as u64) < max_bytes {
            return append_line(f, line);
        }
    }
    if !open.contains_key(function) {
        open.insert(
            function.to_string(),
            open_append(&file_path(dir, function, 0))?,
        );
    }
    let f = open.get_mut(function).expect("inserted above");
    if f.bytes > 0 && f.bytes + line.len() as u64 + 1 > max_bytes {
        f.out.flush()?;
        open.remove(function);
        // f.log.(keep-1) -> f.log.keep ... f.log -> f.log.1; the oldest goes.
        for g in (0..keep).rev() {
            let from = file_path(dir, function, g);
            if from.exists() {
                fs::rename(&from, file_path(dir, function, g + 1))?;
            }
        }
        if keep == 0 {
            fs::remove_file(file_path(dir, function, 0))?;
        }
        open.insert(
            function.to_string(),
            open_append(&file_path(dir, function, 0))?,
        );
    }
    append_line(open.get_mut(function).expect("present"), line)
}

fn append_line(f: &mut Open, line: &str) -> io::Result<()> {
    f.used = std::time::Instant::now();
    f.out.write_all(line.as_bytes())?;
    f.out.write_all(b"\n")?;
    f.bytes += line.len() as u64 + 1;
    Ok(())
}

/// Lambda's tail for `X-Amz-Log-Type: Tail`: the last 4 KB of an invocation's log.
pub fn tail_4kb(log: &str) -> &str {
    const MAX: usize = 4096;
    if log.len() <= MAX {
        return log;
    }
    let mut start = log.len() - MAX;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    &log[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_lines() {
        let r = LogRing::new(3, 1024);
        assert_eq!(r.tail(10), Vec::<String>::new());
        for i in 0..5 {
            r.push(format!("l{i}"));
        }
        assert_eq!(r.tail(10), vec!["l2", "l3", "l4"]);
        assert_eq!(r.tail(1), vec!["l4"]);
        assert_eq!(r.tail(0), Vec::<String>::new());
    }

    #[test]
    fn ring_holds_at_most_its_bytes_whatever_the_lines() {
        // 10 bytes a line with its newline: four fit in 45.
        let r = LogRing::new(100, 45);
        for i in 0..20 {
            r.push(format!("line {i:04}"));
        }
        assert_eq!(
            r.tail(100),
            (16..20).map(|i| format!("line {i:04}")).collect::<Vec<_>>()
        );
        // A line longer than the ring pushes everything out and keeps its
        // start, cut on a character; the ring stays within its bytes.
        r.push("é".repeat(100));
        let kept = r.tail(100);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0], "é".repeat(22));
        assert!(r.ring.lock().unwrap().text.len() <= 45);
        // Empty lines and embedded newlines stay one line each (the full
        // ring lets its long line go for them).
        r.push("");
        r.push("a\nb");
        assert_eq!(r.tail(100), vec!["", "a b"]);
    }

    #[test]
    fn ring_keeps_whole_lines_across_its_wrap() {
        let r = LogRing::new(1000, 64);
        for i in 0..1000 {
            r.push(format!("{i}"));
        }
        let t = r.tail(1000);
        let first: usize = t[0].parse().unwrap();
        assert_eq!(t, (first..1000).map(|i| i.to_string()).collect::<Vec<_>>());
        assert!(r.ring.lock().unwrap().text.len() <= 64);
    }

    #[test]
    fn log_files_rotate_and_a_new_ring_starts_from_them() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::open(dir.path(), 100, 2).unwrap();
        let ring = LogRing::persistent(5, 1024, files.clone(), "f");
        // 30 lines of 10 bytes (with the newline): three files' worth.
        for i in 0..30 {
            ring.push(format!("line {i:04}"));
        }
        files.flush();
        let size = |p: &str| std::fs::metadata(dir.path().join(p)).map(|m| m.len());
        assert!(size("f.log").unwrap() <= 100);
        assert!(size("f.log.1").unwrap() <= 100 && size("f.log.2").unwrap() <= 100);
        assert!(size("f.log.3").is_err(), "only two rotated files are kept");
        // After a restart, the ring starts with the newest lines.
        let again = LogRing::persistent(5, 1024, files.clone(), "f");
        assert_eq!(
            again.tail(5),
            (25..30).map(|i| format!("line {i:04}")).collect::<Vec<_>>()
        );
        assert_eq!(files.tail("other", 5), Vec::<String>::new());
    }

    #[test]
    fn tail_cuts_on_a_char_boundary() {
        let s = "é".repeat(3000);
        let t = tail_4kb(&s);
        assert!(t.len() <= 4096 && t.len() >= 4094);
        assert_eq!(tail_4kb("short"), "short");
    }
}
