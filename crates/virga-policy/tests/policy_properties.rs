//! Property tests of the pure batching and autoscaling policies: for any
//! arrivals and any load, a batch never waits past its delay nor grows past
//! its size, and the autoscaler stays within its bounds and never scales
//! down before the scale-down delay has passed.

use std::time::Duration;

use proptest::prelude::*;
use virga_policy::{AutoscaleConfig, Autoscaler, BatchPolicy};

/// A virtual clock, as a simulator runs the policies: time since the start.
type Time = Duration;

proptest! {
    #[test]
    fn a_batch_waits_at_most_its_delay_and_never_past_its_size(
        max_size in 1usize..64,
        delay_ms in 0u64..1_000,
        gaps_ms in prop::collection::vec(0u64..500, 0..50),
        len in 0usize..80,
        since_first_ms in 0u64..2_000,
    ) {
        let t0 = Time::ZERO;
        let mut policy = BatchPolicy::new(max_size, Duration::from_millis(delay_ms));
        let mut at = t0;
        for g in &gaps_ms {
            at += Duration::from_millis(*g);
            policy.observe(at);
        }
        let first = at;
        let now = first + Duration::from_millis(since_first_ms);
        match policy.wait_until(now, first, len) {
            None => {}
            Some(until) => {
                prop_assert!(len < max_size, "waits with a full batch");
                prop_assert!(until > now, "waits for a moment already past");
                prop_assert!(until <= first + Duration::from_millis(delay_ms), "waits past max_delay");
            }
        }
    }

    #[test]
    fn the_autoscaler_stays_in_bounds_and_holds_before_scaling_down(
        per_instance in 1usize..16,
        target in 0.1f64..1.0,
        min in 0usize..3,
        extra in 0usize..8,
        delay_s in 1u64..30,
        loads in prop::collection::vec(0.0f64..100.0, 1..120),
    ) {
        let max = min + extra;
        let cfg = AutoscaleConfig {
            per_instance,
            target_utilization: target,
            stable_window: Duration::from_secs(6),
            scale_down_delay: Duration::from_secs(delay_s),
            min,
            max,
        };
        let tick = cfg.tick();
        let mut scaler = Autoscaler::new(cfg);
        let mut now = Time::ZERO;
        // When the count last went up (or was first decided).
        let mut last_up: Option<Time> = None;
        let mut current = min;
        for load in &loads {
            now += tick;
            scaler.observe(now, *load);
            let want = scaler.decide(now, current);
            prop_assert!(want >= min && want <= max.max(min), "{want} outside [{min}, {max}]");
            if want > current || last_up.is_none() {
                last_up = Some(now);
            }
            if want < current {
                let since = now - last_up.unwrap();
                prop_assert!(since + tick >= Duration::from_secs(delay_s), "down {current}->{want} {since:?} after going up");
            }
            current = want;
        }
    }
}
