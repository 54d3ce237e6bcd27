//! The `ort` engine: ONNX graphs run by onnxruntime (through the `ort`
//! crate), with everything around the graph shared with tract
//! ([`crate::onnx`]).
//!
//! Built with the `ort` feature only. The onnxruntime shared library is not
//! linked: it is loaded when the first `ort` model is, from the first of
//! 1. `ORT_DYLIB_PATH` (the library file);
//! 2. `onnxruntime/` beside the model (`models/onnxruntime/`, where
//!    `virga models pull --engine ort` extracts it from the PyPI
//!    `onnxruntime` wheel);
//! 3. `models/onnxruntime/` under the current directory or one of its parents.
//!
//! A directory holds `libonnxruntime.so` or `libonnxruntime.so.<version>`.
//! The library must be onnxruntime [`ORT_VERSION`] or newer (the API level
//! the engine is built for). Each session runs with `threads` intra-op
//! threads; a missing or unusable library is an [`EngineError::Unavailable`]
//! that says how to get one, never a panic.

use std::path::{Path, PathBuf};

use crate::EngineError;

/// The onnxruntime release the engine is built against (API level 31); the
/// library must be this or newer. `virga models pull --engine ort` fetches it.
pub const ORT_VERSION: &str = "1.31";

/// How to get the library.
pub const PULL_HINT: &str =
    "run `virga models pull --engine ort`, or set ORT_DYLIB_PATH to a libonnxruntime.so";

/// The error of a build without the `ort` feature.
pub fn not_built() -> EngineError {
    EngineError::Unavailable(
        "engine \"ort\": built without the ort feature: rebuild with --features ort (or use engine = \"tract\")"
            .into(),
    )
}

/// Whether `name` is the onnxruntime library (`libonnxruntime.so`,
/// `libonnxruntime.so.1.31.1`, `libonnxruntime.1.31.1.dylib`), and not one
/// of its provider libraries.
fn is_library(name: &str) -> bool {
    let base = format!(
        "{}onnxruntime{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    name == base
        || name.starts_with(&format!("{base}."))
        || (name.starts_with(&format!("{}onnxruntime.", std::env::consts::DLL_PREFIX))
            && name.ends_with(std::env::consts::DLL_SUFFIX))
}

/// The library in `dir`, if any: the plain name, else the highest version.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(is_library)
        })
        .collect();
    // The unversioned name first, then the highest version.
    found.sort_by_key(|p| std::cmp::Reverse(version_key(p)));
    found.sort_by_key(|p| !version_key(p).is_empty());
    found.into_iter().next()
}

fn version_key(p: &Path) -> Vec<u64> {
    p.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The directories searched for the library, for a model at `model`, in order
/// (after `ORT_DYLIB_PATH`).
pub fn search_dirs(model: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![model.parent().unwrap_or(Path::new(".")).join("onnxruntime")];
    if let Ok(cwd) = std::env::current_dir() {
        dirs.extend(
            cwd.ancestors()
                .map(|d| d.join("models").join("onnxruntime")),
        );
    }
    dirs.dedup();
    dirs
}

/// The onnxruntime library to load for the model at `model` (see the module
/// documentation for where it is looked for).
pub fn find_library(model: &Path) -> Result<PathBuf, EngineError> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(EngineError::Unavailable(format!(
                "engine \"ort\": ORT_DYLIB_PATH is {} but there is no such file: {PULL_HINT}",
                p.display()
            )))
        };
    }
    let dirs = search_dirs(model);
    dirs.iter().find_map(|d| library_in(d)).ok_or_else(|| {
        EngineError::Unavailable(format!(
            "engine \"ort\" needs the onnxruntime {ORT_VERSION} library and found none (looked in {}): {PULL_HINT}",
            dirs.iter()
                .take(3)
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

#[cfg(feature = "ort")]
pub(crate) use engine::load_graph;

#[cfg(feature = "ort")]
mod engine {
    use std::path::Path;
    use std::sync::Mutex;

    use ort::environment::Environment;
    use ort::session::{Session, SessionInputValue};
    use ort::value::{Tensor, ValueType};

    use super::{find_library, PULL_HINT};
    use crate::onnx::{Graph, GraphRequest, Input, LoadedGraph, Output};
    use crate::EngineError;

    /// The process's onnxruntime environment, made on the first load that
    /// finds a library (a failed attempt is retried on the next load).
    static ENV: Mutex<Option<Environment>> = Mutex::new(None);

    fn environment(model: &Path) -> Result<Environment, EngineError> {
        let mut env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = env.as_ref() {
            return Ok(e.clone());
        }
        let lib = find_library(model)?;
        // ort resolves a relative path against the executable's directory.
        let lib = std::fs::canonicalize(&lib).unwrap_or(lib);
        let built = ort::init_from(&lib)
            .map_err(|e| {
                EngineError::Unavailable(format!(
                    "engine \"ort\": cannot load the onnxruntime library: {e}: {PULL_HINT}"
                ))
            })?
            .with_name("virga")
            .build()
            .map_err(|e| {
                EngineError::Unavailable(format!(
                    "engine \"ort\": onnxruntime ({}) did not start: {e}",
                    lib.display()
                ))
            })?;
        *env = Some(built.clone());
        Ok(built)
    }

    /// A graph run by an onnxruntime session (one run at a time).
    struct OrtGraph {
        session: Mutex<Session>,
    }

    fn inference(e: ort::Error) -> EngineError {
        EngineError::inference(e)
    }

    impl Graph for OrtGraph {
        // ort runs a session with `&mut`: calls wait for its lock.
        fn concurrent(&self) -> bool {
            false
        }

        fn run(&self, inputs: Vec<Input>) -> Result<Output, EngineError> {
            let values = inputs
                .into_iter()
                .map(|input| {
                    Ok(match input {
                        Input::F32(shape, v) => SessionInputValue::from(
                            Tensor::from_array((shape, v)).map_err(inference)?,
                        ),
                        Input::I64(shape, v) => SessionInputValue::from(
                            Tensor::from_array((shape, v)).map_err(inference)?,
                        ),
                    })
                })
                .collect::<Result<Vec<_>, EngineError>>()?;
            let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
            let outputs = session.run(values.as_slice()).map_err(inference)?;
            let (shape, values) = outputs[0].try_extract_tensor::<f32>().map_err(inference)?;
            Ok(Output {
                shape: shape.iter().map(|&d| d.max(0) as usize).collect(),
                values: values.to_vec(),
            })
        }
    }

    /// The dims of a graph input or output (`None` where not fixed).
    fn dims(t: &ValueType) -> Vec<Option<usize>> {
        match t {
            ValueType::Tensor { shape, .. } => {
                shape.iter().map(|&d| usize::try_from(d).ok()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Opens `req.path` in an onnxruntime session with `req.threads` intra-op
    /// threads. The graph's own input shapes stand (onnxruntime takes any
    /// size along a symbolic dimension).
    pub(crate) fn load_graph(req: GraphRequest) -> Result<LoadedGraph, EngineError> {
        let env = environment(req.path)?;
        let format = |e: ort::Error| EngineError::format(req.path.display().to_string(), e);
        let session = Session::builder(&env)
            .map_err(format)?
            .with_intra_threads(req.threads)
            .map_err(|e| format(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| format(e.into()))?
            .commit_from_file(req.path)
            .map_err(format)?;
        let input_dims = session
            .inputs()
            .first()
            .map(|i| dims(i.dtype()))
            .unwrap_or_default();
        let output_width = session
            .outputs()
            .first()
            .and_then(|o| dims(o.dtype()).get(1).copied().flatten());
        Ok(LoadedGraph {
            graph: Box::new(OrtGraph {
                session: Mutex::new(session),
            }),
            input_dims,
            output_width,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_is_found_by_name_and_the_providers_are_not() {
        assert!(is_library("libonnxruntime.so"));
        assert!(is_library("libonnxruntime.so.1.31.1"));
        assert!(!is_library("libonnxruntime_providers_shared.so"));
        assert!(!is_library("onnxruntime.py"));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(library_in(dir.path()), None);
        for name in [
            "libonnxruntime.so.1.9.0",
            "libonnxruntime.so.1.31.1",
            "libonnxruntime_providers_shared.so",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(
            library_in(dir.path()).unwrap().file_name().unwrap(),
            "libonnxruntime.so.1.31.1"
        );
    }

    #[test]
    fn a_missing_library_says_how_to_get_one() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = search_dirs(&dir.path().join("m.onnx"));
        assert_eq!(dirs[0], dir.path().join("onnxruntime"));
        let e = EngineError::Unavailable(format!("x: {PULL_HINT}")).to_string();
        assert!(e.contains("virga models pull --engine ort"), "{e}");
        assert!(not_built().to_string().contains("--features ort"));
    }
}
