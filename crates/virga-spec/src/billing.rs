//! Resource and billing rules shared by the platform (which enforces them) and
//! the lab (which prices them).

/// Lambda allocates one full vCPU at 1,769 MB and CPU in proportion below and above
/// (AWS Lambda developer guide, "Memory and computing power").
pub const LAMBDA_MB_PER_VCPU: f64 = 1769.0;

/// The CPU share a `function`-mode instance gets for `memory_mb`, capped by the host.
pub fn vcpu_for_memory(memory_mb: u32, host_cores: usize) -> f64 {
    (f64::from(memory_mb) / LAMBDA_MB_PER_VCPU).min(host_cores.max(1) as f64)
}

/// Lambda's billed duration: the invoke phase plus, on a cold start, the init phase,
/// rounded up to the next millisecond.
///
/// Init has been billed for custom runtimes (`provided.*`) from the start and for
/// every runtime since 2025-08-01, so one rule covers all `command` runtimes.
pub fn billed_ms(duration_ms: f64, init_ms: Option<f64>) -> u64 {
    let total = duration_ms.max(0.0) + init_ms.unwrap_or(0.0).max(0.0);
    total.ceil() as u64
}

/// Fargate's minimum billed task time, in seconds.
pub const TASK_MINIMUM_SECONDS: u64 = 60;

/// A task's billed time (`job` mode, and each `service` task over its
/// lifetime): per second, rounded up, with a one-minute minimum, in ms.
pub fn task_billed_ms(duration_ms: f64, init_ms: Option<f64>) -> u64 {
    let total = duration_ms.max(0.0) + init_ms.unwrap_or(0.0).max(0.0);
    let seconds = (total / 1000.0).ceil() as u64;
    seconds.max(TASK_MINIMUM_SECONDS) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_bill_whole_seconds_with_a_one_minute_minimum() {
        assert_eq!(task_billed_ms(0.0, None), 60_000);
        assert_eq!(task_billed_ms(5_000.0, Some(900.0)), 60_000);
        assert_eq!(task_billed_ms(60_000.5, None), 61_000);
        assert_eq!(task_billed_ms(90_000.0, Some(1_000.0)), 91_000);
    }

    #[test]
    fn vcpu_follows_lambda_ratio_and_host_cap() {
        assert!((vcpu_for_memory(1769, 8) - 1.0).abs() < 1e-9);
        assert!((vcpu_for_memory(128, 8) - 128.0 / 1769.0).abs() < 1e-9);
        assert_eq!(vcpu_for_memory(10240, 2), 2.0);
        assert_eq!(vcpu_for_memory(10240, 0), 1.0);
    }

    #[test]
    fn billed_rounds_up_to_the_millisecond_and_adds_init() {
        assert_eq!(billed_ms(0.2, None), 1);
        assert_eq!(billed_ms(12.0, None), 12);
        assert_eq!(billed_ms(12.01, None), 13);
        assert_eq!(billed_ms(1.5, Some(40.2)), 42);
        assert_eq!(billed_ms(-1.0, None), 0);
    }
}
