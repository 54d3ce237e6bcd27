//! Power tuning, locally (as AWS Lambda Power Tuning does in the cloud):
//! redeploy a function at each memory size, run warm invocations, price them,
//! and recommend a size by cost, speed, or a balance of both.

use serde::Serialize;
use virga_spec::pricing::Profile;
use virga_spec::Manifest;

use crate::api::{ApiError, Client, Invoked};
use crate::LabError;

/// What to optimise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The cheapest invocation; ties go to the faster.
    Cost,
    /// The fastest invocation (p50); ties go to the cheaper.
    Speed,
    /// Minimise `w * cost / min_cost + (1 - w) * duration / min_duration`
    /// (Power Tuning's balanced strategy with weight `w`, default 0.5).
    Balanced,
}

/// One memory size, measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TunePoint {
    pub memory_mb: u32,
    pub invocations: usize,
    pub errors: usize,
    /// What the first failed invocation answered (error type and message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    pub p50_ms: f64,
    pub mean_ms: f64,
    pub mean_billed_ms: f64,
    pub cost_per_invocation_usd: f64,
}

/// The result of a tuning run.
#[derive(Debug, Clone, Serialize)]
pub struct TuneResult {
    pub function: String,
    pub profile: String,
    pub strategy: Strategy,
    pub balanced_weight: f64,
    pub points: Vec<TunePoint>,
    /// Index into `points`.
    pub recommended: Option<usize>,
    /// The rule that chose it, in words.
    pub rule: String,
}

/// A failed invocation in one line: Lambda's `errorType: errorMessage` when
/// the body is an error document, else the status and the body's start.
fn error_summary(r: &Invoked) -> String {
    let doc: Option<serde_json::Value> = serde_json::from_slice(&r.body).ok();
    let field = |k: &str| {
        doc.as_ref()
            .and_then(|d| d.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let text = match (
        field("errorType"),
        field("errorMessage").or(field("message")),
    ) {
        (Some(t), Some(m)) => format!("{t}: {m}"),
        (None, Some(m)) => format!("status {}: {m}", r.status),
        _ => format!("status {}: {}", r.status, String::from_utf8_lossy(&r.body)),
    };
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// Picks the best point for `strategy`; points with errors are not candidates.
pub fn recommend(points: &[TunePoint], strategy: Strategy, weight: f64) -> Option<usize> {
    let ok: Vec<usize> = (0..points.len())
        .filter(|&i| points[i].errors == 0)
        .collect();
    let min_cost = ok
        .iter()
        .map(|&i| points[i].cost_per_invocation_usd)
        .fold(f64::INFINITY, f64::min);
    let min_ms = ok
        .iter()
        .map(|&i| points[i].p50_ms)
        .fold(f64::INFINITY, f64::min);
    let score = |p: &TunePoint| -> (f64, f64) {
        match strategy {
            Strategy::Cost => (p.cost_per_invocation_usd, p.p50_ms),
            Strategy::Speed => (p.p50_ms, p.cost_per_invocation_usd),
            Strategy::Balanced => {
                let c = if min_cost > 0.0 {
                    p.cost_per_invocation_usd / min_cost
                } else {
                    1.0
                };
                let d = if min_ms > 0.0 { p.p50_ms / min_ms } else { 1.0 };
                (weight * c + (1.0 - weight) * d, p.cost_per_invocation_usd)
            }
        }
    };
    ok.into_iter().min_by(|&a, &b| {
        let (sa, sb) = (score(&points[a]), score(&points[b]));
        sa.0.total_cmp(&sb.0).then(sa.1.total_cmp(&sb.1))
    })
}

pub fn rule_text(strategy: Strategy, weight: f64) -> String {
    match strategy {
        Strategy::Cost => "lowest cost per invocation (ties: lower p50)".into(),
        Strategy::Speed => "lowest p50 duration (ties: lower cost)".into(),
        Strategy::Balanced => format!(
            "lowest {weight} x cost/min_cost + {} x p50/min_p50",
            1.0 - weight
        ),
    }
}

/// How to tune.
#[derive(Debug, Clone)]
pub struct TuneConfig {
    pub function: String,
    pub memories: Vec<u32>,
    pub invocations: usize,
    pub strategy: Strategy,
    pub balanced_weight: f64,
    pub payload: Vec<u8>,
    pub profile: Profile,
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the tuning against a platform, then restores the function's manifest.
/// `progress` is told each memory size as it is measured.
pub async fn tune(
    api: &Client,
    cfg: &TuneConfig,
    mut progress: impl FnMut(&TunePoint),
) -> Result<TuneResult, LabError> {
    let Some(rates) = cfg.profile.lambda.as_ref() else {
        return Err(LabError::Config(format!(
            "tuning prices invocations per GB-second: use a lambda profile, not {}",
            cfg.profile.name
        )));
    };
    if cfg.memories.is_empty() || cfg.invocations == 0 {
        return Err(LabError::Config(
            "give at least one memory size and one invocation".into(),
        ));
    }
    let info = api.function(&cfg.function).await?;
    let (original, base_dir) = (info.manifest, info.base_dir);
    let to_toml = |m: &Manifest| {
        toml::to_string(m)
            .map_err(|e| LabError::Config(format!("cannot write the manifest back: {e}")))
    };
    let gb_second = rates.tiers[0].gb_second_usd;
    let per_request = rates.requests_per_million_usd / 1e6;

    let mut points = Vec::new();
    let result = async {
        for &memory_mb in &cfg.memories {
            let mut m = original.clone();
            m.memory_mb = memory_mb;
            m.min_instances = 0;
            api.deploy(&cfg.function, &to_toml(&m)?, &base_dir, None)
                .await?;
            // One cold start first: tuning compares warm invocations.
            match api.invoke(&cfg.function, cfg.payload.clone()).await {
                Ok(_) | Err(ApiError::Refused { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let mut ids = Vec::new();
            let mut errors = 0;
            let mut first_error = None;
            for _ in 0..cfg.invocations {
                // Refusals (throttling) count as errors, as failures do.
                let error = match api.invoke(&cfg.function, cfg.payload.clone()).await {
                    Ok(r) => {
                        ids.extend(r.request_id.clone());
                        r.function_error.is_some().then(|| error_summary(&r))
                    }
                    Err(e @ ApiError::Refused { .. }) => Some(e.to_string()),
                    Err(e) => return Err(e.into()),
                };
                if let Some(e) = error {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
            let records = api
                .records(Some(&cfg.function), None, Some(cfg.invocations + 1))
                .await?;
            let mine: Vec<_> = records
                .iter()
                .filter(|r| ids.contains(&r.request_id))
                .collect();
            let mut durations: Vec<f64> = mine.iter().map(|r| r.duration_ms).collect();
            let billed: Vec<f64> = mine
                .iter()
                .map(|r| {
                    cfg.profile.lambda_billed_ms(
                        r.duration_ms,
                        r.init_ms.or(r.restore_ms),
                        &r.received_at,
                    ) as f64
                })
                .collect();
            let n = mine.len().max(1) as f64;
            let mean_billed_ms = billed.iter().sum::<f64>() / n;
            let point = TunePoint {
                memory_mb,
                invocations: mine.len(),
                errors,
                first_error,
                mean_ms: durations.iter().sum::<f64>() / n,
                p50_ms: median(&mut durations),
                mean_billed_ms,
                cost_per_invocation_usd: mean_billed_ms / 1000.0 * f64::from(memory_mb) / 1024.0
                    * gb_second
                    + per_request,
            };
            progress(&point);
            points.push(point);
        }
        Ok::<(), LabError>(())
    }
    .await;
    // Put the function back as it was, whatever happened.
    let restored = api
        .deploy(&cfg.function, &to_toml(&original)?, &base_dir, None)
        .await;
    result?;
    restored?;
    let recommended = recommend(&points, cfg.strategy, cfg.balanced_weight);
    Ok(TuneResult {
        function: cfg.function.clone(),
        profile: cfg.profile.name.clone(),
        strategy: cfg.strategy,
        balanced_weight: cfg.balanced_weight,
        recommended,
        rule: rule_text(cfg.strategy, cfg.balanced_weight),
        points,
    })
}

/// The chart of a result: p50 duration and cost per invocation against memory.
pub fn chart(result: &TuneResult) -> String {
    let x: Vec<f64> = result
        .points
        .iter()
        .map(|p| f64::from(p.memory_mb))
        .collect();
    let d: Vec<f64> = result.points.iter().map(|p| p.p50_ms).collect();
    let c: Vec<f64> = result
        .points
        .iter()
        .map(|p| p.cost_per_invocation_usd)
        .collect();
    crate::plot::dual_axis(
        &format!(
            "{}: duration and cost by memory ({})",
            result.function, result.profile
        ),
        "memory (MB)",
        &x,
        &crate::plot::Axis {
            name: "p50 duration",
            unit: "ms",
            values: &d,
        },
        &crate::plot::Axis {
            name: "cost per invocation",
            unit: "USD",
            values: &c,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CPU-bound function: duration falls with memory until the CPU share
    /// stops growing, while price per ms grows with memory.
    fn curve(durations: &[(u32, f64)]) -> Vec<TunePoint> {
        let p = Profile::built_in("lambda-x86").unwrap();
        let rate = p.lambda.as_ref().unwrap().tiers[0].gb_second_usd;
        durations
            .iter()
            .map(|&(m, d)| TunePoint {
                memory_mb: m,
                invocations: 10,
                errors: 0,
                first_error: None,
                p50_ms: d,
                mean_ms: d,
                mean_billed_ms: d.ceil(),
                cost_per_invocation_usd: d.ceil() / 1000.0 * m as f64 / 1024.0 * rate + 2e-7,
            })
            .collect()
    }

    #[test]
    fn strategies_pick_the_expected_sizes_on_a_synthetic_curve() {
        // 1769 MB = 1 vCPU; beyond it a single-threaded function gains nothing.
        let pts = curve(&[
            (128, 1400.0),
            (512, 350.0),
            (1024, 175.0),
            (1769, 100.0),
            (3008, 100.0),
        ]);
        assert_eq!(
            pts[recommend(&pts, Strategy::Speed, 0.5).unwrap()].memory_mb,
            1769,
            "ties go to the cheaper"
        );
        // Duration x memory is flat up to 1769 MB: the per-request price decides on ms rounding;
        // 128 MB costs the same GB-s as 1769 MB, so cost picks the lowest-cost point.
        let cost = recommend(&pts, Strategy::Cost, 0.5).unwrap();
        let min_cost = pts
            .iter()
            .map(|p| p.cost_per_invocation_usd)
            .fold(f64::INFINITY, f64::min);
        assert_eq!(pts[cost].cost_per_invocation_usd, min_cost);
        assert_ne!(pts[cost].memory_mb, 3008);
        let balanced = pts[recommend(&pts, Strategy::Balanced, 0.5).unwrap()].memory_mb;
        assert_eq!(balanced, 1769);
    }

    #[test]
    fn io_bound_functions_tune_to_the_smallest_size_for_cost() {
        // Waiting on I/O: duration does not depend on memory at all.
        let pts = curve(&[(128, 200.0), (256, 200.0), (512, 200.0), (1024, 200.0)]);
        assert_eq!(
            pts[recommend(&pts, Strategy::Cost, 0.5).unwrap()].memory_mb,
            128
        );
        assert_eq!(
            pts[recommend(&pts, Strategy::Speed, 0.5).unwrap()].memory_mb,
            128
        );
        assert_eq!(
            pts[recommend(&pts, Strategy::Balanced, 0.5).unwrap()].memory_mb,
            128
        );
    }

    #[test]
    fn the_balanced_weight_moves_the_choice_between_cost_and_speed() {
        let pts = curve(&[(128, 1000.0), (512, 300.0), (2048, 100.0)]);
        let at = |w: f64| pts[recommend(&pts, Strategy::Balanced, w).unwrap()].memory_mb;
        assert_eq!(at(0.0), 2048, "weight 0 is pure speed");
        assert_eq!(
            at(1.0),
            pts[recommend(&pts, Strategy::Cost, 0.5).unwrap()].memory_mb
        );
    }

    #[test]
    fn failing_sizes_are_never_recommended() {
        let mut pts = curve(&[(128, 100.0), (256, 120.0)]);
        pts[0].errors = 1;
        assert_eq!(recommend(&pts, Strategy::Cost, 0.5), Some(1));
        pts[1].errors = 2;
        assert_eq!(recommend(&pts, Strategy::Cost, 0.5), None);
    }
}
