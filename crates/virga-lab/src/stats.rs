//! Latency statistics: percentiles from an HdrHistogram (microsecond
//! resolution, 3 significant digits), mean, standard deviation and a 95%
//! confidence interval of the mean computed exactly from the samples.

use hdrhistogram::Histogram;
use serde::Serialize;

/// What a set of latencies (milliseconds) looks like.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    /// Sample standard deviation (n - 1).
    pub stddev: f64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    /// Half-width of the 95% confidence interval of the mean (Student's t),
    /// when there are at least two samples.
    pub ci95: Option<f64>,
}

/// Two-sided 95% critical values of Student's t for 1..=30 degrees of freedom.
const T95: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

fn t95(df: usize) -> f64 {
    match df {
        0 => f64::NAN,
        1..=30 => T95[df - 1],
        31..=60 => 2.000,
        61..=120 => 1.980,
        _ => 1.960,
    }
}

/// Summarises latencies in milliseconds; `None` for no samples.
pub fn summarize(ms: &[f64]) -> Option<Summary> {
    if ms.is_empty() {
        return None;
    }
    // 1 us .. 1 h at 3 significant digits: 0.1% relative error.
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
    for &v in ms {
        let us = (v * 1000.0).round().clamp(1.0, 3_600_000_000.0) as u64;
        h.saturating_record(us);
    }
    let n = ms.len();
    let mean = ms.iter().sum::<f64>() / n as f64;
    let var = if n > 1 {
        ms.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    let stddev = var.sqrt();
    let q = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Some(Summary {
        count: n,
        mean,
        stddev,
        min: ms.iter().cloned().fold(f64::INFINITY, f64::min),
        p50: q(0.50),
        p90: q(0.90),
        p99: q(0.99),
        p999: q(0.999),
        max: ms.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        ci95: (n > 1).then(|| t95(n - 1) * stddev / (n as f64).sqrt()),
    })
}

/// The empirical CDF as (latency ms, fraction <= it), at most `points` points.
pub fn cdf(ms: &[f64], points: usize) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = ms.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return Vec::new();
    }
    let step = (n / points.max(1)).max(1);
    let mut out: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (v[i], (i + 1) as f64 / n as f64))
        .collect();
    if out.last().map(|p| p.1) != Some(1.0) {
        out.push((v[n - 1], 1.0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-9)
    }

    #[test]
    fn known_uniform_input() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarize(&v).unwrap();
        assert_eq!(s.count, 100);
        assert!(close(s.mean, 50.5, 1e-12));
        // Sample standard deviation of 1..=100 is sqrt(841.666...) = 29.0115.
        assert!(close(s.stddev, 29.011_491, 1e-6), "{}", s.stddev);
        assert!(close(s.p50, 50.0, 1e-3), "{}", s.p50);
        assert!(close(s.p90, 90.0, 1e-3), "{}", s.p90);
        assert!(close(s.p99, 99.0, 1e-3), "{}", s.p99);
        assert!(close(s.max, 100.0, 1e-12) && close(s.min, 1.0, 1e-12));
        // t(99) ~ 1.98: 1.98 * 29.0115 / 10.
        assert!(close(s.ci95.unwrap(), 1.98 * 29.011_491 / 10.0, 1e-6));
    }

    #[test]
    fn small_samples_use_students_t() {
        let s = summarize(&[10.0, 12.0, 14.0]).unwrap();
        assert!(close(s.stddev, 2.0, 1e-12));
        assert!(close(s.ci95.unwrap(), 4.303 * 2.0 / 3f64.sqrt(), 1e-9));
        assert_eq!(summarize(&[5.0]).unwrap().ci95, None);
        assert_eq!(summarize(&[]), None);
    }

    #[test]
    fn percentiles_keep_sub_millisecond_resolution() {
        let v: Vec<f64> = (0..1000).map(|i| 0.250 + f64::from(i) * 1e-4).collect();
        let s = summarize(&v).unwrap();
        assert!(close(s.p50, 0.300, 2e-3), "{}", s.p50);
        assert!(s.p999 <= s.max + 1e-3);
    }

    #[test]
    fn tail_is_found() {
        let mut v = vec![1.0; 990];
        v.extend(std::iter::repeat_n(100.0, 10));
        let s = summarize(&v).unwrap();
        assert!(close(s.p50, 1.0, 1e-3));
        assert!(close(s.p99, 1.0, 1e-3));
        assert!(close(s.p999, 100.0, 1e-3), "{}", s.p999);
    }

    #[test]
    fn cdf_ends_at_one_and_is_monotonic() {
        let v: Vec<f64> = (0..1000).rev().map(f64::from).collect();
        let c = cdf(&v, 50);
        assert_eq!(c.last().unwrap(), &(999.0, 1.0));
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        assert!(c.len() <= 51);
    }
}
