//! `virga keys create|ls|revoke` and `virga audit`: on the data dir
//! directly, so the first admin key needs no server, and a running server
//! sees the change at its next request.

use std::process::ExitCode;

use serde_json::Value;
use virga_platform::access::{audit, AuditEntry, KeyKind, KeyStore, NewKey, Role};

use super::*;

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RoleArg {
    /// Everything: deploy, delete, invoke, read, storage.
    Admin,
    /// Invoke (and describe) the functions --functions matches.
    Invoke,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CreatedFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a key and print its secret, once. By default an access key id
    /// and secret for AWS Signature V4 (AWS CLI, SDKs, virga, the lab);
    /// with --token, a bearer token for clients that cannot sign.
    Create {
        /// A name to know the key by (unique among live keys).
        name: String,
        /// The server's data dir.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// For --role invoke: the functions it may invoke, as patterns
        /// (`*` any run of characters, `?` one), comma-separated.
        /// Default: every function.
        #[arg(long, value_delimiter = ',')]
        functions: Vec<String>,
        /// A bearer token (`Authorization: Bearer TOKEN`) instead of a
        /// SigV4 key.
        #[arg(long)]
        token: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: CreatedFormat,
    },
    /// List keys: ids, names, roles, functions; never secrets.
    Ls {
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Revoke a key (by id or name): it stops working at once, also on a
    /// running server.
    Revoke {
        key: String,
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
}

pub fn keys(args: KeysArgs) -> Result<ExitCode> {
    match args.command {
        KeysCommand::Create {
            name,
            data_dir,
            role,
            functions,
            token,
            format,
        } => {
            let role = match role {
                RoleArg::Admin => Role::Admin,
                RoleArg::Invoke => Role::Invoke,
            };
            let kind = if token {
                KeyKind::Token
            } else {
                KeyKind::Sigv4
            };
            let new = KeyStore::new(&data_dir).create(&name, role, &functions, kind)?;
            let info = new.info();
            audit::append(
                &data_dir,
                &AuditEntry::now("key-create", &info.id, "cli").detail(format!(
                    "{} key {:?}, role {}, functions {}",
                    if token { "token" } else { "sigv4" },
                    info.name,
                    info.role.as_str(),
                    info.functions.join(",")
                )),
            )?;
            print_created(&new, format);
        }
        KeysCommand::Ls { data_dir, format } => {
            let rows: Vec<Value> = KeyStore::new(&data_dir)
                .list()?
                .into_iter()
                .map(|k| {
                    serde_json::json!({
                        "id": k.id,
                        "name": k.name,
                        "kind": k.kind,
                        "role": k.role,
                        "functions": k.functions.join(","),
                        "created_at": k.created_at,
                        "state": if k.revoked_at.is_some() { "revoked" } else { "live" },
                        "revoked_at": k.revoked_at,
                    })
                })
                .collect();
            table::print(
                &rows,
                &[
                    "id",
                    "name",
                    "kind",
                    "role",
                    "functions",
                    "state",
                    "created_at",
                    "revoked_at",
                ],
                format,
            );
        }
        KeysCommand::Revoke { key, data_dir } => {
            let info = KeyStore::new(&data_dir).revoke(&key)?;
            audit::append(
                &data_dir,
                &AuditEntry::now("key-revoke", &info.id, "cli")
                    .detail(format!("key {:?}", info.name)),
            )?;
            println!("revoked {} ({})", info.id, info.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_created(new: &NewKey, format: CreatedFormat) {
    let info = new.info();
    match (new, format) {
        (
            NewKey::Sigv4 {
                access_key_id,
                secret_access_key,
                ..
            },
            CreatedFormat::Json,
        ) => println!(
            "{}",
            serde_json::json!({
                "access_key_id": access_key_id,
                "secret_access_key": secret_access_key,
            })
        ),
        (NewKey::Token { token, .. }, CreatedFormat::Json) => println!(
            "{}",
            serde_json::json!({ "key_id": info.id, "token": token })
        ),
        (
            NewKey::Sigv4 {
                access_key_id,
                secret_access_key,
                ..
            },
            CreatedFormat::Text,
        ) => {
            println!("access key id:     {access_key_id}");
            println!("secret access key: {secret_access_key}");
            eprintln!(
                "key {:?}: role {}, functions {}. The secret is shown only now; use the pair as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or in ~/.aws/credentials.",
                info.name,
                info.role.as_str(),
                info.functions.join(",")
            );
        }
        (NewKey::Token { token, .. }, CreatedFormat::Text) => {
            println!("token: {token}");
            eprintln!(
                "token {} ({:?}): role {}, functions {}. Shown only now; send it as `Authorization: Bearer TOKEN`.",
                info.id,
                info.name,
                info.role.as_str(),
                info.functions.join(",")
            );
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// The server's data dir.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Only entries from this time on: RFC 3339, YYYY-MM-DD, or an age
    /// (30m, 12h, 7d).
    #[arg(long)]
    since: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

pub fn audit(args: AuditArgs) -> Result<ExitCode> {
    let since = args.since.as_deref().map(since_time).transpose()?;
    let entries = audit::read(&args.data_dir, since.as_deref())?;
    let rows: Vec<Value> = entries
        .iter()
        .map(|e| serde_json::to_value(e).unwrap_or_default())
        .collect();
    table::print(
        &rows,
        &["time", "event", "key", "source", "function", "detail"],
        args.format,
    );
    Ok(ExitCode::SUCCESS)
}

/// `--since` as RFC 3339.
fn since_time(s: &str) -> Result<String> {
    if chrono::DateTime::parse_from_rfc3339(s).is_ok() {
        return Ok(s.to_string());
    }
    if chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() {
        return Ok(format!("{s}T00:00:00Z"));
    }
    match s.parse::<virga_platform::store::Retention>() {
        Ok(virga_platform::store::Retention::Age(age)) => {
            let t = chrono::Utc::now() - chrono::TimeDelta::from_std(age)?;
            Ok(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        }
        _ => bail!(
            "--since {s:?}: give an RFC 3339 time, a date (YYYY-MM-DD) or an age (30m, 12h, 7d)"
        ),
    }
}
