//! A monotone event queue, a radix heap: the shared (greedy-dual) loop's
//! busy functions by their earliest completion.
//!
//! A discrete-event simulation never schedules into the past, so its queue
//! is *monotone*: every key pushed is at least the last one popped. A radix
//! heap exploits that: an entry sits in the bucket of the highest bit in
//! which its key differs from the last key popped, and moves only towards
//! bucket 0 as time advances, a few times in its life, where a binary heap
//! sifts through every level on each push and pop.

/// A monotone min-queue of `(time in ns, payload)`.
#[derive(Debug)]
pub struct RadixHeap {
    buckets: Vec<Vec<(u64, u64)>>,
    /// Bit `i` set when bucket `i` (1..=64) holds entries; bucket 0 is
    /// checked directly.
    filled: u128,
    last: u64,
    len: usize,
}

impl Default for RadixHeap {
    fn default() -> Self {
        RadixHeap {
            buckets: (0..65).map(|_| Vec::new()).collect(),
            filled: 0,
            last: 0,
            len: 0,
        }
    }
}

fn bucket(key: u64, last: u64) -> usize {
    (64 - (key ^ last).leading_zeros()) as usize
}

impl RadixHeap {
    pub fn new() -> Self {
        RadixHeap::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The smallest key, without taking it.
    pub fn min_key(&self) -> Option<u64> {
        if !self.buckets[0].is_empty() {
            return Some(self.last);
        }
        let i = (self.filled & !1).trailing_zeros() as usize;
        self.buckets.get(i)?.iter().map(|e| e.0).min()
    }

    /// Adds an entry; `key` must not be before the last key popped.
    pub fn push(&mut self, key: u64, payload: u64) {
        debug_assert!(key >= self.last, "a monotone queue takes no past keys");
        let key = key.max(self.last);
        let b = bucket(key, self.last);
        self.buckets[b].push((key, payload));
        self.filled |= 1 << b;
        self.len += 1;
    }

    /// Takes an entry of the smallest key (ties in no particular order).
    pub fn pop(&mut self) -> Option<(u64, u64)> {
        if self.len == 0 {
            return None;
        }
        if self.buckets[0].is_empty() {
            let i = (self.filled & !1).trailing_zeros() as usize;
            let mut moving = std::mem::take(&mut self.buckets[i]);
            self.filled &= !(1 << i);
            let min = moving.iter().map(|e| e.0).min()?;
            self.last = min;
            for e in &moving {
                let b = bucket(e.0, min);
                self.buckets[b].push(*e);
                self.filled |= 1 << b;
            }
            // Keep the emptied bucket's capacity for its next fill.
            moving.clear();
            self.buckets[i] = moving;
        }
        self.len -= 1;
        let e = self.buckets[0].pop();
        if self.buckets[0].is_empty() {
            self.filled &= !1;
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    #[test]
    fn pops_in_key_order_like_a_binary_heap() {
        let mut r = Rng::new(3);
        let mut radix = RadixHeap::new();
        let mut binary = BinaryHeap::new();
        let mut now = 0u64;
        for step in 0..20_000u64 {
            // Pushes in the future of the last pop, at every scale.
            for _ in 0..(r.next_u64() % 3) {
                let key = now.saturating_add(r.next_u64() >> (r.next_u64() % 64));
                radix.push(key, step);
                binary.push(Reverse(key));
            }
            assert_eq!(radix.min_key(), binary.peek().map(|e| e.0));
            if r.uniform() < 0.5 {
                let a = radix.pop().map(|e| e.0);
                let b = binary.pop().map(|e| e.0);
                assert_eq!(a, b);
                if let Some(k) = a {
                    now = k;
                }
            }
            assert_eq!(radix.len(), binary.len());
        }
        while let Some(Reverse(k)) = binary.pop() {
            assert_eq!(radix.pop().map(|e| e.0), Some(k));
        }
        assert!(radix.is_empty());
    }
}
