//! Function logs: what instances print, plus the platform's START/END/REPORT
//! lines, kept in a bounded ring per function (`virga logs`).

use std::collections::VecDeque;
use std::sync::Mutex;

/// The most recent lines of one function.
#[derive(Debug)]
pub struct LogRing {
    lines: Mutex<VecDeque<String>>,
    capacity: usize,
}

impl LogRing {
    pub fn new(capacity: usize) -> Self {
        LogRing {
            lines: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity,
        }
    }

    pub fn push(&self, line: String) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == self.capacity {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .iter()
            .skip(lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }
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
        let r = LogRing::new(3);
        for i in 0..5 {
            r.push(format!("l{i}"));
        }
        assert_eq!(r.tail(10), vec!["l2", "l3", "l4"]);
        assert_eq!(r.tail(1), vec!["l4"]);
    }

    #[test]
    fn tail_cuts_on_a_char_boundary() {
        let s = "é".repeat(3000);
        let t = tail_4kb(&s);
        assert!(t.len() <= 4096 && t.len() >= 4094);
        assert_eq!(tail_4kb("short"), "short");
    }
}
