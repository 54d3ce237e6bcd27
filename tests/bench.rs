//! `virga bench`: every preset runs with `--quick` against the embedded
//! platform and leaves its outputs; bad presets fail before anything runs;
//! the HTML report renders its charts in a headless browser.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Presets share models (trained or pulled on first use) and the host has
/// two cores: one `virga bench` runs at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn bench(args: &[&str], out: &Path) -> std::process::Output {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    Command::new(common::virga_bin())
        .current_dir(repo())
        .arg("bench")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("virga runs")
}

/// The single run directory under `out`.
fn run_dir(out: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(out)
        .expect("out exists")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

fn presets() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("experiments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        // Hidden files are the bad presets another test writes.
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    v.sort();
    v
}

/// One test per preset (see `every_preset_has_a_test`).
macro_rules! preset_tests {
    ($($test:ident => $preset:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                runs_quick($preset);
            }
        )*
        const TESTED: &[&str] = &[$($preset),*];
    };
}

preset_tests! {
    quickstart_runs_quick => "quickstart",
    bansal_2024_lambda_vs_fargate_runs_quick => "bansal-2024-lambda-vs-fargate",
    cold_start_strategies_runs_quick => "cold-start-strategies",
    daitan_tf_lambda_runs_quick => "daitan-tf-lambda",
    feyzkhanov_2021_graviton_runs_quick => "feyzkhanov-2021-graviton",
    modes_and_batching_runs_quick => "modes-and-batching",
    setlur_arun_frameworks_runs_quick => "setlur-arun-frameworks",
    timmer_2024_lambda_configs_runs_quick => "timmer-2024-lambda-configs",
}

#[test]
fn every_preset_has_a_test() {
    let mut names: Vec<String> = presets()
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut tested: Vec<&str> = TESTED.to_vec();
    tested.sort();
    assert_eq!(names, tested, "add the new preset to preset_tests!");
}

/// `experiments/<name>.toml` runs with `--quick` against the embedded
/// platform, measures something in every scenario without errors and leaves
/// every output.
fn runs_quick(name: &str) {
    let preset = repo().join("experiments").join(format!("{name}.toml"));
    let tmp = tempfile::tempdir().unwrap();
    let rel = preset.strip_prefix(repo()).unwrap_or(&preset).to_owned();
    let out = bench(&[rel.to_str().unwrap(), "--quick"], tmp.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{}: failed\nstdout:\n{stdout}\nstderr:\n{stderr}",
        preset.display()
    );
    let dir = run_dir(tmp.path());
    for f in [
        "results.json",
        "invocations.csv.gz",
        "summary.md",
        "report.html",
    ] {
        assert!(dir.join(f).is_file(), "{}: no {f}", preset.display());
    }
    let results: Value =
        serde_json::from_slice(&std::fs::read(dir.join("results.json")).unwrap()).unwrap();
    let text = std::fs::read_to_string(&preset).unwrap();
    let declared = text.matches("[[scenarios]]").count();
    let scenarios = results["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), declared, "{}", preset.display());
    assert_eq!(results["quick"], true);
    assert_eq!(results["interrupted"], false);
    assert!(results["host"]["cores"].as_u64().unwrap() >= 1);
    // Every scenario measured something, and requests succeeded.
    for s in scenarios {
        let groups = s["groups"].as_array().unwrap();
        assert!(
            !groups.is_empty(),
            "{}: {} has no groups",
            preset.display(),
            s["kind"]
        );
        let (mut n, mut errors) = (0, 0);
        for g in groups {
            n += g["stats"]["requests"].as_u64().unwrap();
            errors += g["stats"]["errors"].as_u64().unwrap();
        }
        assert!(n > 0, "{}: {} sent nothing", preset.display(), s["kind"]);
        assert_eq!(
            errors,
            0,
            "{}: {} had errors: {:?}",
            preset.display(),
            s["kind"],
            s["notes"]
        );
        assert!(!s["rows"].as_array().unwrap().is_empty());
    }
    // results.json keeps statistics, not the requests: those are in the
    // compressed CSV, once, one row each, joined with the server's record.
    let json = std::fs::read_to_string(dir.join("results.json")).unwrap();
    assert!(!json.contains("\"samples\""), "{}", preset.display());
    let mut csv = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(
            std::fs::File::open(dir.join("invocations.csv.gz")).unwrap(),
        ),
        &mut csv,
    )
    .unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    let requests: u64 = scenarios
        .iter()
        .flat_map(|s| s["groups"].as_array().unwrap())
        .map(|g| g["stats"]["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(rows.len() as u64, requests, "{}", preset.display());
    // Every invocation is joined with its record (training runs have none).
    assert!(rows
        .iter()
        .filter(|r| !r.contains(":train,"))
        .all(|r| r.contains(",true,") || r.contains(",false,")));
    assert!(csv.starts_with("scenario,") && csv.lines().next().unwrap().contains(",instance_id,"));
    // The terminal shows the tables.
    assert!(stdout.contains("== scenario 1/"), "{stdout}");
    assert!(stdout.contains("host: "), "{stdout}");
    match name {
        // The trace's uploads went through the bucket trigger, each answered
        // by a bucket-triggered invocation of the model function.
        "setlur-arun-frameworks" => {
            let trace = scenarios.iter().find(|s| s["kind"] == "trace").unwrap();
            for g in trace["groups"].as_array().unwrap() {
                assert_eq!(g["config"]["via"], "bucket", "{g}");
                assert!(g["function"].as_str().unwrap().ends_with("-upload"), "{g}");
                // Upload-to-answer holds the model's load and inference.
                let work = g["stats"]["load_inference"]["mean"].as_f64().unwrap();
                let answer = g["stats"]["client"]["mean"].as_f64().unwrap();
                assert!(work > 0.0 && answer >= work, "{answer} < {work}: {g}");
            }
            assert!(csv.lines().filter(|l| l.starts_with("2:trace,")).count() > 0);
            let columns = trace["columns"].to_string();
            assert!(columns.contains("upload-to-answer") && columns.contains("load + inference"));
        }
        // Forked functions have a template, measured beside their instances;
        // spawned ones have none.
        "cold-start-strategies" => {
            let memory = scenarios.iter().find(|s| s["kind"] == "memory").unwrap();
            let rows = memory["rows"].as_array().unwrap();
            assert_eq!(rows.len(), 9 * 2, "{memory}");
            for r in rows {
                let forked = r[0].as_str().unwrap().contains("-fork");
                assert_eq!(r[3] != "-", forked, "{r}");
                assert!(r[2].as_str().unwrap().parse::<u32>().unwrap() >= 1, "{r}");
                assert!(r[5].as_str().unwrap().parse::<f64>().unwrap() > 0.0, "{r}");
            }
        }
        // Training time per feature count, from timed `virga models train`.
        "feyzkhanov-2021-graviton" => {
            let train = scenarios.iter().find(|s| s["kind"] == "train").unwrap();
            let rows = train["rows"].as_array().unwrap();
            assert!(rows.len() >= 2, "{train}");
            assert!(rows.iter().any(|r| r[3] == "4") && rows.iter().any(|r| r[3] == "11"));
        }
        _ => {}
    }
}

#[test]
fn bad_presets_fail_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "name = \"x\"\n[[functions]]\nname = \"f\"\nmanifest = \"../functions/noop.toml\"\npayload = \"p\"\n[payloads.p]\nkind = \"json\"\nvalue = \"{}\"\n[[scenarios]]\nkind = \"warp-speed\"\nfunctions = [\"f\"]\n",
            "warp-speed",
        ),
        (
            "name = \"x\"\n[[functions]]\nname = \"f\"\nmanifest = \"../functions/noop.toml\"\n[payloads.p]\nkind = \"json\"\nvalue = \"{}\"\n[[scenarios]]\nkind = \"throughput\"\nfunctions = [\"ghost\"]\npayload = \"p\"\nusers = [1]\nduration_s = 1\n",
            "unknown function \"ghost\"",
        ),
        (
            "name = \"x\"\n[[functions]]\nname = \"f\"\nmanifest = \"../functions/noop.toml\"\n[payloads.p]\nkind = \"json\"\nvalue = \"{}\"\n[[scenarios]]\nkind = \"sweep\"\nfunctions = [\"f\"]\npayload = \"p\"\nrequests = 2\nmemory_mb = [99999]\n",
            "bad grid",
        ),
        (
            "name = \"x\"\n[[functions]]\nname = \"f\"\nmanifest = \"../functions/missing.toml\"\n[payloads.p]\nkind = \"json\"\nvalue = \"{}\"\n[[scenarios]]\nkind = \"throughput\"\nfunctions = [\"f\"]\npayload = \"p\"\nusers = [1]\nduration_s = 1\n",
            "does not exist",
        ),
    ];
    let dir = repo().join("experiments");
    for (i, (text, want)) in cases.iter().enumerate() {
        // Written beside the presets so relative manifest paths resolve the same way.
        let path = dir.join(format!(".bad-preset-{}-{i}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let out_dir = tmp.path().join(format!("out{i}"));
        let out = bench(&[path.to_str().unwrap()], &out_dir);
        let _ = std::fs::remove_file(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} should fail");
        assert!(stderr.contains(want), "case {i}: {stderr}");
        assert!(
            !out_dir.exists(),
            "case {i}: results written for a bad preset"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("== scenario"),
            "case {i} ran scenarios"
        );
    }
}

/// The report is one self-contained page: rendered by headless Chromium, its
/// charts have a size and no console error is logged. Skipped without
/// Chromium unless `VIRGA_REQUIRE_CHROMIUM=1` (the test script installs it).
#[test]
fn the_report_renders_in_a_browser() {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some(browser) = browser else {
        assert_ne!(
            std::env::var("VIRGA_REQUIRE_CHROMIUM").as_deref(),
            Ok("1"),
            "chromium is required but missing: apt-get install chromium"
        );
        eprintln!("note: skipping the report rendering test: no chromium");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = bench(&["experiments/quickstart.toml", "--quick"], tmp.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = run_dir(tmp.path()).join("report.html");
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        !html.contains("http://") || !html.contains("<script src"),
        "no network"
    );
    assert!(
        !html.contains("<link "),
        "self-contained: no external stylesheets"
    );
    let profile = tempfile::tempdir().unwrap();
    let run = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", report.display()))
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&run.stdout);
    let log = String::from_utf8_lossy(&run.stderr);
    let attr = |name: &str| -> usize {
        let key = format!("{name}=\"");
        let i = dom
            .find(&key)
            .unwrap_or_else(|| panic!("no {name} in the rendered DOM"));
        let rest = &dom[i + key.len()..];
        rest[..rest.find('"').unwrap()].parse().unwrap()
    };
    let charts = attr("data-charts");
    assert!(charts >= 5, "only {charts} charts");
    assert_eq!(
        attr("data-charts-rendered"),
        charts,
        "some charts have no size"
    );
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
}

/// Ctrl-C stops a run cleanly: what was measured is written, marked
/// interrupted, and the exit status says so.
#[test]
fn ctrl_c_keeps_what_was_measured() {
    use std::io::{BufRead, BufReader};
    let preset = repo()
        .join("experiments")
        .join(format!(".interrupt-{}.toml", std::process::id()));
    std::fs::write(
        &preset,
        "name = \"interrupt\"\n\
         [[functions]]\nname = \"noop\"\nmanifest = \"../functions/echo.toml\"\npayload = \"p\"\n\
         [payloads.p]\nkind = \"json\"\nvalue = '{\"n\": 1}'\n\
         [[scenarios]]\nkind = \"throughput\"\nfunctions = [\"noop\"]\nusers = [2]\nduration_s = 60\n\
         [[scenarios]]\nkind = \"warm-latency\"\nfunctions = [\"noop\"]\npayloads = [\"p\"]\nrequests = 5\n",
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(common::virga_bin())
        .current_dir(repo())
        .arg("bench")
        .arg(&preset)
        .arg("--out")
        .arg(tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("== scenario 1/") {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&preset);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an interrupted run exits non-zero");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        !rest.iter().any(|l| l.contains("== scenario 2/")),
        "{rest:?}"
    );
    let results: Value =
        serde_json::from_slice(&std::fs::read(run_dir(tmp.path()).join("results.json")).unwrap())
            .unwrap();
    assert_eq!(results["interrupted"], true);
    let requests = results["scenarios"][0]["groups"][0]["stats"]["requests"]
        .as_u64()
        .unwrap();
    assert!(requests > 0, "nothing kept");
}

/// `--endpoint`: the lab measures a running platform (here a `virga serve`),
/// deploying through its API and reading its records back.
#[tokio::test]
async fn bench_measures_a_given_endpoint() {
    let server = common::Server::start(&[]).await;
    let preset = repo()
        .join("experiments")
        .join(format!(".endpoint-{}.toml", std::process::id()));
    std::fs::write(
        &preset,
        "name = \"endpoint\"\n\
         [[functions]]\nname = \"echo-remote\"\nmanifest = \"../functions/echo.toml\"\npayload = \"p\"\n\
         [payloads.p]\nkind = \"json\"\nvalue = '{\"n\": 1}'\n\
         [[scenarios]]\nkind = \"open-loop\"\nfunctions = [\"echo-remote\"]\nrate = 20\nduration_s = 1\nconnections = 2\n\
         [[scenarios]]\nkind = \"cold-start\"\nfunctions = [\"echo-remote\"]\nrepetitions = 2\n",
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(common::virga_bin())
        .current_dir(repo())
        .args(["--endpoint", &server.url(""), "bench"])
        .arg(&preset)
        .arg("--out")
        .arg(tmp.path())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&preset);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("embedded"), "{stdout}");
    let results: Value =
        serde_json::from_slice(&std::fs::read(run_dir(tmp.path()).join("results.json")).unwrap())
            .unwrap();
    assert_eq!(results["embedded"], false);
    assert_eq!(results["managed"], true);
    // Open loop: 20/s for 1 s.
    let open = &results["scenarios"][0]["groups"][0];
    assert_eq!(open["stats"]["requests"], 20);
    // Cold starts were forced, and the server's records say so.
    let cold = &results["scenarios"][1]["groups"][0];
    assert_eq!(cold["stats"]["cold"], 2, "{cold}");
    // The function exists on the server now, and its records are there.
    assert_eq!(server.records(Some("echo-remote")).await.len(), 22);
}
