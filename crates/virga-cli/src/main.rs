//! `virga`: the command line of the virga platform.

mod bench;
mod cost;
mod demo;
mod functions;
mod keys;
mod models;
mod serve;
mod sim;
mod storage;
mod table;
mod worker;

/// mimalloc for the platform and the built-in runtime alike (one binary):
/// 0.90x the platform's instructions per warm invocation against glibc's
/// malloc (bench/runs/2026-12-02-x86_64-2core-mimalloc). Both processes
/// give freed memory back when idle through `mi_collect` beside glibc's
/// `malloc_trim` (for the C and C++ libraries, which keep glibc's heap).
/// Transparent huge pages are off for virga's own processes
/// (`HUGE_PAGES_OFF`), or mimalloc's up-front commits would cost each of
/// them megabytes of resident memory. `Counted` keeps the live heap's size
/// (`virga_heap_live_bytes`): what a leak would grow, which RSS does not
/// tell apart from pages the allocator keeps.
#[global_allocator]
static ALLOC: virga_platform::heap::Counted<mimalloc::MiMalloc> =
    virga_platform::heap::Counted::new(mimalloc::MiMalloc);

/// Turns transparent huge pages off (`sandbox::set_huge_pages`) before
/// anything allocates: an `.init_array` entry of priority 100 runs before
/// the constructors of default priority, mimalloc's among them, and long
/// before `main` (by then its first arena would be resident in huge pages).
#[allow(unsafe_code)]
#[used]
#[link_section = ".init_array.00100"]
static HUGE_PAGES_OFF: extern "C" fn() = {
    extern "C" fn off() {
        virga_platform::sandbox::set_huge_pages(false);
    }
    off
};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use table::Format;
use virga_lab::{ApiError, Client};

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
    /// Sign requests with this profile of ~/.aws/credentials (else
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, else AWS_PROFILE or the
    /// default profile; without any, requests go unsigned).
    #[arg(long, global = true, value_name = "NAME")]
    aws_profile: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the platform: gateway, scheduler and instances.
    Serve(serve::ServeArgs),
    /// Access keys of a data dir: create, list, revoke (offline; a running
    /// server sees the change at its next request).
    Keys(keys::KeysArgs),
    /// The audit log of a data dir: deploys, deletes, key changes, denied
    /// requests.
    Audit(keys::AuditArgs),
    /// Deploy (or redeploy) a function from its manifest.
    Deploy(functions::DeployArgs),
    /// Invoke a function synchronously and print its response and REPORT line.
    Invoke(functions::InvokeArgs),
    /// Upload an object to a bucket (fires the bucket's triggers).
    Put(storage::PutArgs),
    /// Download an object.
    Get(storage::GetArgs),
    /// List a bucket's objects.
    Objects(storage::ObjectsArgs),
    /// Publish a message to a topic: every subscribed function gets it.
    Publish(storage::PublishArgs),
    /// Send a message to a queue.
    Send(storage::SendArgs),
    /// Depth and age of asynchronous events per function and of queues.
    Queues(storage::QueuesArgs),
    /// A function's dead-letter queue.
    Dlq(storage::DlqArgs),
    /// List deployed functions.
    Ls(functions::LsArgs),
    /// List a function's instances.
    Instances(functions::InstancesArgs),
    /// List invocation records.
    Invocations(functions::InvocationsArgs),
    /// Print a function's recent log lines.
    Logs(functions::LogsArgs),
    /// Delete a function.
    Delete(functions::DeleteArgs),
    /// Stop a function's idle instances now (scale to zero).
    ScaleToZero(functions::ScaleToZeroArgs),
    /// Models: train classical models on bundled datasets.
    Models(models::ModelsArgs),
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
    /// results.json, invocations.csv.gz, summary.md and report.html in --out.
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
        /// Emulate a client link on every request, RATE,RTT (e.g.
        /// 50mbit,20ms): the studies' clients had a WAN, loopback has none.
        /// Overrides the preset's `link`.
        #[arg(long, value_name = "RATE,RTT")]
        link: Option<virga_lab::load::Link>,
    },
    /// Compare keep-alive policies (fixed, hybrid-histogram, greedy-dual) on
    /// the Azure Functions trace or a synthetic workload, by simulation:
    /// results.json, summary.md and report.html in --out.
    Sim(sim::SimArgs),
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
    /// Confine an instance and exec its runtime (what the platform starts
    /// for every sandboxed instance; not for direct use).
    #[command(hide = true)]
    Jail,
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
    "start",
    "status",
    "error_type",
    "queue_ms",
    "init_ms",
    "restore_ms",
    "duration_ms",
    "billed_ms",
    "memory_mb",
    "max_memory_mb",
    "limits_enforced",
    "isolation",
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

fn main() -> std::process::ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    ALLOC.enable();
    // Every cold start runs `virga worker`: skip building the whole
    // command line's parser for it.
    let mut args = std::env::args_os().skip(1);
    let first = args.next();
    if args.next().is_none() {
        // The jailer must stay single-threaded: it runs before anything else.
        if first.as_deref() == Some(std::ffi::OsStr::new("jail")) {
            return virga_platform::sandbox::jail::main();
        }
        if first.as_deref() == Some(std::ffi::OsStr::new("worker")) {
            return worker::main();
        }
    }
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    cli.endpoint_given =
        matches.value_source("endpoint") == Some(clap::parser::ValueSource::CommandLine);
    // The runtime is synchronous: an instance gets no async runtime's threads.
    match cli.command {
        Command::Worker => return worker::main(),
        Command::Jail => return virga_platform::sandbox::jail::main(),
        _ => {}
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.on_thread_park(virga_platform::upkeep::on_thread_park);
    if let Command::Serve(args) = &cli.command {
        builder.worker_threads(args.worker_threads());
    }
    let rt = match builder.enable_all().build() {
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
            let unreachable = e
                .chain()
                .any(|c| matches!(c.downcast_ref(), Some(ApiError::Unreachable { .. })));
            if unreachable {
                eprintln!("hint: is `virga serve` running? (--endpoint / VIRGA_ENDPOINT)");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// Credentials to sign requests with, for commands that talk to a server.
fn signer(cli: &Cli) -> Result<Option<virga_sigv4::Signer>> {
    match &cli.command {
        Command::Serve(_)
        | Command::Keys(_)
        | Command::Audit(_)
        | Command::Models(_)
        | Command::Demo { .. }
        | Command::Sim(_)
        | Command::Worker => Ok(None),
        _ => Ok(virga_sigv4::Signer::from_environment(
            cli.aws_profile.as_deref(),
            virga_platform::access::SERVICE,
        )?),
    }
}

async fn run(cli: Cli) -> Result<std::process::ExitCode> {
    let signer = signer(&cli)?;
    let client = Client::new(&cli.endpoint).signed(signer.clone());
    match cli.command {
        Command::Serve(args) => return serve::serve(args).await,
        Command::Keys(args) => return keys::keys(args),
        Command::Audit(args) => return keys::audit(args),
        Command::Deploy(args) => return functions::deploy(&client, args).await,
        Command::Invoke(args) => return functions::invoke(&client, args).await,
        Command::Ls(args) => return functions::ls(&client, args).await,
        Command::Instances(args) => return functions::instances(&client, args).await,
        Command::Invocations(args) => return functions::invocations(&client, args).await,
        Command::Logs(args) => return functions::logs(&client, args).await,
        Command::Delete(args) => return functions::delete(&client, args).await,
        Command::ScaleToZero(args) => return functions::scale_to_zero(&client, args).await,
        Command::Put(args) => return storage::put(&client, args).await,
        Command::Get(args) => return storage::get(&client, args).await,
        Command::Objects(args) => return storage::objects(&client, args).await,
        Command::Publish(args) => return storage::publish(&client, args).await,
        Command::Send(args) => return storage::send(&client, args).await,
        Command::Queues(args) => return storage::queues(&client, args).await,
        Command::Dlq(args) => return storage::dlq(&client, args).await,
        Command::Models(args) => return models::models(args).await,
        Command::Sim(args) => return sim::sim(args),
        Command::Cost(args) => match args.estimate {
            None => {
                cost::cost(
                    &cli.endpoint,
                    signer,
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
            cost::tune(&cli.endpoint, signer, config, out).await?;
        }
        Command::Bench {
            preset,
            out,
            quick,
            link,
        } => {
            init_tracing("warn");
            bench::run(bench::BenchArgs {
                preset,
                // With --endpoint: measure it; else an embedded platform.
                endpoint: cli.endpoint_given.then(|| cli.endpoint.clone()),
                signer,
                out,
                quick,
                link,
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
        Command::Jail => unreachable!("`virga jail` runs before the async runtime starts"),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Today's date (UTC), YYYY-MM-DD.
fn chrono_today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}
