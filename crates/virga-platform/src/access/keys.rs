//! Keys in the data dir: `keys.json`, mode 0600 in a 0700 dir.
//!
//! `virga keys create/revoke` work on the file offline (a running server
//! need not be up): under a lock, the whole file is written anew and
//! renamed into place. The server reads it through a cache keyed by the
//! file's identity (inode, size, modification time), so it sees new and
//! revoked keys at its next request, for the price of one `stat`.
//!
//! A SigV4 key keeps its secret (the server needs it to compute the HMAC)
//! until it is revoked; a bearer token is kept only as its SHA-256.

use std::collections::HashMap;
use std::fs::{OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::policy::{Grant, Role};
use super::AccessError;

/// The key file's name in the data dir.
pub const KEYS_FILE: &str = "keys.json";
const LOCK_FILE: &str = "keys.lock";
const FORMAT_VERSION: u32 = 1;

/// How a key proves itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// An access key id and secret for AWS Signature V4.
    Sigv4,
    /// `Authorization: Bearer TOKEN`, for clients that cannot sign.
    Token,
}

/// A key as `virga keys ls` shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The access key id (SigV4) or the token's id.
    pub id: String,
    pub name: String,
    pub role: Role,
    pub functions: Vec<String>,
    pub kind: KeyKind,
    pub created_at: String,
    #[serde(default)]
    pub revoked_at: Option<String>,
}

/// One entry of the file.
#[derive(Clone, Serialize, Deserialize)]
struct StoredKey {
    #[serde(flatten)]
    info: KeyInfo,
    /// A SigV4 key's secret, until it is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    /// A token's SHA-256 (hex), until it is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_sha256: Option<String>,
}

#[derive(Default, Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    keys: Vec<StoredKey>,
}

/// What `create` hands out, once.
#[derive(Debug, Clone)]
pub enum NewKey {
    Sigv4 {
        info: KeyInfo,
        access_key_id: String,
        secret_access_key: String,
    },
    Token {
        info: KeyInfo,
        token: String,
    },
}

impl NewKey {
    pub fn info(&self) -> &KeyInfo {
        match self {
            NewKey::Sigv4 { info, .. } | NewKey::Token { info, .. } => info,
        }
    }
}

/// The live keys, as the server looks them up.
#[derive(Default)]
struct Active {
    /// access key id -> (secret, grant)
    sigv4: HashMap<String, (String, Grant)>,
    /// token SHA-256 (hex) -> (id, grant)
    tokens: HashMap<String, (String, Grant)>,
}

/// What identifies one version of the file on disk.
type Stamp = Option<(u64, u64, u64, i64, i64)>;

/// The keys of one data dir.
pub struct KeyStore {
    dir: PathBuf,
    cache: Mutex<Option<(Stamp, Arc<Active>)>>,
}

impl KeyStore {
    pub fn new(data_dir: &Path) -> KeyStore {
        KeyStore {
            dir: data_dir.to_path_buf(),
            cache: Mutex::new(None),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(KEYS_FILE)
    }

    /// Makes a key. `functions` empty means every function; an admin key
    /// always covers every function.
    pub fn create(
        &self,
        name: &str,
        role: Role,
        functions: &[String],
        kind: KeyKind,
    ) -> Result<NewKey, AccessError> {
        check_name(name)?;
        let functions = match (role, functions) {
            (_, []) => vec!["*".to_string()],
            (Role::Admin, f) if f.iter().any(|p| p != "*") => {
                return Err(AccessError::Invalid(
                    "an admin key covers every function: --functions is for --role invoke".into(),
                ))
            }
            (_, f) => {
                if let Some(p) = f.iter().find(|p| !valid_pattern(p)) {
                    return Err(AccessError::Invalid(format!(
                        "--functions {p:?}: a pattern is a function name with * and ? (letters, digits, -, _, .)"
                    )));
                }
                f.to_vec()
            }
        };
        self.update(|file| {
            if file
                .keys
                .iter()
                .any(|k| k.info.name == name && k.info.revoked_at.is_none())
            {
                return Err(AccessError::NameTaken(name.to_string()));
            }
            let mut id = new_id();
            while file.keys.iter().any(|k| k.info.id == id) {
                id = new_id();
            }
            let info = KeyInfo {
                id: id.clone(),
                name: name.to_string(),
                role,
                functions,
                kind,
                created_at: now(),
                revoked_at: None,
            };
            let (stored, new) = match kind {
                KeyKind::Sigv4 => {
                    let secret = base64::engine::general_purpose::STANDARD.encode(random::<30>());
                    (
                        StoredKey {
                            info: info.clone(),
                            secret: Some(secret.clone()),
                            token_sha256: None,
                        },
                        NewKey::Sigv4 {
                            info,
                            access_key_id: id,
                            secret_access_key: secret,
                        },
                    )
                }
                KeyKind::Token => {
                    let token = format!(
                        "virga_{}",
                        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<32>())
                    );
                    (
                        StoredKey {
                            info: info.clone(),
                            secret: None,
                            token_sha256: Some(virga_sigv4::sha256_hex(token.as_bytes())),
                        },
                        NewKey::Token { info, token },
                    )
                }
            };
            file.keys.push(stored);
            Ok(new)
        })
    }

    /// Revokes the key with this id, or the live key with this name; its
    /// secret is forgotten.
    pub fn revoke(&self, id_or_name: &str) -> Result<KeyInfo, AccessError> {
        self.update(|file| {
            let key = file
                .keys
                .iter_mut()
                .filter(|k| k.info.id == id_or_name || k.info.name == id_or_name)
                .min_by_key(|k| k.info.revoked_at.is_some())
                .ok_or_else(|| AccessError::NoSuchKey(id_or_name.to_string()))?;
            if key.info.revoked_at.is_some() {
                return Err(AccessError::AlreadyRevoked(key.info.id.clone()));
            }
            key.info.revoked_at = Some(now());
            key.secret = None;
            key.token_sha256 = None;
            Ok(key.info.clone())
        })
    }

    /// Every key, revoked ones included, oldest first.
    pub fn list(&self) -> Result<Vec<KeyInfo>, AccessError> {
        Ok(self.read()?.keys.into_iter().map(|k| k.info).collect())
    }

    /// The secret and grant of a live SigV4 key.
    pub fn secret(&self, access_key_id: &str) -> Result<Option<(String, Grant)>, AccessError> {
        Ok(self.active()?.sigv4.get(access_key_id).cloned())
    }

    /// The id and grant of a live bearer token.
    pub fn token(&self, token: &str) -> Result<Option<(String, Grant)>, AccessError> {
        let hash = virga_sigv4::sha256_hex(token.as_bytes());
        Ok(self.active()?.tokens.get(&hash).cloned())
    }

    /// How many keys are live.
    pub fn live(&self) -> Result<usize, AccessError> {
        let a = self.active()?;
        Ok(a.sigv4.len() + a.tokens.len())
    }

    /// Every key as stored, secrets of live keys included, by id: what a
    /// cluster's broker holds so that a key works on every node.
    pub fn export(&self) -> Result<Vec<(String, Vec<u8>)>, AccessError> {
        Ok(self
            .read()?
            .keys
            .into_iter()
            .map(|k| {
                let bytes = serde_json::to_vec(&k).expect("keys serialise");
                (k.info.id, bytes)
            })
            .collect())
    }

    /// Whether an exported key is revoked (`None`: not a key).
    pub fn exported_revoked(bytes: &[u8]) -> Option<bool> {
        serde_json::from_slice::<StoredKey>(bytes)
            .ok()
            .map(|k| k.info.revoked_at.is_some())
    }

    /// Takes a key another node exported: one unknown here is added, a
    /// revocation is applied; a revoked key never comes back to life.
    /// Returns whether the file changed.
    pub fn merge(&self, bytes: &[u8]) -> Result<bool, AccessError> {
        let incoming: StoredKey = serde_json::from_slice(bytes)
            .map_err(|e| AccessError::Invalid(format!("a shared key is unreadable: {e}")))?;
        if self.read()?.keys.iter().any(|k| {
            k.info.id == incoming.info.id
                && (k.info.revoked_at.is_some() || incoming.info.revoked_at.is_none())
        }) {
            // Known, and nothing to revoke: no write.
            return Ok(false);
        }
        self.update(
            |file| match file.keys.iter_mut().find(|k| k.info.id == incoming.info.id) {
                Some(k) if k.info.revoked_at.is_none() && incoming.info.revoked_at.is_some() => {
                    k.info.revoked_at = incoming.info.revoked_at.clone();
                    k.secret = None;
                    k.token_sha256 = None;
                    Ok(true)
                }
                Some(_) => Ok(false),
                None => {
                    file.keys.push(incoming);
                    Ok(true)
                }
            },
        )
    }

    /// The live keys, re-read when the file changed since the last look.
    fn active(&self) -> Result<Arc<Active>, AccessError> {
        let path = self.path();
        let stamp = match std::fs::metadata(&path) {
            Ok(m) => Some((m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(AccessError::Io(path, e)),
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, active)) = cache.as_ref() {
            if *s == stamp {
                return Ok(active.clone());
            }
        }
        let mut active = Active::default();
        for k in self.read()?.keys {
            if k.info.revoked_at.is_some() {
                continue;
            }
            let grant = Grant {
                role: k.info.role,
                functions: k.info.functions.clone(),
            };
            if let Some(secret) = k.secret {
                active
                    .sigv4
                    .insert(k.info.id.clone(), (secret, grant.clone()));
            }
            if let Some(hash) = k.token_sha256 {
                active.tokens.insert(hash, (k.info.id.clone(), grant));
            }
        }
        let active = Arc::new(active);
        *cache = Some((stamp, active.clone()));
        Ok(active)
    }

    fn read(&self) -> Result<KeyFile, AccessError> {
        let path = self.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(KeyFile {
                    version: FORMAT_VERSION,
                    keys: Vec::new(),
                })
            }
            Err(e) => return Err(AccessError::Io(path, e)),
        };
        let file: KeyFile =
            serde_json::from_str(&text).map_err(|e| AccessError::Corrupt(path.clone(), e))?;
        if file.version > FORMAT_VERSION {
            return Err(AccessError::Invalid(format!(
                "{} has format version {}, newer than this virga knows ({FORMAT_VERSION})",
                path.display(),
                file.version
            )));
        }
        Ok(file)
    }

    /// Read, change, write back whole and rename into place, under the lock.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut KeyFile) -> Result<T, AccessError>,
    ) -> Result<T, AccessError> {
        private_dir(&self.dir)?;
        let lock_path = self.dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| AccessError::Io(lock_path.clone(), e))?;
        lock.lock().map_err(|e| AccessError::Io(lock_path, e))?;
        let mut file = self.read()?;
        let out = change(&mut file)?;
        file.version = FORMAT_VERSION;
        let path = self.path();
        let tmp = self.dir.join(format!("{KEYS_FILE}.tmp"));
        let io = |e| AccessError::Io(tmp.clone(), e);
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        // A file left by an older virga with a wider mode is narrowed.
        f.set_permissions(Permissions::from_mode(0o600))
            .map_err(io)?;
        let text = serde_json::to_string_pretty(&file).expect("keys serialise");
        f.write_all(text.as_bytes()).map_err(io)?;
        f.write_all(b"\n").map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(|e| AccessError::Io(path.clone(), e))?;
        drop(lock);
        Ok(out)
    }
}

/// Creates `dir` if needed and makes it private (0700): it holds keys,
/// manifests with their `env`, and records.
pub fn private_dir(dir: &Path) -> Result<(), AccessError> {
    crate::create_private_dir(dir).map_err(|e| AccessError::Io(dir.to_path_buf(), e))
}

fn check_name(name: &str) -> Result<(), AccessError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(AccessError::Invalid(format!(
            "key name {name:?}: use 1 to 64 letters, digits, -, _, . or @"
        )))
    }
}

fn valid_pattern(p: &str) -> bool {
    !p.is_empty()
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*' | b'?'))
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

/// 20 characters, as AWS access key ids are: `VIRGA` and 15 of base32.
fn new_id() -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut id = String::from("VIRGA");
    for b in random::<15>() {
        id.push(ALPHABET[(b & 31) as usize] as char);
    }
    id
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore").field("dir", &self.dir).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn keys_are_created_private_and_found_until_revoked() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        let store = KeyStore::new(&data);
        assert_eq!(store.live().unwrap(), 0);
        let NewKey::Sigv4 {
            access_key_id,
            secret_access_key,
            ..
        } = store
            .create("ci", Role::Invoke, &["iris-*".into()], KeyKind::Sigv4)
            .unwrap()
        else {
            panic!("a SigV4 key")
        };
        assert_eq!(access_key_id.len(), 20);
        assert_eq!(secret_access_key.len(), 40);
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&store.path()), 0o600);
        let (secret, grant) = store.secret(&access_key_id).unwrap().unwrap();
        assert_eq!(secret, secret_access_key);
        assert_eq!(grant.role, Role::Invoke);
        assert!(grant.covers("iris-svm") && !grant.covers("echo"));

        let NewKey::Token { token, info } = store
            .create("probe", Role::Admin, &[], KeyKind::Token)
            .unwrap()
        else {
            panic!("a token")
        };
        assert_eq!(store.token(&token).unwrap().unwrap().0, info.id);
        assert!(store.token("virga_guess").unwrap().is_none());
        // The token itself is not in the file, only its hash.
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(!text.contains(&token));
        assert_eq!(store.live().unwrap(), 2);

        // Another handle (another process) revokes; this one sees it.
        let revoked = KeyStore::new(&data).revoke("ci").unwrap();
        assert_eq!(revoked.id, access_key_id);
        assert!(store.secret(&access_key_id).unwrap().is_none());
        assert!(!std::fs::read_to_string(store.path())
            .unwrap()
            .contains(&secret_access_key));
        assert!(matches!(
            store.revoke(&access_key_id),
            Err(AccessError::AlreadyRevoked(_))
        ));
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed[0].revoked_at.is_some() && listed[1].revoked_at.is_none());
        // The name is free again once revoked.
        store
            .create("ci", Role::Invoke, &[], KeyKind::Sigv4)
            .unwrap();
    }

    #[test]
    fn bad_names_patterns_and_duplicates_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let store = KeyStore::new(d.path());
        assert!(matches!(
            store.create("", Role::Admin, &[], KeyKind::Sigv4),
            Err(AccessError::Invalid(_))
        ));
        assert!(matches!(
            store.create("a b", Role::Admin, &[], KeyKind::Sigv4),
            Err(AccessError::Invalid(_))
        ));
        assert!(matches!(
            store.create("x", Role::Admin, &["echo".into()], KeyKind::Sigv4),
            Err(AccessError::Invalid(_))
        ));
        assert!(matches!(
            store.create("x", Role::Invoke, &["a/b".into()], KeyKind::Sigv4),
            Err(AccessError::Invalid(_))
        ));
        store.create("x", Role::Admin, &[], KeyKind::Sigv4).unwrap();
        assert!(matches!(
            store.create("x", Role::Admin, &[], KeyKind::Token),
            Err(AccessError::NameTaken(_))
        ));
        assert!(matches!(
            store.revoke("nobody"),
            Err(AccessError::NoSuchKey(_))
        ));
    }

    #[test]
    fn shared_keys_merge_and_revocations_win() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (
            KeyStore::new(&d.path().join("a")),
            KeyStore::new(&d.path().join("b")),
        );
        let NewKey::Token { info, token } =
            a.create("ci", Role::Invoke, &[], KeyKind::Token).unwrap()
        else {
            panic!("a token")
        };
        let live = a.export().unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(KeyStore::exported_revoked(&live[0].1), Some(false));
        assert!(b.merge(&live[0].1).unwrap(), "new on b");
        assert!(!b.merge(&live[0].1).unwrap(), "known: no write");
        assert_eq!(b.token(&token).unwrap().unwrap().0, info.id);
        a.revoke(&info.id).unwrap();
        let revoked = a.export().unwrap();
        assert_eq!(KeyStore::exported_revoked(&revoked[0].1), Some(true));
        assert!(b.merge(&revoked[0].1).unwrap());
        assert!(b.token(&token).unwrap().is_none(), "revoked on b too");
        // An old export of the live key does not bring it back.
        assert!(!b.merge(&live[0].1).unwrap());
        assert!(b.token(&token).unwrap().is_none());
        assert!(b.merge(b"not a key").is_err());
        assert_eq!(KeyStore::exported_revoked(b"{}"), None);
    }
}
