//! Process-wide housekeeping, on one thread of its own (not a task: it must
//! outlive any one tokio runtime, and there is one per process however many
//! platforms a test starts).
//!
//! - Histogram samples wait in the Prometheus recorder until an upkeep
//!   folds them into their buckets: without one, a platform nobody scrapes
//!   keeps every sample it ever took.
//! - An allocator keeps freed pages for reuse (glibc's malloc returns them
//!   only from the top of each arena; mimalloc, the `virga` binary's, after
//!   a delay counted on its own calls). The live heap of a busy platform is
//!   a few MB (a heap profile of the soak bench peaks at ~3 MB), yet its
//!   heaps creep up under load; trimming now and then gives the freed pages
//!   back, so RSS tracks what is in use. mimalloc's heaps are per thread:
//!   the async runtime's workers give theirs back as they go idle
//!   (`on_thread_park`), this thread the rest.

use std::sync::OnceLock;
use std::time::Duration;

/// How often recorded histogram samples are folded into their buckets.
const METRICS_EVERY: Duration = Duration::from_secs(5);
/// How often freed heap pages go back to the system.
const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Starts the housekeeping thread, once per process.
pub(crate) fn start() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("virga-upkeep".into())
            .spawn(|| {
                let per_trim = (TRIM_EVERY.as_secs() / METRICS_EVERY.as_secs()).max(1);
                for round in 1u64.. {
                    std::thread::sleep(METRICS_EVERY);
                    if let Some(handle) = crate::meter::prometheus() {
                        handle.run_upkeep();
                    }
                    if round % per_trim == 0 {
                        trim_heap();
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the upkeep thread: metrics and freed memory accumulate");
        }
    });
}

/// Least time between two collections of one runtime thread's own heap.
const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// For the async runtime's `on_thread_park`: a worker about to go idle
/// gives its heap's freed pages back, at most once per `COLLECT_EVERY`.
///
/// mimalloc keeps a thread's freed pages in that thread's heap and gives
/// them back only on that thread's own later calls; a worker that goes
/// idle after a burst keeps them, however long it sleeps, and the
/// housekeeping thread's `mi_collect` reaches only its own heap and the
/// abandoned ones (the soak bench: 2.5 of 5.8 MB grown over 120 s were
/// such pages). A timer ends every idle spell within seconds (the
/// scheduler's pacemaker, a second after the last invocation), so the
/// pages freed since the last collection go back then.
pub fn on_thread_park() {
    thread_local! {
        static LAST: std::cell::Cell<Option<std::time::Instant>> =
            const { std::cell::Cell::new(None) };
    }
    if LAST.with(|last| due(last, std::time::Instant::now())) {
        collect_own_heap();
    }
}

/// Whether a thread that last collected at `last` collects `now` (and if
/// so, `now` becomes its last).
fn due(last: &std::cell::Cell<Option<std::time::Instant>>, now: std::time::Instant) -> bool {
    match last.get() {
        Some(t) if now.saturating_duration_since(t) < COLLECT_EVERY => false,
        _ => {
            last.set(Some(now));
            true
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn collect_own_heap() {
    // SAFETY: as in `trim_heap`; mi_collect works on the calling thread's
    // heap (and the process-wide abandoned segments) under its own locks.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn collect_own_heap() {}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim_heap() {
    // SAFETY: mi_collect and malloc_trim only walk their allocator's own
    // heaps under its locks; neither has preconditions on the caller. Rust
    // allocates from mimalloc when the binary makes it the global allocator,
    // the C libraries (SQLite) from glibc: both heaps are given back.
    unsafe {
        libmimalloc_sys::mi_collect(true);
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::time::Instant;

    #[test]
    fn a_thread_collects_at_its_first_park_then_at_most_once_a_second() {
        let last = Cell::new(None);
        let t0 = Instant::now();
        assert!(due(&last, t0));
        assert!(!due(&last, t0));
        assert!(!due(&last, t0 + Duration::from_millis(999)));
        assert!(due(&last, t0 + Duration::from_millis(1000)));
        assert!(!due(&last, t0 + Duration::from_millis(1500)));
        assert!(due(&last, t0 + Duration::from_secs(5)));
    }

    #[test]
    fn collecting_on_park_is_safe_from_any_thread() {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let v: Vec<Vec<u8>> = (0..1000).map(|i| vec![0u8; i % 300]).collect();
                    drop(v);
                    on_thread_park();
                    on_thread_park();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
