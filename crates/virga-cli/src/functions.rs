//! `virga deploy`, `invoke`, `ls`, `instances`, `invocations`, `logs`,
//! `delete`, `scale-to-zero`: functions through the platform's API.

use std::process::ExitCode;

use virga_spec::Status;

use super::*;

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    pub manifest: PathBuf,
}

pub async fn deploy(client: &Client, args: DeployArgs) -> Result<ExitCode> {
    let DeployArgs { manifest } = args;
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
            &text,
            &base.display().to_string(),
            Some(&manifest.display().to_string()),
        )
        .await?;
    println!(
        "deployed {} version {} ({} MB, {:.2} vCPU)",
        info.name, info.version, info.memory_mb, info.vcpu
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct InvokeArgs {
    pub function: String,
    /// The event, as JSON.
    #[arg(long, default_value = "{}")]
    pub payload: String,
    /// Read the event from a file instead.
    #[arg(long, conflicts_with = "payload")]
    pub payload_file: Option<PathBuf>,
    /// Queue it (invocation type Event): print the request id once it is stored.
    #[arg(long = "async")]
    pub asynchronous: bool,
}

pub async fn invoke(client: &Client, args: InvokeArgs) -> Result<ExitCode> {
    let InvokeArgs {
        function,
        payload,
        payload_file,
        asynchronous,
    } = args;
    init_tracing("warn");
    let payload = match payload_file {
        Some(p) => std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?,
        None => payload.into_bytes(),
    };
    if asynchronous {
        let id = client.invoke_async(&function, payload).await?;
        println!("queued {id}");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let out = client.invoke(&function, payload).await?;
    println!("{}", String::from_utf8_lossy(&out.body));
    if let Some(report) = out.report_line() {
        eprintln!("{report}");
    }
    if let Some(kind) = out.function_error {
        eprintln!("function error ({kind})");
        return Ok(std::process::ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub async fn ls(client: &Client, args: LsArgs) -> Result<ExitCode> {
    let LsArgs { format } = args;
    table::print(
        &client.functions().await?,
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
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct InstancesArgs {
    pub function: String,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub async fn instances(client: &Client, args: InstancesArgs) -> Result<ExitCode> {
    let InstancesArgs { function, format } = args;
    table::print(
        &client.instances(&function).await?,
        &[
            "id",
            "version",
            "role",
            "pid",
            "state",
            "init_ms",
            "invocations",
            "max_memory_mb",
            "limits_enforced",
            "isolation",
            "started_at",
        ],
        format,
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct InvocationsArgs {
    #[arg(long)]
    pub function: Option<String>,
    /// success, error, throttled or timeout.
    #[arg(long)]
    pub status: Option<String>,
    /// Only the newest N.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub async fn invocations(client: &Client, args: InvocationsArgs) -> Result<ExitCode> {
    let InvocationsArgs {
        function,
        status,
        limit,
        format,
    } = args;
    let status = match status {
        Some(s) => Some(Status::parse(&s).with_context(|| {
            format!("status {s:?} is not one of success, error, throttled, timeout")
        })?),
        None => None,
    };
    let rows = client.records(function.as_deref(), status, limit).await?;
    let columns: &[&str] = if format == Format::Table {
        &[
            "request_id",
            "function",
            "cold",
            "status",
            "error_type",
            "queue_ms",
            "init_ms",
            "restore_ms",
            "duration_ms",
            "billed_ms",
            "max_memory_mb",
        ]
    } else {
        RECORD_COLUMNS
    };
    table::print(&rows, columns, format);
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    pub function: String,
    #[arg(long, default_value_t = 100)]
    pub lines: usize,
}

pub async fn logs(client: &Client, args: LogsArgs) -> Result<ExitCode> {
    let LogsArgs { function, lines } = args;
    for l in client.logs(&function, lines).await? {
        println!("{l}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    pub function: String,
}

pub async fn delete(client: &Client, args: DeleteArgs) -> Result<ExitCode> {
    let DeleteArgs { function } = args;
    client.delete_function(&function).await?;
    println!("deleted {function}");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct ScaleToZeroArgs {
    pub function: String,
}

pub async fn scale_to_zero(client: &Client, args: ScaleToZeroArgs) -> Result<ExitCode> {
    let ScaleToZeroArgs { function } = args;
    let stopped = client.stop_idle(&function).await?;
    println!("stopped {stopped} idle instances of {function}");
    Ok(ExitCode::SUCCESS)
}
