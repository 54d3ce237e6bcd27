//! The host-wide memory budget: the sum of `memory_mb` of running instances
//! stays within `virga serve --max-memory-mb`.
//!
//! An instance holds a [`Reservation`] from before it is spawned until its
//! process is gone; dropping the reservation returns its memory and wakes
//! starts waiting for room.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Debug)]
pub struct MemoryBudget {
    limit_mb: u64,
    used_mb: Mutex<u64>,
    freed: Notify,
}

impl MemoryBudget {
    pub fn new(limit_mb: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit_mb,
            used_mb: Mutex::new(0),
            freed: Notify::new(),
        })
    }

    /// The default budget: the host's memory minus a reserve for the platform
    /// and the system (a tenth, at least 1 GiB); unbounded where the host's
    /// memory cannot be read.
    pub fn host_default_mb() -> u64 {
        match host_memory_mb() {
            Some(total) => total.saturating_sub((total / 10).max(1024)).max(128),
            None => u64::MAX,
        }
    }

    pub fn limit_mb(&self) -> u64 {
        self.limit_mb
    }

    pub fn used_mb(&self) -> u64 {
        *self.used_mb.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `mb` if it fits.
    pub fn try_reserve(self: &Arc<Self>, mb: u64) -> Option<Reservation> {
        let mut used = self.used_mb.lock().unwrap_or_else(|e| e.into_inner());
        if used.saturating_add(mb) > self.limit_mb {
            return None;
        }
        *used += mb;
        Some(Reservation {
            budget: self.clone(),
            mb,
        })
    }

    /// Resolves after some memory was returned.
    pub async fn freed(&self) {
        self.freed.notified().await
    }
}

/// Memory held by one instance, returned on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    mb: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        {
            let mut used = self
                .budget
                .used_mb
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *used = used.saturating_sub(self.mb);
        }
        self.budget.freed.notify_waiters();
    }
}

/// `MemTotal` of `/proc/meminfo`, in MiB.
fn host_memory_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_the_limit_and_return_on_drop() {
        let b = MemoryBudget::new(1000);
        let a = b.try_reserve(600).unwrap();
        assert!(b.try_reserve(600).is_none(), "1200 > 1000");
        let c = b.try_reserve(400).unwrap();
        assert_eq!(b.used_mb(), 1000);
        drop(a);
        assert_eq!(b.used_mb(), 400);
        assert!(b.try_reserve(600).is_some());
        drop(c);
        assert_eq!(b.used_mb(), 0);
    }

    #[test]
    fn the_default_leaves_a_reserve() {
        let d = MemoryBudget::host_default_mb();
        if let Some(total) = host_memory_mb() {
            assert!(d < total && d >= 128);
        }
    }
}
