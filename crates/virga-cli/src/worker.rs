//! `virga worker`: virga's built-in Rust runtime, a valid custom-runtime
//! `bootstrap`, and what a manifest's `command = ["virga-worker"]` and
//! `runtime = "model"` run (the platform starts its own executable with this
//! subcommand). The handler is chosen by `_HANDLER` (Lambda's variable):
//! `echo` (default) returns each event unchanged; `model` hosts the model
//! named by `VIRGA_MODEL_*` (set by the platform for `runtime = "model"`).

use std::process::ExitCode;

use virga_worker::model::{ModelConfig, ModelHandler};
use virga_worker::{Context, Echo, FunctionError, Handler};

/// The handlers this runtime hosts.
enum Builtin {
    Echo(Echo),
    Model(Box<ModelHandler>),
}

impl Handler for Builtin {
    fn handle(&mut self, event: &[u8], ctx: &Context) -> Result<Vec<u8>, FunctionError> {
        match self {
            Builtin::Echo(h) => h.handle(event, ctx),
            Builtin::Model(h) => h.handle(event, ctx),
        }
    }
}

/// Runs until the Runtime API goes away; no async runtime of its own.
pub fn main() -> ExitCode {
    let handler = std::env::var("_HANDLER").unwrap_or_else(|_| "echo".into());
    let init = || match handler.as_str() {
        "" | "echo" => Ok(Builtin::Echo(Echo)),
        "model" => Ok(Builtin::Model(Box::new(ModelHandler::load(
            &ModelConfig::from_env()?,
        )?))),
        other => Err(FunctionError::new(
            "Runtime.HandlerNotFound",
            format!("unknown handler {other:?}: the built-in runtime knows \"echo\" and \"model\""),
        )),
    };
    if std::env::var(virga_spec::contract::SNAP_START).as_deref()
        == Ok(virga_spec::contract::SNAP_START_TEMPLATE)
    {
        return template(init);
    }
    // One load shared by the polling threads, except for an engine whose
    // calls wait for each other: its copies load in parallel from the start.
    let one_at_a_time = std::env::var(virga_spec::contract::MODEL_ENGINE).as_deref() == Ok("ort");
    let result = if one_at_a_time {
        virga_worker::run(init)
    } else {
        virga_worker::run_shared(init, |h| match h {
            Builtin::Echo(_) => Some(Builtin::Echo(Echo)),
            Builtin::Model(m) => m.share().map(|m| Builtin::Model(Box::new(m))),
        })
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("virga worker: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A snap-start template: loads and warms the model, forks instances on the
/// platform's orders; a forked child serves as any instance.
fn template(init: impl Fn() -> Result<Builtin, FunctionError>) -> ExitCode {
    // tokenizers' batch encoding would start a rayon pool, whose threads a
    // child would not have: a template owns no thread but its own.
    std::env::set_var("TOKENIZERS_PARALLELISM", "false");
    let handler = match init() {
        Ok(h) => h,
        Err(e) => {
            if let Ok(client) = virga_worker::RuntimeClient::from_env() {
                let _ = client.init_error(&e);
            }
            eprintln!("virga worker: {}: {}", e.error_type, e.message);
            return ExitCode::FAILURE;
        }
    };
    if let Builtin::Model(m) = &handler {
        m.warm();
    }
    let result = virga_worker::template::serve(handler).and_then(|mut h| {
        if let Builtin::Model(m) = &mut h {
            m.forked();
        }
        virga_worker::serve_built(h)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("virga worker: {e}");
            ExitCode::FAILURE
        }
    }
}
