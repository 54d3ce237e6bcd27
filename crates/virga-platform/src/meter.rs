//! The meter: turns each finished invocation into a record (SQLite), metrics
//! (Prometheus) and Lambda's `REPORT` log line.

use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use virga_spec::InvocationRecord;

use crate::store::Store;

pub struct Meter {
    store: Arc<Store>,
}

/// The process-wide Prometheus recorder (`metrics` has one global recorder).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .as_ref()
}

impl Meter {
    pub fn new(store: Arc<Store>) -> Self {
        prometheus();
        Meter { store }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Records a finished invocation. Never blocks on I/O.
    pub fn observe(&self, r: InvocationRecord) {
        let function = r.function.clone();
        let status = r.status.as_str();
        metrics::counter!("virga_invocations_total", "function" => function.clone(), "status" => status)
            .increment(1);
        if r.cold {
            metrics::counter!("virga_cold_starts_total", "function" => function.clone())
                .increment(1);
        }
        if let Some(init) = r.init_ms {
            metrics::histogram!("virga_init_duration_ms", "function" => function.clone())
                .record(init);
        }
        metrics::histogram!("virga_invocation_duration_ms", "function" => function.clone())
            .record(r.duration_ms);
        metrics::histogram!("virga_queue_duration_ms", "function" => function).record(r.queue_ms);
        self.store.insert(r);
    }
}

/// Lambda's `REPORT` line for a record.
pub fn report_line(r: &InvocationRecord) -> String {
    let mut line = format!(
        "REPORT RequestId: {}\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB",
        r.request_id,
        r.duration_ms,
        r.billed_ms,
        r.memory_mb,
        r.max_memory_mb.unwrap_or(0),
    );
    if let Some(init) = r.init_ms {
        line.push_str(&format!("\tInit Duration: {init:.2} ms"));
    }
    if r.status == virga_spec::Status::Timeout {
        line.push_str("\tStatus: timeout");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use virga_spec::{Status, Trigger};

    #[test]
    fn report_line_has_lambdas_fields_and_init_only_when_cold() {
        let mut r = InvocationRecord {
            request_id: "abc".into(),
            function: "f".into(),
            version: "1".into(),
            instance_id: None,
            trigger: Trigger::Http,
            cold: false,
            status: Status::Success,
            error_type: None,
            queue_ms: 0.0,
            init_ms: None,
            duration_ms: 1.234,
            billed_ms: 2,
            memory_mb: 512,
            max_memory_mb: Some(31),
            limits_enforced: true,
            payload_bytes: 0,
            response_bytes: 0,
            received_at: String::new(),
            finished_at: String::new(),
            split: Default::default(),
            mode: Default::default(),
            batch_size: 1,
            vcpu: None,
            task_started_at: None,
            caller_gone: false,
        };
        assert_eq!(
            report_line(&r),
            "REPORT RequestId: abc\tDuration: 1.23 ms\tBilled Duration: 2 ms\tMemory Size: 512 MB\tMax Memory Used: 31 MB"
        );
        r.init_ms = Some(40.0);
        assert!(report_line(&r).ends_with("\tInit Duration: 40.00 ms"));
    }
}
