//! The audit log: `audit.log` in the data dir (mode 0600), one JSON object
//! a line, appended: every deploy and delete through the API, every key
//! created or revoked, every denied request, with the key, the time and
//! the source address. Each entry is one `write` to a file opened for
//! appending, so the server and an offline `virga keys` can both add to it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::AccessError;

/// The audit log's name in the data dir.
pub const AUDIT_FILE: &str = "audit.log";

/// One audited event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// RFC 3339, UTC.
    pub time: String,
    /// `deploy`, `delete`, `key-create`, `key-revoke` or `denied`.
    pub event: String,
    /// The key id, or `-` for none.
    pub key: String,
    /// The peer's address, or `cli` for `virga keys` on the data dir.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// What was asked and, for a denial, why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditEntry {
    /// An entry stamped now.
    pub fn now(event: &str, key: &str, source: &str) -> AuditEntry {
        AuditEntry {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            event: event.to_string(),
            key: key.to_string(),
            source: source.to_string(),
            function: None,
            detail: None,
        }
    }

    pub fn function(mut self, f: Option<&str>) -> Self {
        self.function = f.map(str::to_string);
        self
    }

    pub fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }
}

/// The server's handle on the log: the file stays open.
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl AuditLog {
    pub fn new(data_dir: &Path) -> AuditLog {
        AuditLog {
            path: data_dir.join(AUDIT_FILE),
            file: Mutex::new(None),
        }
    }

    /// Appends an entry. A failure is logged, never the caller's problem:
    /// the request it describes has been answered or refused already.
    pub fn record(&self, entry: &AuditEntry) {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if file.is_none() {
            match open(&self.path) {
                Ok(f) => *file = Some(f),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write the audit log");
                    return;
                }
            }
        }
        if let Some(f) = file.as_mut() {
            if let Err(e) = f.write_all(&line(entry)) {
                tracing::warn!(error = %e, path = %self.path.display(), "cannot write the audit log");
                *file = None;
            }
        }
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish()
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn line(entry: &AuditEntry) -> Vec<u8> {
    let mut l = serde_json::to_vec(entry).expect("entries serialise");
    l.push(b'\n');
    l
}

/// Appends one entry (for `virga keys` on the data dir).
pub fn append(data_dir: &Path, entry: &AuditEntry) -> Result<(), AccessError> {
    let path = data_dir.join(AUDIT_FILE);
    open(&path)
        .and_then(|mut f| f.write_all(&line(entry)))
        .map_err(|e| AccessError::Io(path, e))
}

/// The entries at or after `since` (RFC 3339), oldest first. A line that
/// is not an entry (cut short by a crash) is skipped.
pub fn read(data_dir: &Path, since: Option<&str>) -> Result<Vec<AuditEntry>, AccessError> {
    let path = data_dir.join(AUDIT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AccessError::Io(path, e)),
    };
    let since = since.and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<AuditEntry>(l).ok())
        .filter(|e| match since {
            None => true,
            Some(s) => chrono::DateTime::parse_from_rfc3339(&e.time).is_ok_and(|t| t >= s),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn entries_from_the_server_and_the_cli_land_in_one_private_file() {
        let d = tempfile::tempdir().unwrap();
        let log = AuditLog::new(d.path());
        let mut old =
            AuditEntry::now("deploy", "VIRGAKEY", "127.0.0.1:5000").function(Some("echo"));
        old.time = "2020-01-01T00:00:00.000Z".into();
        log.record(&old);
        append(
            d.path(),
            &AuditEntry::now("key-create", "VIRGAOTHER", "cli"),
        )
        .unwrap();
        log.record(&AuditEntry::now("denied", "-", "127.0.0.1:5001").detail("no"));
        // A torn last line is skipped.
        append(d.path(), &AuditEntry::now("x", "-", "-")).unwrap();
        let path = d.path().join(AUDIT_FILE);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.truncate(text.len() - 10);
        std::fs::write(&path, text).unwrap();

        let all = read(d.path(), None).unwrap();
        let events: Vec<_> = all.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(events, ["deploy", "key-create", "denied"]);
        assert_eq!(all[0], old);
        let recent = read(d.path(), Some("2021-01-01T00:00:00Z")).unwrap();
        assert_eq!(recent.len(), 2);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
