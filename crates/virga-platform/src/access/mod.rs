//! Access control: who may call the gateway, and what they may do.
//!
//! - [`policy`]: roles, actions and the yes-or-no (pure);
//! - [`keys`]: SigV4 keys and bearer tokens in the data dir;
//! - [`audit`]: the audit log in the data dir.
//!
//! The gateway's `auth` layer is the only user of this module on the
//! request path; the CLI uses [`keys`] and [`audit`] on a data dir offline.
//! The Runtime API listeners of instances are not behind it: they are
//! per-instance, on loopback, and only the instance is told their address.

pub mod audit;
pub mod keys;
pub mod policy;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

pub use audit::{AuditEntry, AuditLog};
pub use keys::{KeyInfo, KeyKind, KeyStore, NewKey};
pub use policy::{Action, Caller, Grant, Role};

/// The service a request's SigV4 credential scope must name, on every
/// door (Invoke API, `/v1`, V2): virga is signed for as Lambda is.
pub const SERVICE: &str = "lambda";

/// Why access could not be set up or a key could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// a file in the data dir could not be used
    #[error("cannot use {0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    /// the key file is not readable as keys
    #[error("{0} is not a key file this virga can read: {1}")]
    Corrupt(PathBuf, #[source] serde_json::Error),
    /// `--auth none` on an address others can reach
    #[error("refusing to serve on {0} without authentication: a non-loopback address needs `--auth sigv4` (create a key first with `virga keys create NAME --role admin --data-dir DIR`), or bind 127.0.0.1")]
    Unauthenticated(SocketAddr),
    /// no key has that id or name
    #[error("no key {0:?}: `virga keys ls` lists them")]
    NoSuchKey(String),
    /// a live key has the name already
    #[error("a key named {0:?} exists already (`virga keys ls`): pick another name, or revoke that key first")]
    NameTaken(String),
    /// the key is revoked already
    #[error("key {0} is revoked already")]
    AlreadyRevoked(String),
    /// a setting is wrong
    #[error("{0}")]
    Invalid(String),
}

/// `virga serve --auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// No authentication: allowed on loopback binds only. Signed requests
    /// pass whatever their keys.
    #[default]
    None,
    /// Every request but health checks carries a SigV4 signature or a
    /// bearer token of a live key.
    Sigv4,
}

impl std::str::FromStr for AuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<AuthMode, String> {
        match s {
            "none" => Ok(AuthMode::None),
            "sigv4" => Ok(AuthMode::Sigv4),
            _ => Err(format!("--auth {s:?} is not one of sigv4, none")),
        }
    }
}

/// The gateway's access settings and state.
#[derive(Debug)]
pub struct Access {
    pub mode: AuthMode,
    /// On a loopback bind: the Host names accepted besides loopback ones
    /// (a defence against DNS rebinding). `None`: any Host.
    hosts: Option<Vec<String>>,
    /// Under `--auth sigv4`: the host directories (canonical) a deploy
    /// through the API may capture code from. The platform reads them with
    /// its own rights, so a key must not be able to name any directory of
    /// the host.
    code_dirs: Vec<PathBuf>,
    pub keys: KeyStore,
    pub audit: AuditLog,
}

impl Access {
    /// Access for a gateway bound to `bind`: refuses `AuthMode::None` on
    /// an address that is not loopback.
    pub fn new(
        data_dir: &Path,
        mode: AuthMode,
        bind: SocketAddr,
        allowed_hosts: &[String],
    ) -> Result<Access, AccessError> {
        let loopback = bind.ip().is_loopback();
        if mode == AuthMode::None && !loopback {
            return Err(AccessError::Unauthenticated(bind));
        }
        Ok(Access {
            mode,
            hosts: loopback.then(|| {
                allowed_hosts
                    .iter()
                    .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                    .collect()
            }),
            code_dirs: Vec::new(),
            keys: KeyStore::new(data_dir),
            audit: AuditLog::new(data_dir),
        })
    }

    /// Lets deploys through the API capture code from inside `dirs`
    /// (under `--auth sigv4`; without authentication any directory is the
    /// local operator's).
    pub fn with_code_dirs(mut self, dirs: &[PathBuf]) -> Result<Access, AccessError> {
        for d in dirs {
            let canonical = d
                .canonicalize()
                .map_err(|e| AccessError::Io(d.clone(), e))?;
            self.code_dirs.push(canonical);
        }
        Ok(self)
    }

    /// The directory a deploy may capture code from, given as `base_dir`:
    /// any under `--auth none`; under `--auth sigv4` only one inside the
    /// allowed code directories, checked after links and `..` are resolved.
    /// The error says what to do instead.
    pub fn code_dir(&self, base_dir: &Path) -> Result<PathBuf, String> {
        if self.mode == AuthMode::None {
            return Ok(base_dir.to_path_buf());
        }
        let canonical = base_dir
            .canonicalize()
            .map_err(|e| format!("base_dir {}: {e}", base_dir.display()))?;
        if self
            .code_dirs
            .iter()
            .any(|root| canonical.starts_with(root))
        {
            return Ok(canonical);
        }
        Err(format!(
            "base_dir {} is not inside a code directory of this server: under --auth sigv4 a deploy captures code only from the server's --functions directory or a --code-dir; start the server with --code-dir DIR, or deploy without base_dir and upload the code as a zip (`aws lambda update-function-code --zip-file fileb://code.zip`)",
            base_dir.display()
        ))
    }

    /// Whether a request with this `Host` header may be served.
    pub fn host_allowed(&self, host: &str) -> bool {
        match &self.hosts {
            None => true,
            Some(extra) => {
                let name = host_name(host);
                is_loopback_name(&name) || extra.iter().any(|h| *h == name)
            }
        }
    }
}

/// The name in a Host header, without its port, lowercase (copied only
/// when it has capitals: this runs on every request).
fn host_name(host: &str) -> std::borrow::Cow<'_, str> {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        rest.split_once(']').map_or(host, |(addr, _)| addr)
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    let name = name.trim_end_matches('.');
    match name.bytes().any(|b| b.is_ascii_uppercase()) {
        true => name.to_ascii_lowercase().into(),
        false => name.into(),
    }
}

fn is_loopback_name(name: &str) -> bool {
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_is_refused_off_loopback() {
        let d = tempfile::tempdir().unwrap();
        let open: SocketAddr = "0.0.0.0:9000".parse().unwrap();
        assert!(matches!(
            Access::new(d.path(), AuthMode::None, open, &[]),
            Err(AccessError::Unauthenticated(_))
        ));
        assert!(Access::new(d.path(), AuthMode::Sigv4, open, &[]).is_ok());
        let v6: SocketAddr = "[::1]:0".parse().unwrap();
        assert!(Access::new(d.path(), AuthMode::None, v6, &[]).is_ok());
    }

    #[test]
    fn loopback_binds_accept_loopback_hosts_and_configured_ones() {
        let d = tempfile::tempdir().unwrap();
        let bind: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let a = Access::new(d.path(), AuthMode::None, bind, &["Virga.Internal".into()]).unwrap();
        for ok in [
            "localhost",
            "localhost:9000",
            "LOCALHOST.",
            "127.0.0.1",
            "127.0.0.1:9000",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:9000",
            "virga.internal:9000",
        ] {
            assert!(a.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9000",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "10.0.0.1:9000",
            "[::2]:9000",
            "",
        ] {
            assert!(!a.host_allowed(bad), "{bad}");
        }
        // Off loopback, the signature is the defence: any Host.
        let open: SocketAddr = "0.0.0.0:9000".parse().unwrap();
        let a = Access::new(d.path(), AuthMode::Sigv4, open, &[]).unwrap();
        assert!(a.host_allowed("evil.example"));
    }
}
