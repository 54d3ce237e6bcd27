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
//!   back, so RSS tracks what is in use.

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
