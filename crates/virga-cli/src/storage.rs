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
    let stored = client.put_object(&bucket, &key, body).await?;
    println!(
        "put {bucket}/{key} ({} bytes, etag {})",
        stored.object.size, stored.object.etag
    );
    for t in &stored.invocations {
        println!("triggered {} (request id {})", t.function, t.request_id);
    }
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
    let body = client.get_object(&bucket, &key).await?;
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
    table::print(
        &client.objects(&bucket, &prefix).await?,
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
    let p = client.publish(&topic, &message, subject.as_deref()).await?;
    println!(
        "published {} to {} subscribers: {}",
        p.message_id,
        p.subscribers.len(),
        p.subscribers.join(", ")
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
    let id = client.send_message(&queue, &message).await?;
    println!("sent {id}");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct QueuesArgs {
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub async fn queues(client: &Client, args: QueuesArgs) -> Result<ExitCode> {
    let QueuesArgs { format } = args;
    let q = client.queues().await?;
    if format == Format::Json {
        // Through a JSON value, so keys print in the order they always have.
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::to_value(&q)?)?
        );
    } else {
        println!("asynchronous invocations:");
        table::print(
            &q.functions,
            &[
                "function",
                "ready",
                "in_flight",
                "delayed",
                "oldest_age_ms",
                "dead_letters",
                "cluster_queued",
            ],
            format,
        );
        println!("\nqueues:");
        table::print(
            &q.queues,
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
            table::print(
                &client.dead_letters(&function).await?,
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
            let n = client.redrive(&function).await?;
            println!("redriven {n} events of {function}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
