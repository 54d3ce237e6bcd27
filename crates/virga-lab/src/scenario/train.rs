//! `train`: training time per function's model, as `001` measures it
//! beside inference: a timed `virga models train` of the model's algorithm
//! on its dataset's first `rows` rows, `repetitions` times, on this host
//! (the model runtime serves models; it does not train them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{bar, columns, f1, f2, opt};
use crate::load::Sample;
use crate::run::{Lab, ScenarioResult};
use crate::LabError;

/// How many training runs per function, on how many rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Train {
    /// The dataset's first `rows` rows (fashion-mnist: training images);
    /// none: the whole dataset.
    #[serde(default)]
    pub rows: Option<u32>,
    #[serde(default = "default_repetitions")]
    pub repetitions: u32,
    /// The memory a run is priced at; none: the function's.
    #[serde(default)]
    pub memory_mb: Option<u32>,
}

fn default_repetitions() -> u32 {
    3
}

/// What `virga models train --json` prints.
#[derive(Debug, Deserialize)]
struct Trained {
    rows: usize,
    n_features: usize,
    train_ms: f64,
    model_bytes: u64,
    #[serde(default)]
    metrics: BTreeMap<String, f64>,
}

/// The fields of a `.model` file that say how it was trained.
#[derive(Debug, Deserialize)]
struct ModelHeader {
    algorithm: String,
    dataset: String,
}

impl Train {
    pub(super) fn quick(&mut self) {
        super::cap(&mut self.repetitions, 1);
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if self.repetitions == 0 {
            return Err("`repetitions` must be > 0".into());
        }
        if self.rows == Some(0) {
            return Err("`rows` must be > 0".into());
        }
        Ok(())
    }

    pub(super) async fn run(
        &self,
        lab: &mut Lab<'_>,
        r: &mut ScenarioResult,
        functions: &[String],
    ) -> Result<(), LabError> {
        r.columns = columns(&[
            "function",
            "algorithm",
            "dataset",
            "features",
            "rows",
            "runs",
            "train mean ms",
            "train min ms",
            "accuracy",
            "model MB",
        ]);
        let lambda: Vec<&virga_spec::pricing::Profile> = lab
            .profiles()
            .iter()
            .filter(|p| p.lambda.is_some())
            .collect();
        r.columns
            .extend(lambda.iter().map(|p| format!("USD/run {}", p.name)));
        let exe = std::env::current_exe()
            .map_err(|e| LabError::Io("the current executable".into(), e))?;
        let pb = bar(
            functions.len() as u64 * u64::from(self.repetitions),
            "training".into(),
        );
        for f in functions {
            let (model, memory_mb) = match model_of(lab, f) {
                Ok(m) => m,
                Err(why) => {
                    r.notes.push(format!("{f}: not trained: {why}"));
                    continue;
                }
            };
            let header: ModelHeader = match std::fs::File::open(&model)
                .map_err(|e| e.to_string())
                .and_then(|file| {
                    serde_json::from_reader(std::io::BufReader::new(file))
                        .map_err(|e| e.to_string())
                }) {
                Ok(h) => h,
                Err(e) => {
                    r.notes.push(format!(
                        "{f}: not trained: cannot read {}: {e}",
                        model.display()
                    ));
                    continue;
                }
            };
            let tmp =
                std::env::temp_dir().join(format!("virga-train-{}-{f}.model", std::process::id()));
            let mut runs: Vec<Trained> = Vec::new();
            let t0 = std::time::Instant::now();
            for _ in 0..self.repetitions {
                if lab.stop.stopped() {
                    break;
                }
                match train_once(&exe, &header, self.rows, &tmp).await {
                    Ok(t) => runs.push(t),
                    Err(e) => {
                        r.notes.push(format!("{f}: training failed: {e}"));
                        break;
                    }
                }
                pb.inc(1);
            }
            let _ = std::fs::remove_file(&tmp);
            let Some(last) = runs.last() else { continue };
            let times: Vec<f64> = runs.iter().map(|t| t.train_ms).collect();
            let mean = times.iter().sum::<f64>() / times.len() as f64;
            let min = times.iter().copied().fold(f64::INFINITY, f64::min);
            let mut row = vec![
                f.clone(),
                header.algorithm.clone(),
                header.dataset.clone(),
                last.n_features.to_string(),
                last.rows.to_string(),
                runs.len().to_string(),
                f1(mean),
                f1(min),
                opt(last.metrics.get("accuracy").copied(), |a| format!("{a:.3}")),
                f2(last.model_bytes as f64 / 1e6),
            ];
            let gb_s = f64::from(self.memory_mb.unwrap_or(memory_mb)) / 1024.0 * mean / 1000.0;
            row.extend(lambda.iter().map(|p| {
                virga_spec::pricing::price_lambda_usage(p, 1, gb_s)
                    .map_or("-".into(), |b| format!("{:.8}", b.total_usd))
            }));
            r.rows.push(row);
            let samples = times
                .iter()
                .map(|&ms| Sample {
                    t_ms: 0.0,
                    client_ms: ms,
                    service_ms: ms,
                    status: 200,
                    error: None,
                    request_id: None,
                    users: 1,
                })
                .collect();
            let config = crate::run::cfg(&[
                ("function", json!(f)),
                ("phase", json!("train")),
                ("features", json!(last.n_features)),
                ("rows", json!(last.rows)),
            ]);
            let g = lab
                .group(
                    format!("{f} training"),
                    f,
                    config,
                    samples,
                    t0.elapsed().as_secs_f64(),
                )
                .await?;
            r.groups.push(g);
        }
        pb.finish_and_clear();
        r.notes.push(format!(
            "a timed `virga models train` of each function's algorithm on its dataset{} on this host's {} cores, outside the function's limits; train = fitting only (not loading the data or saving the model); USD/run prices one run's fitting time at {}",
            self.rows.map(|n| format!("'s first {n} rows")).unwrap_or_default(),
            crate::run::Host::here().cores,
            self.memory_mb.map_or("the function's memory".to_string(), |m| format!("{m} MB"))
        ));
        Ok(())
    }
}

/// The model file a function's manifest names, and its memory.
fn model_of(lab: &Lab<'_>, f: &str) -> Result<(PathBuf, u32), String> {
    let spec = lab
        .preset
        .function(f)
        .ok_or_else(|| format!("unknown function {f}"))?;
    let path = lab.preset.dir.join(&spec.manifest);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let model = table
        .get("model")
        .and_then(|m| m.get("path"))
        .and_then(toml::Value::as_str)
        .ok_or_else(|| format!("{} has no [model] path", path.display()))?;
    let memory = spec
        .set
        .get("memory_mb")
        .or_else(|| table.get("memory_mb"))
        .and_then(toml::Value::as_integer)
        .unwrap_or(128);
    let dir = path.parent().unwrap_or(Path::new("."));
    let file = dir.join(model);
    if !file.is_file() {
        return Err(format!(
            "{} is missing (the embedded platform trains it on first use)",
            file.display()
        ));
    }
    Ok((file, u32::try_from(memory).unwrap_or(128)))
}

/// One `virga models train --json` run.
async fn train_once(
    exe: &Path,
    header: &ModelHeader,
    rows: Option<u32>,
    out: &Path,
) -> Result<Trained, String> {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(["models", "train", "--json", "--algorithm"])
        .arg(&header.algorithm)
        .arg("--dataset")
        .arg(&header.dataset)
        .arg("--out")
        .arg(out)
        .kill_on_drop(true);
    if let Some(n) = rows {
        cmd.arg("--rows").arg(n.to_string());
    }
    let output = cmd
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(stderr
            .trim()
            .lines()
            .last()
            .unwrap_or("no output")
            .to_string());
    }
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| format!("unexpected output {line:?}: {e}"))
}
