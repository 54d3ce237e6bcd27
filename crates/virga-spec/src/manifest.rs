//! Function manifests (`functions/*.toml`).
//!
//! ```toml
//! name = "echo"                        # [a-zA-Z0-9-_]{1,64}
//! runtime = "command"                  # a program speaking the Lambda Runtime API
//! command = ["python3", "handler.py"]  # run in the manifest's directory
//! handler = "main.handler"             # optional, passed on as _HANDLER
//! memory_mb = 512                      # 128..=10240; CPU follows as memory_mb / 1769 vCPU
//! timeout_ms = 3000                    # per invocation; the instance is killed on expiry
//! max_concurrency = 10                 # max instances; 0 = bounded only by the host
//! keep_alive_ms = 600000               # idle instances are stopped after this
//! min_instances = 0                    # provisioned instances, started at deploy, never reaped
//! max_queue = 100                      # sync requests waiting for an instance before 429
//! env = { KEY = "value" }
//! ```
//!
//! Unknown fields are refused, and every error names the file, the line and the field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What an instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// Any program that speaks the AWS Lambda Runtime API.
    #[default]
    Command,
}

/// A function, as declared by its manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    #[serde(default)]
    pub runtime: Runtime,
    /// Program and arguments; relative paths are relative to the manifest's directory.
    #[serde(default)]
    pub command: Vec<String>,
    /// Passed to the runtime as `_HANDLER` (e.g. `echo` for `virga-worker`).
    #[serde(default)]
    pub handler: Option<String>,
    #[serde(default = "defaults::memory_mb")]
    pub memory_mb: u32,
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "defaults::max_concurrency")]
    pub max_concurrency: u32,
    #[serde(default = "defaults::keep_alive_ms")]
    pub keep_alive_ms: u64,
    #[serde(default)]
    pub min_instances: u32,
    #[serde(default = "defaults::max_queue")]
    pub max_queue: u32,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

mod defaults {
    pub fn memory_mb() -> u32 {
        128
    }
    pub fn timeout_ms() -> u64 {
        3_000
    }
    pub fn max_concurrency() -> u32 {
        10
    }
    pub fn keep_alive_ms() -> u64 {
        600_000
    }
    pub fn max_queue() -> u32 {
        100
    }
}

pub const MIN_MEMORY_MB: u32 = 128;
pub const MAX_MEMORY_MB: u32 = 10_240;
/// Lambda's maximum function timeout (15 minutes).
pub const MAX_TIMEOUT_MS: u64 = 900_000;

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ManifestError {
    /// {file}:{line}:{column}: {message}
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// {file}:{line}: field `{field}`: {message}
    #[error("{file}:{line}: field `{field}`: {message}")]
    Invalid {
        file: String,
        line: usize,
        field: &'static str,
        message: String,
    },
}

impl Manifest {
    /// Parses and validates a manifest. `source` names it in errors (a file path).
    pub fn parse(text: &str, source: &str) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            let message = e.message().trim();
            // Type errors point at a value: name the field it belongs to.
            let message = match key_on_line(text, line) {
                Some(key) if !message.contains(&format!("`{key}`")) => {
                    format!("field `{key}`: {message}")
                }
                _ => message.to_string(),
            };
            ManifestError::Syntax {
                file: source.to_string(),
                line,
                column,
                message,
            }
        })?;
        manifest
            .validate()
            .map_err(|(field, message)| ManifestError::Invalid {
                file: source.to_string(),
                line: field_line(text, field),
                field,
                message,
            })?;
        Ok(manifest)
    }

    /// Checks the rules serde cannot express; returns the offending field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !valid_name(&self.name) {
            return Err((
                "name",
                format!(
                    "{:?} is not a valid function name: use 1 to 64 of a-z, A-Z, 0-9, '-' and '_'",
                    self.name
                ),
            ));
        }
        match self.runtime {
            Runtime::Command => {
                if self.command.is_empty() || self.command[0].is_empty() {
                    return Err((
                        "command",
                        "runtime \"command\" needs a program to run, e.g. command = [\"python3\", \"handler.py\"]".into(),
                    ));
                }
            }
        }
        if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&self.memory_mb) {
            return Err((
                "memory_mb",
                format!(
                    "{} is out of range: use {MIN_MEMORY_MB}..={MAX_MEMORY_MB}",
                    self.memory_mb
                ),
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err((
                "timeout_ms",
                format!(
                    "{} is out of range: use 1..={MAX_TIMEOUT_MS}",
                    self.timeout_ms
                ),
            ));
        }
        if self.max_concurrency != 0 && self.min_instances > self.max_concurrency {
            return Err((
                "min_instances",
                format!(
                    "{} provisioned instances exceed max_concurrency = {}",
                    self.min_instances, self.max_concurrency
                ),
            ));
        }
        if let Some(key) = self.env.keys().find(|k| !valid_env_key(k)) {
            return Err((
                "env",
                format!("{key:?} is not a valid environment variable name"),
            ));
        }
        if let Some(key) = self.env.keys().find(|k| is_reserved_env(k)) {
            return Err((
                "env",
                format!("{key:?} is reserved: the platform sets it for every instance"),
            ));
        }
        Ok(())
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_env_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Variables the platform owns, as Lambda reserves them.
fn is_reserved_env(key: &str) -> bool {
    key.starts_with("AWS_LAMBDA_") || key == "_HANDLER" || key == "LAMBDA_TASK_ROOT"
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The key assigned on a 1-based line (`key = value`), if any.
fn key_on_line(text: &str, line: usize) -> Option<&str> {
    let (key, _) = text.lines().nth(line.checked_sub(1)?)?.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.contains(char::is_whitespace)).then_some(key)
}

/// The line on which `field` is assigned, or 1 when it is absent (a default was used).
fn field_line(text: &str, field: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(field)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(1, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECHO: &str = r#"
name = "echo"
command = ["python3", "handler.py"]
memory_mb = 512
env = { GREETING = "hi" }
"#;

    #[test]
    fn parses_with_lambda_like_defaults() {
        let m = Manifest::parse(ECHO, "echo.toml").unwrap();
        assert_eq!(m.name, "echo");
        assert_eq!(m.runtime, Runtime::Command);
        assert_eq!(m.memory_mb, 512);
        assert_eq!(m.timeout_ms, 3000);
        assert_eq!(m.keep_alive_ms, 600_000);
        assert_eq!(m.max_queue, 100);
        assert_eq!(m.env["GREETING"], "hi");
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let text = "name = \"a\"\ncommand = [\"x\"]\nmemroy_mb = 512\n";
        let err = Manifest::parse(text, "fn.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("fn.toml:3:"), "{msg}");
        assert!(msg.contains("memroy_mb"), "{msg}");
    }

    #[test]
    fn out_of_range_memory_names_its_line() {
        let text = "name = \"a\"\ncommand = [\"x\"]\nmemory_mb = 64\n";
        let err = Manifest::parse(text, "fn.toml").unwrap_err();
        assert_eq!(
            err,
            ManifestError::Invalid {
                file: "fn.toml".into(),
                line: 3,
                field: "memory_mb",
                message: "64 is out of range: use 128..=10240".into()
            }
        );
    }

    #[test]
    fn rejects_bad_names_missing_command_and_reserved_env() {
        for (text, field) in [
            ("name = \"a b\"\ncommand = [\"x\"]", "name"),
            ("name = \"\"\ncommand = [\"x\"]", "name"),
            ("name = \"a\"", "command"),
            (
                "name = \"a\"\ncommand = [\"x\"]\ntimeout_ms = 0",
                "timeout_ms",
            ),
            (
                "name = \"a\"\ncommand = [\"x\"]\nmax_concurrency = 1\nmin_instances = 2",
                "min_instances",
            ),
            (
                "name = \"a\"\ncommand = [\"x\"]\nenv = { AWS_LAMBDA_RUNTIME_API = \"x\" }",
                "env",
            ),
            (
                "name = \"a\"\ncommand = [\"x\"]\nenv = { \"1A\" = \"x\" }",
                "env",
            ),
        ] {
            match Manifest::parse(text, "t.toml") {
                Err(ManifestError::Invalid { field: f, .. }) => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: expected invalid {field}, got {other:?}"),
            }
        }
        let long = format!("name = \"{}\"\ncommand = [\"x\"]", "a".repeat(65));
        assert!(Manifest::parse(&long, "t.toml").is_err());
    }

    #[test]
    fn syntax_errors_carry_position() {
        let err = Manifest::parse("name = \"a\"\ncommand = [\n", "bad.toml").unwrap_err();
        assert!(
            matches!(err, ManifestError::Syntax { line, .. } if line >= 2),
            "{err}"
        );
        let err = Manifest::parse("name = 5\ncommand=[\"x\"]", "bad.toml").unwrap_err();
        assert!(
            matches!(err, ManifestError::Syntax { line: 1, .. }),
            "{err}"
        );
        let err = Manifest::parse("name = \"a\"\ncommand = \"x\"", "bad.toml").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("bad.toml:2:11: field `command`: "),
            "{err}"
        );
    }
}
