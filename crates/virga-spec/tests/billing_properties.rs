//! Property tests of billing and pricing: more work never costs less, the
//! rounding rules hold for any duration, and a bill moves smoothly across
//! the Lambda price tiers (no jump where one tier ends and the next begins).

use proptest::prelude::*;
use virga_spec::billing::{billed_ms, task_billed_ms, TASK_MINIMUM_SECONDS};
use virga_spec::pricing::{estimate, Profile, Workload};

fn workload(memory_mb: u32, duration_ms: f64, requests: u64) -> Workload {
    Workload {
        memory_mb,
        duration_ms,
        requests,
        init_ms: None,
        cold_ratio: 0.0,
        cpu: None,
        hours: None,
        as_of: "2026-11-01".into(),
        provisioned_concurrency: 0,
        provisioned_hours: 0.0,
        ephemeral_mb: 512,
    }
}

fn total(p: &Profile, w: &Workload) -> f64 {
    estimate(p, w).total_usd
}

proptest! {
    #[test]
    fn lambda_billing_rounds_up_to_the_millisecond(d in 0.0f64..1e6, init in proptest::option::of(0.0f64..1e4), more in 0.0f64..1e4) {
        let b = billed_ms(d, init);
        let exact = d + init.unwrap_or(0.0);
        prop_assert!(b as f64 >= exact && (b as f64) < exact + 1.0);
        prop_assert!(billed_ms(d + more, init) >= b);
    }

    #[test]
    fn task_billing_is_whole_seconds_with_a_minimum(d in 0.0f64..1e7, more in 0.0f64..1e6) {
        let b = task_billed_ms(d, None);
        prop_assert_eq!(b % 1000, 0);
        prop_assert!(b >= TASK_MINIMUM_SECONDS * 1000);
        prop_assert!(b as f64 >= d);
        prop_assert!(task_billed_ms(d + more, None) >= b);
    }

    #[test]
    fn more_memory_duration_or_requests_never_cost_less(
        profile in prop::sample::select(Profile::built_in_names()),
        mem in 128u32..10_240,
        extra_mem in 0u32..2_048,
        d in 1.0f64..60_000.0,
        extra_d in 0.0f64..10_000.0,
        n in 1u64..10_000_000,
        extra_n in 0u64..1_000_000,
    ) {
        let p = Profile::built_in(profile).unwrap();
        let base = total(&p, &workload(mem, d, n));
        prop_assert!(base >= 0.0 && base.is_finite());
        let tol = 1e-9 * base.max(1.0);
        prop_assert!(total(&p, &workload((mem + extra_mem).min(10_240), d, n)) + tol >= base);
        prop_assert!(total(&p, &workload(mem, d + extra_d, n)) + tol >= base);
        prop_assert!(total(&p, &workload(mem, d, n + extra_n)) + tol >= base);
    }

    /// Just below and just above each tier's end, the bills differ by no
    /// more than the usage between them priced at the dearest tier.
    #[test]
    fn lambda_bills_are_continuous_across_tiers(
        profile in prop::sample::select(vec!["lambda-x86", "lambda-arm64"]),
        tier in 0usize..4,
        step in 1.0f64..1000.0,
    ) {
        let p = Profile::built_in(profile).unwrap();
        let rates = p.lambda.clone().unwrap();
        let Some(end) = rates.tiers.get(tier).and_then(|t| t.up_to_gb_seconds) else {
            return Ok(());
        };
        // 1 GB for 1 s per request: the usage is the request count in GB-s.
        let below = workload(1024, 1000.0, (end - step).max(0.0) as u64);
        let above = workload(1024, 1000.0, (end + step) as u64);
        let gb_s = (above.requests - below.requests) as f64;
        let dearest = rates.tiers.iter().map(|t| t.gb_second_usd).fold(0.0, f64::max);
        let per_request = rates.requests_per_million_usd / 1e6;
        let jump = total(&p, &above) - total(&p, &below);
        prop_assert!(jump >= 0.0);
        prop_assert!(jump <= gb_s * (dearest + per_request) * (1.0 + 1e-9) + 1e-9, "jump {jump} over {gb_s} GB-s");
    }
}
