//! `virga bench PRESET`: runs an experiment preset with the lab, against an
//! embedded platform (default) or any Lambda-compatible `--endpoint`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use virga_lab::load::Stop;
use virga_lab::preset::Preset;
use virga_lab::run::{self, RunOptions};

pub struct BenchArgs {
    pub preset: PathBuf,
    pub endpoint: Option<String>,
    pub out: PathBuf,
    pub quick: bool,
    /// Signs requests to `endpoint` when set.
    pub signer: Option<virga_sigv4::Signer>,
    /// A client link to emulate (overrides the preset's).
    pub link: Option<virga_lab::load::Link>,
}

pub async fn run(args: BenchArgs) -> Result<()> {
    // Everything is checked before anything runs.
    let mut preset = Preset::load(&args.preset)?;
    if args.quick {
        preset.quick();
    }
    let stop = Stop::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nstopping: finishing requests in flight, then writing what was measured (Ctrl-C again to abort)");
                stop.stop();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
    }
    let (platform, _data, endpoint, limits) = match &args.endpoint {
        Some(e) => (None, None, e.trim_end_matches('/').to_string(), None),
        None => {
            ensure_models(&preset)?;
            let data = tempfile::tempdir().context("cannot create a temporary data dir")?;
            let mut config = virga_platform::PlatformConfig::new(
                "127.0.0.1:0".parse().expect("literal address"),
                data.path().to_path_buf(),
            );
            config.builtin_runtime = Some(crate::serve::builtin_runtime());
            config.jailer = Some(crate::serve::jailer());
            // The lab stands in for a cloud's capacity: each configuration
            // gets the instances its limits ask for, whatever their sum.
            config.max_memory_mb = Some(u64::MAX);
            let platform = virga_platform::Platform::start(config).await?;
            let endpoint = format!("http://{}", platform.addr());
            let limits = platform.limits_enforced();
            (Some(platform), Some(data), endpoint, Some(limits))
        }
    };
    println!(
        "virga bench {}: {} scenario(s) against {endpoint}{}{}",
        preset.name,
        preset.scenarios.len(),
        if platform.is_some() {
            " (embedded platform)"
        } else {
            ""
        },
        if args.quick { ", --quick" } else { "" },
    );
    let link = match args.link {
        Some(l) => Some(l),
        None => preset.link().map_err(anyhow::Error::msg)?,
    };
    if let Some(l) = link {
        println!("client link: {}", l.label());
    }
    let opts = RunOptions {
        endpoint,
        embedded: platform.is_some(),
        quick: args.quick,
        limits_enforced: limits,
        verbose: true,
        signer: args.signer.clone(),
        link: args.link,
    };
    let result = run::run(&preset, &opts, stop).await;
    if let Some(p) = platform {
        p.shutdown().await;
    }
    let result = result?;
    println!("\nhost: {}", result.host.line());
    let dir = virga_lab::report::run_dir(&args.out, &result);
    virga_lab::report::write_all(&dir, &result)?;
    println!(
        "results: {}/ (report.html, results.json, invocations.csv.gz, summary.md)",
        dir.display()
    );
    if result.interrupted {
        bail!("interrupted: partial results written to {}", dir.display());
    }
    Ok(())
}

/// Makes sure every model the preset's functions load exists: classical
/// models named `<dataset>-<algorithm>[-<rows>].model` are trained (on the
/// dataset's first `rows` rows when given), ONNX models are pulled (`virga
/// models pull --only NAME`). For an `optional` function a model that
/// cannot be made is a note: the function is then skipped, with the
/// platform's reason.
fn ensure_models(preset: &Preset) -> Result<()> {
    for f in &preset.functions {
        match ensure_model(preset, f) {
            Err(e) if f.optional => println!("note: {}: {e:#}", f.name),
            other => other?,
        }
    }
    Ok(())
}

/// `stem` as `(dataset, algorithm, rows)`: `fashion-mnist-svm-512` ->
/// `("fashion-mnist", "svm", Some(512))`.
fn classical_stem(stem: &str) -> Option<(&str, &'static str, Option<usize>)> {
    let (rest, rows) = match stem.rsplit_once('-') {
        Some((rest, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            (rest, Some(n.parse().ok()?))
        }
        _ => (stem, None),
    };
    let algorithm = virga_engine::classical::Algorithm::NAMES
        .iter()
        .find(|a| rest.ends_with(&format!("-{a}")))?;
    Some((&rest[..rest.len() - algorithm.len() - 1], algorithm, rows))
}

fn ensure_model(preset: &Preset, f: &virga_lab::preset::FunctionSpec) -> Result<()> {
    let manifest_path = preset.dir.join(&f.manifest);
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let m = virga_spec::Manifest::parse(&text, &manifest_path.display().to_string())?;
    let Some(model) = &m.model else {
        return Ok(());
    };
    let base = manifest_path.parent().unwrap_or(Path::new("."));
    let path = base.join(&model.path);
    if path.exists() {
        return Ok(());
    }
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    match path.extension().and_then(|e| e.to_str()) {
        Some("model") => {
            let Some((dataset, algorithm, rows)) = classical_stem(&stem) else {
                bail!(
                    "{} needs {}, which is missing: train it with `virga models train --out {}`",
                    f.name,
                    path.display(),
                    path.display()
                );
            };
            println!(
                "training {} ({algorithm} on {dataset}{}) for {}",
                path.display(),
                rows.map(|n| format!(", {n} rows")).unwrap_or_default(),
                f.name
            );
            crate::models::train_model(algorithm, dataset, rows, &path)?;
        }
        _ => {
            let out = path.parent().unwrap_or(Path::new("models"));
            println!("pulling {stem} into {} for {}", out.display(), f.name);
            crate::models::pull_models(out, &stem, "").with_context(|| {
                format!(
                    "{} needs {}: `virga models pull --only {stem}` failed; fix that first (it needs python3 with pip)",
                    f.name,
                    path.display()
                )
            })?;
            if !path.exists() {
                bail!(
                    "{} needs {}, which `virga models pull` does not provide",
                    f.name,
                    path.display()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::classical_stem;

    #[test]
    fn model_file_names_say_what_to_train() {
        assert_eq!(classical_stem("iris-svm"), Some(("iris", "svm", None)));
        assert_eq!(
            classical_stem("fashion-mnist-svm-512"),
            Some(("fashion-mnist", "svm", Some(512)))
        );
        assert_eq!(
            classical_stem("winequality-random-forest"),
            Some(("winequality", "random-forest", None))
        );
        assert_eq!(classical_stem("resnet50-synthetic"), None);
        assert_eq!(classical_stem("iris-512"), None);
    }
}
