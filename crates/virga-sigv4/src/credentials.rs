//! Where a client's credentials come from, as the AWS CLI looks for them:
//! `--profile NAME`, else `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`
//! (and `AWS_SESSION_TOKEN`), else the profile `AWS_PROFILE` names (or
//! `default`) in the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`,
//! `~/.aws/credentials`) or the config file (`AWS_CONFIG_FILE`,
//! `~/.aws/config`).

use std::path::{Path, PathBuf};

use chrono::Utc;
use http::{HeaderMap, HeaderValue};

use crate::{sha256_hex, sign, SignError, UNSIGNED_PAYLOAD};

/// An access key id and its secret (and a session token, passed along).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

/// The secret never reaches a log.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn new(access_key_id: &str, secret_access_key: &str, session_token: Option<&str>) -> Self {
        Credentials {
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret_access_key.to_string(),
            session_token: session_token.map(str::to_string),
        }
    }
}

/// Why the credentials asked for are not there.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// a named profile is in neither file
    #[error("profile {profile:?} is in neither {credentials} nor {config}: add [{profile}] with aws_access_key_id and aws_secret_access_key (keys come from `virga keys create`)")]
    NoProfile {
        profile: String,
        credentials: String,
        config: String,
    },
    /// a profile lacks the key id or the secret
    #[error(
        "profile {profile:?} in {file} needs both aws_access_key_id and aws_secret_access_key"
    )]
    Incomplete { profile: String, file: String },
    /// only half of the pair is in the environment
    #[error("{0} is set but {1} is not: set both (or neither)")]
    HalfEnv(&'static str, &'static str),
    /// a file could not be read
    #[error("cannot read {0}: {1}")]
    Io(String, #[source] std::io::Error),
}

/// Credentials with the region and service to sign for.
#[derive(Debug, Clone)]
pub struct Signer {
    pub credentials: Credentials,
    pub region: String,
    pub service: String,
}

impl Signer {
    pub fn new(credentials: Credentials, region: &str, service: &str) -> Signer {
        Signer {
            credentials,
            region: region.to_string(),
            service: service.to_string(),
        }
    }

    /// Credentials from `profile`, the environment or the files (see the
    /// module's documentation), with the region of `AWS_REGION` or
    /// `AWS_DEFAULT_REGION` (else `us-east-1`). `None`: no credentials
    /// anywhere, so requests go unsigned.
    pub fn from_environment(
        profile: Option<&str>,
        service: &str,
    ) -> Result<Option<Signer>, CredentialsError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let home = var("HOME").map(PathBuf::from);
        let files = Files {
            credentials: var("AWS_SHARED_CREDENTIALS_FILE")
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials"))),
            config: var("AWS_CONFIG_FILE")
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".aws/config"))),
        };
        let credentials = resolve(profile, &var, &files)?;
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_string());
        Ok(credentials.map(|c| Signer::new(c, &region, service)))
    }

    /// Signs a request to `host` (`name[:port]`), adding the Host header
    /// when `headers` lacks it. A body that is not at hand (`None`) is
    /// signed as `UNSIGNED-PAYLOAD`.
    pub fn sign(
        &self,
        method: &str,
        host: &str,
        path: &str,
        query: Option<&str>,
        headers: &mut HeaderMap,
        body: Option<&[u8]>,
    ) -> Result<(), SignError> {
        if !headers.contains_key(http::header::HOST) {
            headers.insert(
                http::header::HOST,
                HeaderValue::from_str(host).map_err(|_| SignError::NoHost)?,
            );
        }
        let hash = match body {
            Some(b) => sha256_hex(b),
            None => {
                headers.insert(
                    "x-amz-content-sha256",
                    HeaderValue::from_static(UNSIGNED_PAYLOAD),
                );
                UNSIGNED_PAYLOAD.to_string()
            }
        };
        sign(
            method,
            path,
            query,
            headers,
            &hash,
            &self.credentials,
            &self.region,
            &self.service,
            Utc::now(),
        )
    }

    /// Signs a built `reqwest` request in place.
    #[cfg(feature = "reqwest")]
    pub fn sign_reqwest(&self, req: &mut reqwest::Request) -> Result<(), SignError> {
        let url = req.url().clone();
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(SignError::NoHost),
        };
        let body = match req.body() {
            None => Some(Vec::new()),
            Some(b) => b.as_bytes().map(<[u8]>::to_vec),
        };
        let method = req.method().as_str().to_string();
        self.sign(
            &method,
            &host,
            url.path(),
            url.query(),
            req.headers_mut(),
            body.as_deref(),
        )
    }
}

/// The two files a profile may live in.
struct Files {
    credentials: Option<PathBuf>,
    config: Option<PathBuf>,
}

fn resolve(
    profile: Option<&str>,
    var: &dyn Fn(&str) -> Option<String>,
    files: &Files,
) -> Result<Option<Credentials>, CredentialsError> {
    if let Some(p) = profile {
        return from_files(p, files)?
            .map(Some)
            .ok_or_else(|| no_profile(p, files));
    }
    match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => {
            return Ok(Some(Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: var("AWS_SESSION_TOKEN"),
            }))
        }
        (Some(_), None) => {
            return Err(CredentialsError::HalfEnv(
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
            ))
        }
        (None, Some(_)) => {
            return Err(CredentialsError::HalfEnv(
                "AWS_SECRET_ACCESS_KEY",
                "AWS_ACCESS_KEY_ID",
            ))
        }
        (None, None) => {}
    }
    match var("AWS_PROFILE") {
        Some(p) => from_files(&p, files)?
            .map(Some)
            .ok_or_else(|| no_profile(&p, files)),
        None => from_files("default", files),
    }
}

fn no_profile(profile: &str, files: &Files) -> CredentialsError {
    let show = |p: &Option<PathBuf>| {
        p.as_ref()
            .map_or("(no HOME)".to_string(), |p| p.display().to_string())
    };
    CredentialsError::NoProfile {
        profile: profile.to_string(),
        credentials: show(&files.credentials),
        config: show(&files.config),
    }
}

/// The profile's keys from the credentials file (`[name]`), else the config
/// file (`[profile name]`, or `[default]`).
fn from_files(profile: &str, files: &Files) -> Result<Option<Credentials>, CredentialsError> {
    let config_section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    for (path, section) in [
        (&files.credentials, profile.to_string()),
        (&files.config, config_section),
    ] {
        let Some(path) = path else { continue };
        let Some(text) = read_optional(path)? else {
            continue;
        };
        let Some(entries) = ini_section(&text, &section) else {
            continue;
        };
        let get = |k: &str| {
            entries
                .iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
        };
        return match (get("aws_access_key_id"), get("aws_secret_access_key")) {
            (Some(id), Some(secret)) => Ok(Some(Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: get("aws_session_token"),
            })),
            _ => Err(CredentialsError::Incomplete {
                profile: profile.to_string(),
                file: path.display().to_string(),
            }),
        };
    }
    Ok(None)
}

fn read_optional(path: &Path) -> Result<Option<String>, CredentialsError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CredentialsError::Io(path.display().to_string(), e)),
    }
}

/// `key = value` lines of `[section]` in an INI file; `None` when the
/// section is not there.
fn ini_section(text: &str, section: &str) -> Option<Vec<(String, String)>> {
    let mut inside = false;
    let mut found = false;
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            found |= inside;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                entries.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    found.then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Files {
        Files {
            credentials: Some(dir.join("credentials")),
            config: Some(dir.join("config")),
        }
    }

    #[test]
    fn the_environment_comes_before_files_and_a_named_profile_before_both() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("credentials"),
            "[default]\naws_access_key_id = DEF\naws_secret_access_key = defsecret\n\n[ci]\naws_access_key_id=CI\naws_secret_access_key=cisecret\naws_session_token = tok\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("config"),
            "[profile other]\nregion = eu-west-1\naws_access_key_id = OTHER\naws_secret_access_key = othersecret\n",
        )
        .unwrap();
        let f = files(dir.path());
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let none = env(&[]);
        let keys = env(&[
            ("AWS_ACCESS_KEY_ID", "ENV"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
        ]);
        let id = |c: Option<Credentials>| c.map(|c| c.access_key_id);
        assert_eq!(
            id(resolve(None, &none, &f).unwrap()).as_deref(),
            Some("DEF")
        );
        assert_eq!(
            id(resolve(None, &keys, &f).unwrap()).as_deref(),
            Some("ENV")
        );
        let ci = resolve(Some("ci"), &keys, &f).unwrap().unwrap();
        assert_eq!(ci.access_key_id, "CI");
        assert_eq!(ci.session_token.as_deref(), Some("tok"));
        let other = env(&[("AWS_PROFILE", "other")]);
        assert_eq!(
            id(resolve(None, &other, &f).unwrap()).as_deref(),
            Some("OTHER")
        );
        assert!(matches!(
            resolve(Some("ghost"), &none, &f),
            Err(CredentialsError::NoProfile { .. })
        ));
        let half = env(&[("AWS_ACCESS_KEY_ID", "ENV")]);
        assert!(matches!(
            resolve(None, &half, &f),
            Err(CredentialsError::HalfEnv(..))
        ));
        // No files, no variables: unsigned.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(resolve(None, &none, &files(empty.path())).unwrap(), None);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let c = Credentials::new("ID", "s3cr3t", Some("tok"));
        let shown = format!("{c:?}");
        assert!(shown.contains("ID") && !shown.contains("s3cr3t") && !shown.contains("tok"));
    }

    #[test]
    fn a_signer_adds_the_host_and_signs_missing_bodies_unsigned() {
        let s = Signer::new(
            Credentials::new("ID", "secret", None),
            "us-east-1",
            "lambda",
        );
        let mut h = HeaderMap::new();
        s.sign("GET", "localhost:9000", "/v1/functions", None, &mut h, None)
            .unwrap();
        assert_eq!(h["host"], "localhost:9000");
        assert_eq!(h["x-amz-content-sha256"], UNSIGNED_PAYLOAD);
        let auth = h["authorization"].to_str().unwrap();
        assert!(auth.contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date"));
    }
}
