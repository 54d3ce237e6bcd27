//! What a function's jail contains: decided once per deploy from the
//! manifest's command, its directory and its model.
//!
//! The jail sees the host's system directories, the function's directory at
//! `/var/task` (`LAMBDA_TASK_ROOT`), the model's directory, and whatever
//! absolute path the command names (an interpreter outside `/usr`, a script
//! given by absolute path), all read-only, each at its real (canonical)
//! path. An interpreter that is a version manager's shim (a script such as
//! pyenv's `python3`) is resolved to the real program it would run, so the
//! sandbox runs the interpreter the function was deployed with. The
//! platform's data dir is never visible: where a bind would show it, an
//! empty directory covers it.

use std::path::{Component, Path, PathBuf};

use super::jail::{Bind, JailSpec, SYSTEM_DIRS};

/// Inside every jail: the function's code.
pub const TASK_ROOT: &str = "/var/task";

/// Open files per instance (`RLIMIT_NOFILE`), Lambda's limit.
pub const MAX_OPEN_FILES: u64 = 1024;

/// The host facts a plan is made from.
#[derive(Debug)]
pub struct PlanInput<'a> {
    /// The program as resolved on the host (PATH or the manifest's directory).
    pub program: &'a Path,
    pub args: &'a [String],
    /// The version's code bundle: `/var/task`.
    pub code: &'a Path,
    /// A model file the runtime opens, if any.
    pub model: Option<&'a Path>,
    /// The platform's data dir: never visible inside.
    pub data_dir: &'a Path,
    /// The empty directory each jail mounts its root on.
    pub root: &'a Path,
    pub uid: u32,
    pub tmp_mb: u32,
}

/// The jail of one function, and how its environment's paths change.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub spec: JailSpec,
    /// Variables to set over the instance's environment.
    pub env: Vec<(String, String)>,
}

/// Makes the plan. Touches the file system only to canonicalise paths and
/// to ask a shim which program it runs.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let mut binds: Vec<Bind> = SYSTEM_DIRS.iter().map(|d| Bind::same(*d)).collect();
    let base = canonical(input.code);
    binds.push(Bind {
        source: base.clone(),
        target: TASK_ROOT.into(),
    });
    let inside = |host: &Path| -> Option<PathBuf> {
        let c = canonical(host);
        c.strip_prefix(&base)
            .ok()
            .map(|rel| Path::new(TASK_ROOT).join(rel))
    };
    // The program: inside the code, the path there; elsewhere, the real
    // program (through a shim) with its installation bound.
    let program = match inside(input.program) {
        Some(p) => p,
        None if input.program.starts_with("/proc/self/") => input.program.to_path_buf(),
        None => {
            let real = canonical(&resolve_shim(input.program));
            if !is_system(&real) {
                binds.push(Bind::same(installation_of(&real)));
            }
            real
        }
    };
    // Arguments that name host files outside the code: bound, and named by
    // their real path.
    let args = input
        .args
        .iter()
        .map(|a| {
            let p = Path::new(a);
            if !p.is_absolute() || !p.exists() {
                return a.clone();
            }
            if let Some(t) = inside(p) {
                return t.display().to_string();
            }
            let real = canonical(p);
            if !is_system(&real) {
                let dir = if real.is_dir() {
                    real.clone()
                } else {
                    real.parent().map_or(real.clone(), Path::to_path_buf)
                };
                binds.push(Bind::same(dir));
            }
            real.display().to_string()
        })
        .collect();
    let mut env = vec![
        ("LAMBDA_TASK_ROOT".to_string(), TASK_ROOT.to_string()),
        ("LAMBDA_RUNTIME_DIR".to_string(), TASK_ROOT.to_string()),
        // The only writable place.
        ("HOME".to_string(), "/tmp".to_string()),
        ("TMPDIR".to_string(), "/tmp".to_string()),
    ];
    if let Some(model) = input.model {
        let real = canonical(model);
        match inside(&real) {
            Some(t) => env.push((
                virga_spec::contract::MODEL_PATH.into(),
                t.display().to_string(),
            )),
            None => {
                if let Some(dir) = real.parent() {
                    binds.push(Bind::same(dir));
                }
                env.push((
                    virga_spec::contract::MODEL_PATH.into(),
                    real.display().to_string(),
                ));
            }
        }
    }
    binds.dedup();
    Plan {
        spec: JailSpec {
            root: input.root.to_path_buf(),
            uid: input.uid,
            gid: input.uid,
            hostname: "virga".into(),
            program,
            args,
            cwd: TASK_ROOT.into(),
            // The bundle lives in the data dir by design: it is the one
            // part of it a jail sees.
            hide: hidden(
                binds.iter().filter(|b| b.target != Path::new(TASK_ROOT)),
                &canonical(input.data_dir),
            ),
            binds,
            tmp_mb: input.tmp_mb,
            max_open_files: MAX_OPEN_FILES,
        },
        env,
    }
}

/// The data dir's subdirectory of model files the platform unpacked for
/// functions (a cluster's deployments from other nodes), one directory per
/// function revision: the one part of the data dir besides the code bundle
/// that a jail may see, its own model's directory only, read-only.
pub const UNPACKED_MODELS: &str = "unpacked-models";

/// Where binds would show the data dir (or it would show in a bind's
/// subtree), the paths inside the jail to cover.
fn hidden<'a>(binds: impl Iterator<Item = &'a Bind>, data_dir: &Path) -> Vec<PathBuf> {
    let mut hide = Vec::new();
    let unpacked = data_dir.join(UNPACKED_MODELS);
    for b in binds {
        if let Ok(rel) = data_dir.strip_prefix(&b.source) {
            hide.push(b.target.join(rel));
        } else if b.source.starts_with(data_dir) && !b.source.starts_with(&unpacked) {
            hide.push(b.target.clone());
        }
    }
    hide.sort();
    hide.dedup();
    hide
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| normalise(p))
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn is_system(p: &Path) -> bool {
    SYSTEM_DIRS.iter().any(|d| p.starts_with(d))
}

/// What to bind for a program outside the system directories: the
/// installation it belongs to (`PREFIX` for `PREFIX/bin/x`, as pyenv, nvm
/// and /opt installs lay themselves out), else its own directory.
fn installation_of(program: &Path) -> PathBuf {
    let dir = program.parent().unwrap_or(Path::new("/"));
    match (dir.file_name(), dir.parent()) {
        (Some(name), Some(prefix)) if name == "bin" && prefix != Path::new("/") => {
            prefix.to_path_buf()
        }
        _ => dir.to_path_buf(),
    }
}

/// A version manager's shim is a script that finds the real interpreter at
/// run time, with the manager's own files. For Python (what Lambda-style
/// runtimes here are written in), ask it which program it runs.
fn resolve_shim(program: &Path) -> PathBuf {
    let is_script = std::fs::read(program)
        .map(|b| b.starts_with(b"#!"))
        .unwrap_or(false);
    let is_python = program
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("python"));
    if !(is_script && is_python) {
        return program.to_path_buf();
    }
    let out = std::process::Command::new(program)
        .args(["-c", "import sys; print(sys.executable)"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let path = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            if path.is_absolute() && path.is_file() {
                path
            } else {
                program.to_path_buf()
            }
        }
        _ => program.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(
        program: &'a Path,
        args: &'a [String],
        base: &'a Path,
        data: &'a Path,
    ) -> PlanInput<'a> {
        PlanInput {
            program,
            args,
            code: base,
            model: None,
            data_dir: data,
            root: Path::new("/nonexistent/jail"),
            uid: 1_000_001,
            tmp_mb: 512,
        }
    }

    #[test]
    fn code_is_at_var_task_and_outside_paths_at_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let code = dir.path().join("fn");
        let lib = dir.path().join("opt/tool/bin");
        std::fs::create_dir_all(&code).unwrap();
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(code.join("bootstrap"), "").unwrap();
        std::fs::write(lib.join("tool"), "").unwrap();
        let script = dir.path().join("scripts/run.py");
        std::fs::create_dir_all(script.parent().unwrap()).unwrap();
        std::fs::write(&script, "").unwrap();
        let data = dir.path().join("data");
        let args = vec![
            script.display().to_string(),
            "relative.txt".to_string(),
            code.join("bootstrap").display().to_string(),
        ];
        let p = plan(&input(&lib.join("tool"), &args, &code, &data));
        let real = |p: &Path| std::fs::canonicalize(p).unwrap();
        assert_eq!(p.spec.program, real(&lib).join("tool"));
        assert!(p
            .spec
            .binds
            .contains(&Bind::same(real(&dir.path().join("opt/tool")))));
        assert!(p.spec.binds.contains(&Bind {
            source: real(&code),
            target: TASK_ROOT.into()
        }));
        assert_eq!(p.spec.args[0], real(&script).display().to_string());
        assert!(p
            .spec
            .binds
            .contains(&Bind::same(real(script.parent().unwrap()))));
        assert_eq!(p.spec.args[1], "relative.txt");
        assert_eq!(p.spec.args[2], "/var/task/bootstrap");
        let prog = plan(&input(&code.join("bootstrap"), &[], &code, &data));
        assert_eq!(prog.spec.program, Path::new("/var/task/bootstrap"));
        assert!(p.spec.hide.is_empty());
    }

    #[test]
    fn the_data_dir_is_covered_wherever_a_bind_would_show_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let code = dir.path().join("data/code/f/1");
        std::fs::create_dir_all(&code).unwrap();
        // A script beside the data dir: its directory is bound, the data
        // dir in it covered; the bundle (inside the data dir) stays visible.
        let script = dir.path().join("run.py");
        std::fs::write(&script, "").unwrap();
        let args = vec![script.display().to_string()];
        let p = plan(&input(Path::new("/proc/self/exe"), &args, &code, &data));
        let real = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(p.spec.hide, vec![real.join("data")]);
        assert_eq!(p.spec.program, Path::new("/proc/self/exe"));
    }

    #[test]
    fn an_unpacked_model_in_the_data_dir_is_bound_and_nothing_else_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let code = data.join("code/f/1");
        let unpacked = data.join(UNPACKED_MODELS).join("f/7");
        std::fs::create_dir_all(&code).unwrap();
        std::fs::create_dir_all(&unpacked).unwrap();
        std::fs::write(unpacked.join("m.onnx"), "").unwrap();
        let model = unpacked.join("m.onnx");
        let mut i = input(Path::new("/proc/self/exe"), &[], &code, &data);
        i.model = Some(&model);
        let p = plan(&i);
        let real = std::fs::canonicalize(&unpacked).unwrap();
        assert!(p.spec.binds.contains(&Bind::same(&real)));
        assert!(p.spec.hide.is_empty(), "{:?}", p.spec.hide);
        // Any other directory of the data dir stays covered.
        let other = data.join("logs");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("m.onnx"), "").unwrap();
        let model = other.join("m.onnx");
        i.model = Some(&model);
        let p = plan(&i);
        let real = std::fs::canonicalize(&other).unwrap();
        assert_eq!(p.spec.hide, vec![real]);
    }

    #[test]
    fn the_model_is_bound_and_its_path_made_real() {
        let dir = tempfile::tempdir().unwrap();
        let code = dir.path().join("functions");
        let models = dir.path().join("models");
        std::fs::create_dir_all(&code).unwrap();
        std::fs::create_dir_all(&models).unwrap();
        std::fs::write(models.join("m.onnx"), "").unwrap();
        let model = code.join("../models/m.onnx");
        let mut i = input(Path::new("/proc/self/exe"), &[], &code, Path::new("/d"));
        i.model = Some(&model);
        let p = plan(&i);
        let real = std::fs::canonicalize(&models).unwrap();
        assert!(p.spec.binds.contains(&Bind::same(&real)));
        assert!(p.env.contains(&(
            virga_spec::contract::MODEL_PATH.to_string(),
            real.join("m.onnx").display().to_string()
        )));
    }

    #[test]
    fn installations_are_found_by_their_bin_directory() {
        assert_eq!(
            installation_of(Path::new("/root/.pyenv/versions/3.11.7/bin/python3.11")),
            Path::new("/root/.pyenv/versions/3.11.7")
        );
        assert_eq!(
            installation_of(Path::new("/srv/tools/run")),
            Path::new("/srv/tools")
        );
        assert_eq!(installation_of(Path::new("/bin/sh")), Path::new("/bin"));
    }
}
