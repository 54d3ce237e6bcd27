//! `virga put`, `get`, `objects`, `publish`, `send`, `queues`, `dlq`:
//! objects, topics, queues and dead letters through the platform's API.

use std::process::ExitCode;

use super::*;

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered events.
    Ls {
        function: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Deliver the dead letters again.
    Redrive { function: String },
}

#[derive(Debug, clap::Args)]
pub struct PutArgs {
    pub bucket: String,
    pub key: String,
    pub file: PathBuf,
}

pub async fn put(client: &Client, args: PutArgs) -> Result<ExitCode> {
    let PutArgs { bucket, key, file } = args;
    let body = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
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
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    pub bucket: String,
    pub key: String,
    /// Write here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub async fn get(client: &Client, args: GetArgs) -> Result<ExitCode> {
    let GetArgs { bucket, key, out } = args;
    let body = client
        .get_bytes(&format!("/v1/buckets/{bucket}/objects/{key}"))
        .await?;
    match out {
        Some(p) => {
            std::fs::write(&p, &body).with_context(|| format!("cannot write {}", p.display()))?
        }
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&body)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct ObjectsArgs {
    pub bucket: String,
    #[arg(long, default_value = "")]
    pub prefix: String,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub async fn objects(client: &Client, args: ObjectsArgs) -> Result<ExitCode> {
    let ObjectsArgs {
        bucket,
        prefix,
        format,
    } = args;
    let v = client
        .get_json(&format!("/v1/buckets/{bucket}/objects?prefix={prefix}"))
        .await?;
    table::print(
        &array(&v, "objects"),
        &["key", "size", "etag", "last_modified"],
        format,
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    pub topic: String,
    pub message: String,
    #[arg(long)]
    pub subject: Option<String>,
}

pub async fn publish(client: &Client, args: PublishArgs) -> Result<ExitCode> {
    let PublishArgs {
        topic,
        message,
        subject,
    } = args;
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
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    pub queue: String,
    message: String,
}

pub async fn send(client: &Client, args: SendArgs) -> Result<ExitCode> {
    let SendArgs { queue, message } = args;
    let v = client
        .send_json(
            reqwest::Method::POST,
            &format!("/v1/queues/{queue}/messages"),
            message.into_bytes(),
        )
        .await?;
    println!("sent {}", v["message_id"].as_str().unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct QueuesArgs {
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub async fn queues(client: &Client, args: QueuesArgs) -> Result<ExitCode> {
    let QueuesArgs { format } = args;
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
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
}

pub async fn dlq(client: &Client, args: DlqArgs) -> Result<ExitCode> {
    let DlqArgs { command } = args;
    match command {
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
    }
    Ok(ExitCode::SUCCESS)
}
