//! `virga deploy`, `invoke`, `ls`, `instances`, `invocations`, `logs`,
//! `delete`, `scale-to-zero`: functions through the platform's API.

use std::process::ExitCode;

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
    if let Some(report) = out.log_tail.as_deref().and_then(client::report_line) {
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
    let v = client
        .get_json(&format!("/v1/functions/{function}/logs?lines={lines}"))
        .await?;
    for l in array(&v, "lines") {
        println!("{}", l.as_str().unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    pub function: String,
}

pub async fn delete(client: &Client, args: DeleteArgs) -> Result<ExitCode> {
    let DeleteArgs { function } = args;
    client.delete(&format!("/v1/functions/{function}")).await?;
    println!("deleted {function}");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct ScaleToZeroArgs {
    pub function: String,
}

pub async fn scale_to_zero(client: &Client, args: ScaleToZeroArgs) -> Result<ExitCode> {
    let ScaleToZeroArgs { function } = args;
    let resp = client
        .send_json(
            reqwest::Method::DELETE,
            &format!("/v1/functions/{function}/instances"),
            Vec::new(),
        )
        .await?;
    println!("stopped {} idle instances of {function}", resp["stopped"]);
    Ok(ExitCode::SUCCESS)
}
