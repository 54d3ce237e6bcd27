//! Answers every event with the event itself, through `lambda_runtime`'s
//! own loop (`invocation/next`, then `invocation/{id}/response`, each its
//! own request), as a Rust function deployed to Lambda does.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<Value, Error>(event.payload)
    }))
    .await
}
