//! A cluster-wide `max_concurrency`: each live node takes a share of it.
//!
//! The live nodes, sorted by name, split `max_concurrency` as evenly as it
//! goes (the first `max % n` nodes one more), so the shares always add up
//! to the function's limit. A node admits an invocation only while its own
//! count is under its share; past it the request is throttled (429), not
//! queued, since the other nodes' room is theirs. Membership comes from
//! [`crate::cluster`]; a single node (no cluster) has no share at all and
//! its pools alone enforce the limit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// `max` split among `nodes`: the share of the node at `index`.
pub fn share(max: u32, index: usize, nodes: usize) -> usize {
    let (max, nodes) = (max as usize, nodes.max(1));
    max / nodes + usize::from(index < max % nodes)
}

/// This node's place among the live nodes, and its count per function.
#[derive(Debug, Default)]
pub(crate) struct Shares {
    /// `(index, live nodes)`; `None` outside a cluster.
    members: RwLock<Option<(usize, usize)>>,
    counts: Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

/// One admitted invocation, counted against its node's share until dropped.
#[derive(Debug)]
pub(crate) struct SharePermit(Arc<AtomicUsize>);

impl Drop for SharePermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why a share turned a request away.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ShareFull {
    pub share: usize,
    pub nodes: usize,
}

impl Shares {
    pub fn set_members(&self, index: usize, nodes: usize) {
        *self.members.write().unwrap_or_else(|e| e.into_inner()) = Some((index, nodes));
    }

    pub fn members(&self) -> Option<(usize, usize)> {
        *self.members.read().unwrap_or_else(|e| e.into_inner())
    }

    /// This node's share of `max` (`None`: no limit from the cluster).
    pub fn limit(&self, max: u32) -> Option<usize> {
        if max == 0 {
            return None;
        }
        self.members().map(|(i, n)| share(max, i, n))
    }

    /// Whether [`Shares::admit`] would admit one more now.
    pub fn has_room(&self, function: &str, max: u32) -> bool {
        let Some(limit) = self.limit(max) else {
            return true;
        };
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .get(function)
            .is_none_or(|c| c.load(Ordering::SeqCst) < limit)
    }

    /// Admits one invocation of `function` (limit `max`), or says why not.
    pub fn admit(&self, function: &str, max: u32) -> Result<Option<SharePermit>, ShareFull> {
        let Some((index, nodes)) = self.members() else {
            return Ok(None);
        };
        if max == 0 {
            return Ok(None);
        }
        let limit = share(max, index, nodes);
        let count = self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(function.to_string())
            .or_default()
            .clone();
        let admitted = count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            Ok(Some(SharePermit(count)))
        } else {
            Err(ShareFull {
                share: limit,
                nodes,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_limit_for_any_cluster() {
        for max in 0..40u32 {
            for nodes in 1..8 {
                let shares: Vec<usize> = (0..nodes).map(|i| share(max, i, nodes)).collect();
                assert_eq!(shares.iter().sum::<usize>(), max as usize, "{max} {nodes}");
                let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
                assert!(hi - lo <= 1, "even: {shares:?}");
            }
        }
    }

    #[test]
    fn a_node_admits_up_to_its_share_and_permits_give_back() {
        let s = Shares::default();
        assert!(s.admit("f", 3).unwrap().is_none(), "no cluster, no share");
        s.set_members(1, 2);
        let a = s.admit("f", 3).unwrap().unwrap();
        assert_eq!(
            s.admit("f", 3).unwrap_err(),
            ShareFull { share: 1, nodes: 2 }
        );
        assert!(s.admit("g", 3).unwrap().is_some(), "per function");
        assert!(s.admit("f", 0).unwrap().is_none(), "0 is no limit");
        assert!(!s.has_room("f", 3));
        assert!(s.has_room("g", 3));
        drop(a);
        assert!(s.has_room("f", 3));
        assert!(s.admit("f", 3).unwrap().is_some());
        s.set_members(0, 2);
        assert_eq!(s.limit(3), Some(2));
    }
}
