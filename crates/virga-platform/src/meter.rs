//! The meter: turns each finished invocation into a record (SQLite), metrics
//! (Prometheus) and Lambda's `REPORT` log line.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use metrics::{Counter, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use virga_spec::InvocationRecord;

use crate::store::Store;

pub struct Meter {
    store: Arc<Store>,
    /// Where a cluster node sends its records on to the other nodes.
    sink: Option<tokio::sync::mpsc::Sender<InvocationRecord>>,
    /// Handles of each function's metrics, by function name.
    metrics: RwLock<HashMap<String, Arc<FunctionMetrics>>>,
}

/// Histogram buckets (seconds) of every `*_seconds` metric: from a warm
/// no-op invocation (sub-millisecond) to Lambda's 15-minute limit.
const BUCKETS_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0,
];

/// A gauge of a function deleted (or a queue emptied) for this long is
/// dropped from `/metrics`; live ones are set at every scrape.
const GAUGE_IDLE: Duration = Duration::from_secs(60);

/// The process-wide Prometheus recorder (`metrics` has one global recorder).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS_SECONDS)
                .ok()?
                .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
                .install_recorder()
                .ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// HELP text and units of every metric the platform exports.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "virga_invocations_total",
        "Invocations finished, by function and status (success, error, timeout, throttled)."
    );
    describe_counter!(
        "virga_cold_starts_total",
        "Invocations that started a new instance, by function."
    );
    describe_counter!(
        "virga_throttles_total",
        "Requests refused with 429 (TooManyRequestsException), by function."
    );
    describe_histogram!(
        "virga_invocation_duration_seconds",
        Unit::Seconds,
        "Time an instance spent on an invocation (Lambda's Duration), by function."
    );
    describe_histogram!(
        "virga_init_duration_seconds",
        Unit::Seconds,
        "Init phase of cold starts (Lambda's Init Duration), by function."
    );
    describe_histogram!(
        "virga_queue_duration_seconds",
        Unit::Seconds,
        "Time an invocation waited for an instance (and, for asynchronous ones, in the event queue), by function."
    );
    describe_gauge!(
        "virga_instances",
        "Instances of a function, by state (starting, idle, busy)."
    );
    describe_gauge!(
        "virga_function_revisions",
        "Function revisions held in memory: each deployed one, and retired ones until their last invocation and instance are done."
    );
    describe_gauge!(
        "virga_heap_live_bytes",
        Unit::Bytes,
        "Bytes the platform process has allocated and not freed (its live heap; RSS adds the pages its allocator keeps). Only the `virga` binary counts them."
    );
    describe_gauge!(
        "virga_waiting_requests",
        "Synchronous requests queued for an instance, by function."
    );
    describe_gauge!(
        "virga_async_events",
        "Stored asynchronous events of a function, by state (ready, in_flight, delayed)."
    );
    describe_gauge!(
        "virga_async_oldest_age_seconds",
        Unit::Seconds,
        "Age of a function's oldest ready asynchronous event."
    );
    describe_gauge!(
        "virga_dead_letters",
        "Events in a function's dead-letter queue."
    );
    describe_gauge!(
        "virga_queue_messages",
        "Messages of a queue, by state (ready, in_flight)."
    );
    describe_gauge!(
        "virga_queue_oldest_age_seconds",
        Unit::Seconds,
        "Age of a queue's oldest ready message."
    );
}

impl Meter {
    pub fn new(store: Arc<Store>) -> Self {
        prometheus();
        Meter {
            store,
            sink: None,
            metrics: RwLock::default(),
        }
    }

    /// As [`Meter::new`], also handing every record to `sink` (a cluster's
    /// publisher); a full sink drops it there, never blocks.
    pub fn with_sink(store: Arc<Store>, sink: tokio::sync::mpsc::Sender<InvocationRecord>) -> Self {
        prometheus();
        Meter {
            store,
            sink: Some(sink),
            metrics: RwLock::default(),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Records a finished invocation. Never blocks on I/O.
    pub fn observe(&self, r: InvocationRecord) {
        let m = self.metrics_of(&r.function);
        let once = |cell: &OnceLock<Counter>, name: &'static str| {
            cell.get_or_init(|| metrics::counter!(name, "function" => r.function.clone()))
                .increment(1)
        };
        let status = r.status;
        m.invocations[status as usize]
            .get_or_init(|| {
                metrics::counter!("virga_invocations_total", "function" => r.function.clone(), "status" => status.as_str())
            })
            .increment(1);
        if status == virga_spec::Status::Throttled {
            once(&m.throttles, "virga_throttles_total");
        }
        if r.cold {
            once(&m.cold_starts, "virga_cold_starts_total");
        }
        let seconds = |cell: &OnceLock<Histogram>, name: &'static str, ms: f64| {
            cell.get_or_init(|| metrics::histogram!(name, "function" => r.function.clone()))
                .record(ms / 1e3)
        };
        if let Some(init) = r.init_ms {
            seconds(&m.init, "virga_init_duration_seconds", init);
        }
        if let Some(restore) = r.restore_ms {
            seconds(&m.restore, "virga_restore_duration_seconds", restore);
        }
        seconds(
            &m.duration,
            "virga_invocation_duration_seconds",
            r.duration_ms,
        );
        seconds(&m.queue, "virga_queue_duration_seconds", r.queue_ms);
        if let Some(sink) = &self.sink {
            if sink.try_send(r.clone()).is_err() {
                metrics::counter!("virga_cluster_records_dropped_total").increment(1);
            }
        }
        self.store.insert(r);
    }

    /// `function`'s metric handles, registered on first use.
    fn metrics_of(&self, function: &str) -> Arc<FunctionMetrics> {
        if let Some(m) = self
            .metrics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(function)
        {
            return m.clone();
        }
        self.metrics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(function.to_string())
            .or_default()
            .clone()
    }
}

/// One function's metric handles. The recorder's lookup (labels built,
/// hashed and compared) happens once per handle, not per invocation; each
/// is registered when first used, so `/metrics` shows what happened only.
#[derive(Default)]
struct FunctionMetrics {
    /// By `Status` (its discriminant).
    invocations: [OnceLock<Counter>; 4],
    throttles: OnceLock<Counter>,
    cold_starts: OnceLock<Counter>,
    init: OnceLock<Histogram>,
    restore: OnceLock<Histogram>,
    duration: OnceLock<Histogram>,
    queue: OnceLock<Histogram>,
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
    // SnapStart's name for a forked instance's start.
    if let Some(restore) = r.restore_ms {
        line.push_str(&format!("\tRestore Duration: {restore:.2} ms"));
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
            start: None,
            status: Status::Success,
            error_type: None,
            queue_ms: 0.0,
            init_ms: None,
            restore_ms: None,
            duration_ms: 1.234,
            billed_ms: 2,
            memory_mb: 512,
            max_memory_mb: Some(31),
            limits_enforced: true,
            isolation: virga_spec::Isolation::None,
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
        r.init_ms = None;
        r.restore_ms = Some(4.5);
        assert!(report_line(&r).ends_with("\tMax Memory Used: 31 MB\tRestore Duration: 4.50 ms"));
    }
}
