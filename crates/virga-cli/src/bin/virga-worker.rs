//! `virga-worker`: virga's built-in Rust runtime, a valid custom-runtime
//! `bootstrap`. The handler is chosen by `_HANDLER` (Lambda's variable):
//! `echo` (default) returns each event unchanged.

use std::process::ExitCode;

use virga_worker::{Echo, FunctionError};

fn main() -> ExitCode {
    let handler = std::env::var("_HANDLER").unwrap_or_else(|_| "echo".into());
    let result = virga_worker::run(|| match handler.as_str() {
        "" | "echo" => Ok(Echo),
        other => Err(FunctionError::new(
            "Runtime.HandlerNotFound",
            format!("unknown handler {other:?}: virga-worker knows \"echo\""),
        )),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("virga-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
