//! Code bundles: a function's code, captured at deploy and kept per version
//! in the data dir (`code/<function>/<version>/`), as Lambda keeps the
//! `ZipFile` it was given. Instances run from their version's bundle (seen
//! read-only at `/var/task` inside the sandbox), so editing, moving or
//! deleting the source directory after a deploy changes nothing until the
//! next deploy, and a function never sees the other manifests (and their
//! `env` secrets) that share its directory.
//!
//! A bundle comes from a directory on the platform's host (the manifest's,
//! or its `code = "dir"`) or from a zip archive uploaded through the API.
//! Both are bounded (Lambda's 250 MB unzipped) and checked for entries that
//! would land outside the bundle.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// Lambda's limit on a function's unzipped code.
pub const MAX_CODE_BYTES: u64 = 250 * 1024 * 1024;
/// Most files and directories in one bundle.
pub const MAX_CODE_ENTRIES: usize = 20_000;

/// Why a bundle could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("the code at {dir} is larger than {MAX_CODE_BYTES} bytes (Lambda's unzipped limit): point `code` at a smaller directory")]
    TooLarge { dir: String },
    #[error("the code at {dir} has more than {MAX_CODE_ENTRIES} files: point `code` at a smaller directory")]
    TooManyFiles { dir: String },
    #[error("the zip archive is not valid: {0}")]
    BadZip(String),
    #[error("the zip archive's entry {0:?} would land outside the function's code")]
    UnsafeEntry(String),
    #[error("cannot read or write the code ({path}): {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CodeError + '_ {
    move |source| CodeError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Where bundles live.
#[derive(Debug, Clone)]
pub struct CodeStore {
    root: PathBuf,
}

impl CodeStore {
    pub fn new(data_dir: &Path) -> CodeStore {
        CodeStore {
            root: data_dir.join("code"),
        }
    }

    /// What a bundle must never contain: the data dir itself.
    pub fn private_paths(&self) -> Vec<PathBuf> {
        self.root
            .parent()
            .and_then(|d| fs::canonicalize(d).ok())
            .into_iter()
            .collect()
    }

    /// The bundle of one version.
    pub fn dir(&self, function: &str, version: u64) -> PathBuf {
        self.root.join(function).join(version.to_string())
    }

    /// The digest of a version's bundle, if it exists.
    pub fn digest(&self, function: &str, version: u64) -> Option<String> {
        fs::read_to_string(self.digest_file(function, version)).ok()
    }

    fn digest_file(&self, function: &str, version: u64) -> PathBuf {
        self.root.join(function).join(format!("{version}.sha256"))
    }

    /// Captures `source` (minus what [`Exclude`] names) into a staging
    /// directory; [`CodeStore::commit`] makes it a version.
    pub fn stage_dir(
        &self,
        function: &str,
        source: &Path,
        exclude: &Exclude,
    ) -> Result<Staged, CodeError> {
        let staged = self.staging(function)?;
        let mut budget = Budget::new(source);
        let mut hash = Sha256::new();
        copy_tree(
            source,
            &staged.dir,
            Path::new(""),
            exclude,
            &mut budget,
            &mut hash,
        )
        .inspect_err(|_| {
            let _ = fs::remove_dir_all(&staged.dir);
        })?;
        Ok(Staged {
            digest: hex(hash.finalize().as_slice()),
            ..staged
        })
    }

    /// An empty bundle.
    pub fn stage_empty(&self, function: &str) -> Result<Staged, CodeError> {
        let staged = self.staging(function)?;
        Ok(Staged {
            digest: hex(Sha256::new().finalize().as_slice()),
            ..staged
        })
    }

    /// Unpacks an uploaded zip archive into a staging directory.
    pub fn stage_zip(&self, function: &str, zip: &[u8]) -> Result<Staged, CodeError> {
        let staged = self.staging(function)?;
        let result = unzip(zip, &staged.dir);
        if result.is_err() {
            let _ = fs::remove_dir_all(&staged.dir);
        }
        Ok(Staged {
            digest: result?,
            ..staged
        })
    }

    fn staging(&self, function: &str) -> Result<Staged, CodeError> {
        let parent = self.root.join(function);
        fs::create_dir_all(&parent).map_err(io_err(&parent))?;
        let dir = parent.join(format!(".staging-{}", uuid::Uuid::new_v4()));
        fs::create_dir(&dir).map_err(io_err(&dir))?;
        readable_dir(&dir)?;
        Ok(Staged {
            dir,
            digest: String::new(),
        })
    }

    /// Makes a staged bundle the code of `version` (replacing a leftover of
    /// an earlier, failed deploy) and drops bundles older than the one
    /// before it, which instances still draining may be running.
    pub fn commit(
        &self,
        function: &str,
        version: u64,
        staged: Staged,
    ) -> Result<PathBuf, CodeError> {
        let dest = self.dir(function, version);
        if dest.exists() {
            fs::remove_dir_all(&dest).map_err(io_err(&dest))?;
        }
        fs::rename(&staged.dir, &dest).map_err(io_err(&dest))?;
        let digest = self.digest_file(function, version);
        fs::write(&digest, &staged.digest).map_err(io_err(&digest))?;
        self.prune(function, version.saturating_sub(1));
        Ok(dest)
    }

    /// Discards a staged bundle that was not needed.
    pub fn discard(&self, staged: Staged) {
        let _ = fs::remove_dir_all(staged.dir);
    }

    /// Removes every bundle of `function` older than `keep_from`.
    fn prune(&self, function: &str, keep_from: u64) {
        let Ok(entries) = fs::read_dir(self.root.join(function)) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let version = name.trim_end_matches(".sha256").parse::<u64>();
            if matches!(version, Ok(v) if v < keep_from) {
                let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
            }
        }
    }

    /// Removes every bundle of a deleted function.
    pub fn remove(&self, function: &str) {
        let _ = fs::remove_dir_all(self.root.join(function));
    }
}

/// A bundle made but not yet a version.
#[derive(Debug)]
pub struct Staged {
    dir: PathBuf,
    /// SHA-256 over every path, kind and content: equal code, equal digest.
    pub digest: String,
}

/// What a bundle taken from a directory leaves out.
#[derive(Debug, Default)]
pub struct Exclude {
    /// Function manifests (`*.toml`) at the top: a directory of manifests
    /// shares itself, secrets included, with each of them otherwise.
    pub top_level_manifests: bool,
    /// Paths never copied (the platform's data dir when it sits inside).
    pub paths: Vec<PathBuf>,
}

impl Exclude {
    fn skips(&self, source: &Path, rel: &Path, is_dir: bool) -> bool {
        let top = rel.components().count() == 1;
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        (top && name == ".git")
            || (top && !is_dir && self.top_level_manifests && name.ends_with(".toml"))
            || self
                .paths
                .iter()
                .any(|p| fs::canonicalize(source.join(rel)).is_ok_and(|c| c.starts_with(p)))
    }
}

struct Budget {
    dir: String,
    bytes: u64,
    entries: usize,
}

impl Budget {
    fn new(dir: &Path) -> Budget {
        Budget {
            dir: dir.display().to_string(),
            bytes: 0,
            entries: 0,
        }
    }

    fn take(&mut self, bytes: u64) -> Result<(), CodeError> {
        self.bytes += bytes;
        self.entries += 1;
        if self.bytes > MAX_CODE_BYTES {
            return Err(CodeError::TooLarge {
                dir: self.dir.clone(),
            });
        }
        if self.entries > MAX_CODE_ENTRIES {
            return Err(CodeError::TooManyFiles {
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }
}

/// Copies `src/rel` into `dst/rel`, in name order (so the digest is stable):
/// files readable by every user (the function runs as its own), symlinks
/// as they are (inside a sandbox they resolve against its read-only root).
fn copy_tree(
    src: &Path,
    dst: &Path,
    rel: &Path,
    exclude: &Exclude,
    budget: &mut Budget,
    hash: &mut Sha256,
) -> Result<(), CodeError> {
    let here = src.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&here)
        .map_err(io_err(&here))?
        .collect::<Result<_, _>>()
        .map_err(io_err(&here))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let rel = rel.join(e.file_name());
        let from = src.join(&rel);
        let to = dst.join(&rel);
        let kind = e.file_type().map_err(io_err(&from))?;
        if exclude.skips(src, &rel, kind.is_dir()) {
            continue;
        }
        let name = rel.to_string_lossy();
        if kind.is_symlink() {
            budget.take(0)?;
            let target = fs::read_link(&from).map_err(io_err(&from))?;
            hash.update(format!("l\0{name}\0{}\0", target.display()));
            symlink(&target, &to).map_err(io_err(&to))?;
        } else if kind.is_dir() {
            budget.take(0)?;
            hash.update(format!("d\0{name}\0"));
            fs::create_dir(&to).map_err(io_err(&to))?;
            readable_dir(&to)?;
            copy_tree(src, dst, &rel, exclude, budget, hash)?;
        } else if kind.is_file() {
            let meta = e.metadata().map_err(io_err(&from))?;
            budget.take(meta.len())?;
            hash.update(format!("f\0{name}\0{}\0", meta.len()));
            copy_hashing(&from, &to, meta.len(), hash)?;
            readable_file(&to, meta.permissions().mode() & 0o111 != 0)?;
        }
        // Sockets, fifos and devices are not code.
    }
    Ok(())
}

/// Copies the file `from` (of `len` bytes when it was listed) to `to` in
/// chunks, hashing what it copies: a model of gigabytes passes through a
/// small buffer, not the platform's memory.
fn copy_hashing(from: &Path, to: &Path, len: u64, hash: &mut Sha256) -> Result<(), CodeError> {
    let mut src = fs::File::open(from).map_err(io_err(from))?;
    let mut dst = fs::File::create(to).map_err(io_err(to))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut copied = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(from)(e)),
        };
        copied += n as u64;
        if copied > len {
            break;
        }
        hash.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(io_err(to))?;
    }
    // The digest names the length first: a file that changed size while
    // it was copied would get a digest of something that never existed.
    if copied != len {
        return Err(io_err(from)(io::Error::other(
            "the file changed size while it was copied: deploy again once it is written",
        )));
    }
    Ok(())
}

/// Unpacks `zip` into `dst`; returns the digest of what it wrote.
fn unzip(zip: &[u8], dst: &Path) -> Result<String, CodeError> {
    let mut archive =
        zip::ZipArchive::new(io::Cursor::new(zip)).map_err(|e| CodeError::BadZip(e.to_string()))?;
    let mut budget = Budget::new(Path::new("the zip archive"));
    let mut names: Vec<(String, usize)> = (0..archive.len())
        .map(|i| {
            let f = archive
                .by_index_raw(i)
                .map_err(|e| CodeError::BadZip(e.to_string()))?;
            let name = f.name().map_err(|e| CodeError::BadZip(e.to_string()))?;
            Ok((name.to_string(), i))
        })
        .collect::<Result<_, _>>()?;
    names.sort();
    let mut hash = Sha256::new();
    for (name, i) in names {
        let rel = safe_relative(&name).ok_or_else(|| CodeError::UnsafeEntry(name.clone()))?;
        let mut file = archive
            .by_index(i)
            .map_err(|e| CodeError::BadZip(e.to_string()))?;
        let to = dst.join(&rel);
        if file.is_dir() {
            budget.take(0)?;
            hash.update(format!("d\0{}\0", rel.display()));
            fs::create_dir_all(&to).map_err(io_err(&to))?;
            readable_dir(&to)?;
            continue;
        }
        if file.is_symlink() {
            return Err(CodeError::UnsafeEntry(name));
        }
        budget.take(file.size())?;
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        // Read at most what the budget still allows: the declared size of an
        // entry is the archive's word, not a promise.
        let mut bytes = Vec::new();
        (&mut file)
            .take(MAX_CODE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| CodeError::BadZip(e.to_string()))?;
        if bytes.len() as u64 > file.size() {
            return Err(CodeError::BadZip(format!("{name}: larger than it says")));
        }
        hash.update(format!("f\0{}\0{}\0", rel.display(), bytes.len()));
        hash.update(&bytes);
        fs::write(&to, &bytes).map_err(io_err(&to))?;
        let exec = file.unix_mode().is_some_and(|m| m & 0o111 != 0);
        readable_file(&to, exec)?;
    }
    Ok(hex(hash.finalize().as_slice()))
}

/// A zip entry's name as a path that stays inside the bundle, or `None`.
fn safe_relative(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

fn readable_dir(dir: &Path) -> Result<(), CodeError> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(io_err(dir))
}

fn readable_file(file: &Path, exec: bool) -> Result<(), CodeError> {
    let mode = if exec { 0o755 } else { 0o644 };
    fs::set_permissions(file, fs::Permissions::from_mode(mode)).map_err(io_err(file))
}

/// The SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(Sha256::digest(bytes).as_slice())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        for (name, body) in entries {
            w.start_file(
                *name,
                zip::write::SimpleFileOptions::default().unix_permissions(0o755),
            )
            .unwrap();
            w.write_all(body).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn a_directory_bundle_leaves_out_manifests_git_and_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("fns");
        fs::create_dir_all(src.join("lib")).unwrap();
        fs::create_dir_all(src.join(".git")).unwrap();
        fs::create_dir_all(src.join("data")).unwrap();
        fs::write(src.join("handler.py"), "print(1)").unwrap();
        fs::write(src.join("lib/util.py"), "x = 1").unwrap();
        fs::write(src.join("other.toml"), "env = { SECRET = \"s\" }").unwrap();
        fs::write(src.join("lib/config.toml"), "kept").unwrap();
        fs::write(src.join("data/virga.db"), "db").unwrap();
        let store = CodeStore::new(&dir.path().join("store"));
        let exclude = Exclude {
            top_level_manifests: true,
            paths: vec![fs::canonicalize(src.join("data")).unwrap()],
        };
        let staged = store.stage_dir("f", &src, &exclude).unwrap();
        let digest = staged.digest.clone();
        let code = store.commit("f", 1, staged).unwrap();
        assert_eq!(
            fs::read_to_string(code.join("handler.py")).unwrap(),
            "print(1)"
        );
        assert!(code.join("lib/util.py").exists());
        assert!(
            code.join("lib/config.toml").exists(),
            "only top-level manifests go"
        );
        assert!(!code.join("other.toml").exists());
        assert!(!code.join(".git").exists());
        assert!(!code.join("data").exists());
        assert_eq!(store.digest("f", 1).unwrap(), digest);
        // Same code, same digest; changed code, another.
        let again = store.stage_dir("f", &src, &exclude).unwrap();
        assert_eq!(again.digest, digest);
        store.discard(again);
        fs::write(src.join("handler.py"), "print(2)").unwrap();
        let changed = store.stage_dir("f", &src, &exclude).unwrap();
        assert_ne!(changed.digest, digest);
        store.commit("f", 2, changed).unwrap();
        store
            .commit("f", 3, store.stage_dir("f", &src, &exclude).unwrap())
            .unwrap();
        assert!(
            !store.dir("f", 1).exists(),
            "versions before the previous one go"
        );
        assert!(store.dir("f", 2).exists() && store.dir("f", 3).exists());
        let mode = fs::metadata(code.parent().unwrap().join("3/handler.py"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn a_zip_unpacks_and_entries_that_escape_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = CodeStore::new(dir.path());
        let ok = zip_of(&[("bootstrap", b"#!/bin/sh\n"), ("lib/a.py", b"x")]);
        let staged = store.stage_zip("f", &ok).unwrap();
        let code = store.commit("f", 1, staged).unwrap();
        assert!(code.join("lib/a.py").exists());
        let mode = fs::metadata(code.join("bootstrap"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        for bad in ["../evil", "/etc/passwd", "a/../../evil"] {
            let z = zip_of(&[(bad, b"x")]);
            assert!(
                matches!(store.stage_zip("f", &z), Err(CodeError::UnsafeEntry(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            store.stage_zip("f", b"not a zip"),
            Err(CodeError::BadZip(_))
        ));
        // Nothing half-made is left behind.
        let left: Vec<_> = fs::read_dir(dir.path().join("code/f"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".staging"))
            .collect();
        assert!(left.is_empty());
    }
}
