//! Event sources and asynchronous invocation: the *trigger* stage of the flow.
//!
//! - Asynchronous invocations (`X-Amz-Invocation-Type: Event`) are stored
//!   durably (an [`queue::EventQueue`], by default [`durable`]) before they
//!   are acknowledged, then delivered under
//!   the function's concurrency limit, retried with exponential backoff and
//!   jitter, and dead-lettered after `max_retries` or `max_event_age_ms`.
//!   Delivery is at least once; an event keeps its request id across retries.
//! - Triggers turn bucket uploads ([`bucket`]), topic messages, queue
//!   messages in batches ([`sqs`]) and schedules ([`schedule`]) into
//!   invocations.

pub mod broker;
pub mod bucket;
pub mod durable;
pub mod queue;
pub mod schedule;
pub mod sqs;

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use virga_spec::{Destination, Trigger, TriggerSpec};

use crate::scheduler::{InvokeError, InvokeRequest, Scheduler};
use durable::{Durable, DurableError, EventRow};
use queue::EventQueue;

/// Why an event was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// Function not found: {0}
    #[error("Function not found: {0}")]
    NotFound(String),
    /// the request is invalid
    #[error("{0}")]
    Invalid(String),
    /// no such object
    #[error("The specified key does not exist: {bucket}/{key}")]
    NoSuchKey { bucket: String, key: String },
    /// storing failed
    #[error(transparent)]
    Durable(#[from] DurableError),
    /// object storage failed
    #[error("cannot store the object: {0}")]
    Io(#[from] std::io::Error),
}

/// One asynchronous event on its way to a function.
#[derive(Debug, Clone)]
struct Event {
    request_id: String,
    function: String,
    payload: Bytes,
    trigger: Trigger,
    attempts: u32,
    enqueued_at_ms: i64,
}

impl Event {
    fn row(&self) -> EventRow {
        EventRow {
            request_id: self.request_id.clone(),
            function: self.function.clone(),
            payload: self.payload.to_vec(),
            trigger: self.trigger.as_str().to_string(),
            attempts: self.attempts,
            enqueued_at_ms: self.enqueued_at_ms,
            available_at_ms: self.enqueued_at_ms,
            last_error: None,
        }
    }

    fn from_row(r: EventRow) -> Event {
        Event {
            request_id: r.request_id,
            function: r.function,
            payload: Bytes::from(r.payload),
            trigger: Trigger::parse(&r.trigger).unwrap_or(Trigger::Http),
            attempts: r.attempts,
            enqueued_at_ms: r.enqueued_at_ms,
        }
    }
}

/// Per-function delivery state.
#[derive(Debug, Default)]
struct FnQueue {
    ready: VecDeque<Event>,
    in_flight: usize,
    /// Events waiting for a retry.
    delayed: usize,
}

pub use virga_spec::api::{AsyncDepth, DeadLetter};

pub struct Events {
    /// Where accepted asynchronous events live until delivered.
    queue: Arc<dyn EventQueue>,
    /// In a cluster, the broker: it holds the events (as `queue`) and the
    /// queues' messages.
    broker: Option<Arc<broker::BrokerQueue>>,
    /// Queue messages and objects' metadata (the same SQLite store).
    durable: Arc<Durable>,
    scheduler: Arc<Scheduler>,
    objects_dir: std::path::PathBuf,
    functions: Mutex<HashMap<String, FnQueue>>,
    queues: Mutex<HashMap<String, sqs::QueueState>>,
    sources: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    /// Set by [`Events::stop`]: no new delivery starts; pending events stay
    /// stored for the next start.
    stopping: std::sync::atomic::AtomicBool,
    me: Weak<Events>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Concurrent deliveries per function when `max_concurrency = 0`.
const UNBOUNDED_IN_FLIGHT: usize = 64;
/// Pause before retrying an event the scheduler had no room for (not counted as an attempt).
const THROTTLE_PAUSE: Duration = Duration::from_millis(50);
/// In a cluster, how long an event for a function this node does not know
/// is given back (the deploy may not have reached it yet) before it is
/// taken for deleted.
const UNKNOWN_FUNCTION_GRACE_MS: i64 = 10_000;

impl Events {
    /// Opens the event store and resumes everything it holds: pending events
    /// are delivered again (at least once), queue messages wait for their pollers.
    pub fn start(data_dir: &Path, scheduler: Arc<Scheduler>) -> Result<Arc<Events>, EventsError> {
        Events::start_on(data_dir, scheduler, None)
    }

    /// Like [`Events::start`], with asynchronous events and queue messages
    /// on the cluster's `broker` instead of the local store.
    pub fn start_on(
        data_dir: &Path,
        scheduler: Arc<Scheduler>,
        broker: Option<Arc<broker::BrokerQueue>>,
    ) -> Result<Arc<Events>, EventsError> {
        let durable = Arc::new(Durable::open(data_dir)?);
        let objects_dir = data_dir.join("objects");
        std::fs::create_dir_all(&objects_dir)?;
        let queue: Arc<dyn EventQueue> = match &broker {
            Some(b) => b.clone(),
            None => durable.clone(),
        };
        let events = Arc::new_cyclic(|me| Events {
            queue,
            broker,
            durable,
            scheduler,
            objects_dir,
            functions: Mutex::new(HashMap::new()),
            queues: Mutex::new(HashMap::new()),
            sources: Mutex::new(HashMap::new()),
            stopping: Default::default(),
            me: me.clone(),
        });
        let pending = events.queue.pending()?;
        if !pending.is_empty() {
            tracing::info!(
                events = pending.len(),
                "resuming queued asynchronous events"
            );
        }
        let now = now_ms();
        for row in pending {
            let wait = (row.available_at_ms - now).max(0) as u64;
            let ev = Event::from_row(row);
            if wait == 0 {
                events.push(ev);
            } else {
                events.push_later(ev, Duration::from_millis(wait));
            }
        }
        if events.queue.feeds() {
            let me = Arc::downgrade(&events);
            events.queue.clone().feed(Arc::new(move |row| {
                if let Some(me) = me.upgrade() {
                    me.push(Event::from_row(row));
                }
            }));
        }
        events.restore_messages()?;
        tokio::spawn(events.clone().follow_deployments());
        Ok(events)
    }

    fn arc(&self) -> Option<Arc<Events>> {
        self.me.upgrade()
    }

    pub fn durable(&self) -> &Arc<Durable> {
        &self.durable
    }

    /// Accepts one asynchronous invocation: returns its request id once it is on disk.
    pub async fn invoke_async(
        &self,
        function: &str,
        payload: Bytes,
        trigger: Trigger,
    ) -> Result<String, EventsError> {
        if self.scheduler.manifest(function).is_none() {
            return Err(EventsError::NotFound(function.to_string()));
        }
        let ev = self.new_event(function, payload, trigger);
        let id = ev.request_id.clone();
        self.accept(vec![ev]).await?;
        Ok(id)
    }

    fn new_event(&self, function: &str, payload: Bytes, trigger: Trigger) -> Event {
        Event {
            request_id: uuid::Uuid::new_v4().to_string(),
            function: function.to_string(),
            payload: owned(payload),
            trigger,
            attempts: 0,
            enqueued_at_ms: now_ms(),
        }
    }

    /// Stores events durably (one commit), then schedules their delivery.
    async fn accept(&self, events: Vec<Event>) -> Result<(), EventsError> {
        if events.is_empty() {
            return Ok(());
        }
        self.queue
            .enqueue(events.iter().map(Event::row).collect())
            .await?;
        // A feeding queue hands them to whichever node has room.
        if !self.queue.feeds() {
            for ev in events {
                self.push(ev);
            }
        }
        Ok(())
    }

    fn push(&self, ev: Event) {
        let function = ev.function.clone();
        lock(&self.functions)
            .entry(function.clone())
            .or_default()
            .ready
            .push_back(ev);
        self.pump(&function);
    }

    fn push_later(&self, ev: Event, after: Duration) {
        let Some(me) = self.arc() else { return };
        lock(&self.functions)
            .entry(ev.function.clone())
            .or_default()
            .delayed += 1;
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Some(q) = lock(&me.functions).get_mut(&ev.function) {
                q.delayed = q.delayed.saturating_sub(1);
            }
            me.push(ev);
        });
    }

    fn in_flight_limit(&self, function: &str) -> usize {
        self.scheduler
            .concurrency_limit(function)
            .unwrap_or(UNBOUNDED_IN_FLIGHT)
    }

    /// Starts deliveries while the function has room.
    fn pump(&self, function: &str) {
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let Some(me) = self.arc() else { return };
        let limit = self.in_flight_limit(function);
        let mut started = Vec::new();
        {
            let mut fns = lock(&self.functions);
            let Some(q) = fns.get_mut(function) else {
                return;
            };
            while q.in_flight < limit {
                let Some(ev) = q.ready.pop_front() else { break };
                q.in_flight += 1;
                started.push(ev);
            }
            if limit == 0 && self.queue.feeds() {
                // No share of the function here: the other nodes deliver.
                for ev in q.ready.drain(..) {
                    self.queue.release(&ev.request_id, THROTTLE_PAUSE);
                }
            }
        }
        for ev in started {
            let me = me.clone();
            tokio::spawn(async move {
                let function = ev.function.clone();
                me.deliver(ev).await;
                if let Some(q) = lock(&me.functions).get_mut(&function) {
                    q.in_flight -= 1;
                }
                me.pump(&function);
            });
        }
    }

    async fn deliver(&self, mut ev: Event) {
        let age_ms = (now_ms() - ev.enqueued_at_ms).max(0);
        let req = InvokeRequest {
            function: ev.function.clone(),
            payload: ev.payload.clone(),
            trigger: ev.trigger,
            request_id: Some(ev.request_id.clone()),
            waited_ms: age_ms as f64,
            has_caller: false,
            tail: false,
        };
        let Some((manifest, _)) = self.scheduler.manifest(&ev.function) else {
            if self.queue.feeds() && age_ms < UNKNOWN_FUNCTION_GRACE_MS {
                // Accepted by a node that deployed it before this one heard.
                self.queue
                    .release(&ev.request_id, Duration::from_millis(500));
                return;
            }
            self.scheduler
                .record_undeliverable(&req, "ResourceNotFoundException");
            self.dead_letter(&ev, "ResourceNotFoundException: the function was deleted");
            return;
        };
        if age_ms as u64 > manifest.max_event_age_ms {
            self.dead_letter(&ev, "EventAgeExceeded: older than max_event_age_ms");
            return;
        }
        let mut req = req;
        if ev.trigger == Trigger::Bucket
            && manifest
                .model
                .as_ref()
                .is_some_and(|m| m.input == virga_spec::ModelInput::Object)
        {
            // Read at delivery, not at upload: the durable queue keeps the
            // small notification, and a retry sees the object as it is now.
            req.payload = self.attach_object(&ev.payload).await;
        }
        let result = self.scheduler.invoke(req.clone()).await;
        match result {
            Ok(inv) if inv.function_error.is_none() => {
                self.queue.complete(&ev.request_id);
                if let Some(dest) = manifest.on_success.as_deref().and_then(Destination::parse) {
                    let record =
                        destination_record(&ev, &manifest.name, "Success", Some(&inv.body));
                    self.send_to(&dest, record).await;
                }
            }
            Ok(inv) => {
                ev.attempts += 1;
                let error = inv.function_error.unwrap_or_default();
                if ev.attempts > manifest.max_retries {
                    self.dead_letter(&ev, &error);
                    if let Some(dest) = manifest.on_failure.as_deref().and_then(Destination::parse)
                    {
                        let record = destination_record(
                            &ev,
                            &manifest.name,
                            "RetriesExhausted",
                            Some(&inv.body),
                        );
                        self.send_to(&dest, record).await;
                    }
                } else {
                    let delay = retry_delay(manifest.retry_delay_ms, ev.attempts);
                    self.queue.retry(
                        &ev.request_id,
                        ev.attempts,
                        now_ms() + delay.as_millis() as i64,
                        &error,
                    );
                    if !self.queue.feeds() {
                        self.push_later(ev, delay);
                    }
                }
            }
            Err(InvokeError::NotFound(_)) => {
                self.scheduler
                    .record_undeliverable(&req, "ResourceNotFoundException");
                self.dead_letter(&ev, "ResourceNotFoundException: the function was deleted");
            }
            // Recorded by the scheduler: it waited in the pool's queue.
            Err(InvokeError::Deleted(_)) => {
                self.dead_letter(&ev, "ResourceNotFoundException: the function was deleted");
            }
            // No room now (or a redeploy): try again shortly; not an attempt.
            Err(InvokeError::Throttled { .. })
            | Err(InvokeError::ShareFull { .. })
            | Err(InvokeError::NoMemory { .. })
            | Err(InvokeError::ShuttingDown) => {
                if self.queue.feeds() {
                    // Perhaps another node has room.
                    self.queue.release(&ev.request_id, THROTTLE_PAUSE);
                } else {
                    self.push_later(ev, THROTTLE_PAUSE);
                }
            }
        }
    }

    fn dead_letter(&self, ev: &Event, error: &str) {
        tracing::warn!(function = %ev.function, request_id = %ev.request_id, error, "event dead-lettered");
        self.queue.dead_letter(&ev.request_id, ev.attempts, error);
    }

    async fn send_to(&self, dest: &Destination, body: String) {
        let result = match dest {
            Destination::Queue(q) => self.send_message(q, body).await.map(|_| ()),
            Destination::Topic(t) => self.publish(t, &body, None).await.map(|_| ()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not deliver to a destination");
        }
    }

    /// Queue depth and age per function, with dead-letter counts.
    pub async fn async_depths(&self) -> Result<Vec<AsyncDepth>, EventsError> {
        let dead: HashMap<String, u64> = self.queue.dead_counts().await?.into_iter().collect();
        let feeds = self.queue.feeds();
        let mut queued: HashMap<String, u64> = if feeds {
            self.queue.queued().await?.into_iter().collect()
        } else {
            HashMap::new()
        };
        let now = now_ms();
        let mut out: Vec<AsyncDepth> = {
            let fns = lock(&self.functions);
            fns.iter()
                .map(|(f, q)| AsyncDepth {
                    function: f.clone(),
                    ready: q.ready.len(),
                    in_flight: q.in_flight,
                    delayed: q.delayed,
                    oldest_age_ms: q.ready.front().map(|e| now - e.enqueued_at_ms),
                    dead_letters: dead.get(f).copied().unwrap_or(0),
                    cluster_queued: feeds.then(|| queued.remove(f).unwrap_or(0)),
                })
                .collect()
        };
        let mut others: Vec<String> = dead.keys().chain(queued.keys()).cloned().collect();
        others.sort();
        others.dedup();
        for f in others {
            if !out.iter().any(|d| d.function == f) {
                out.push(AsyncDepth {
                    dead_letters: dead.get(&f).copied().unwrap_or(0),
                    cluster_queued: feeds.then(|| queued.get(&f).copied().unwrap_or(0)),
                    function: f,
                    ready: 0,
                    in_flight: 0,
                    delayed: 0,
                    oldest_age_ms: None,
                });
            }
        }
        out.sort_by(|a, b| a.function.cmp(&b.function));
        Ok(out)
    }

    pub async fn dead_letters(&self, function: &str) -> Result<Vec<DeadLetter>, EventsError> {
        Ok(self
            .queue
            .dead_letters(function)
            .await?
            .into_iter()
            .map(|r| DeadLetter {
                payload: serde_json::from_slice(&r.payload).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&r.payload).into_owned())
                }),
                request_id: r.request_id,
                function: r.function,
                trigger: r.trigger,
                attempts: r.attempts,
                error: r.last_error,
                enqueued_at_ms: r.enqueued_at_ms,
            })
            .collect())
    }

    /// Sends a function's dead letters through delivery again; returns how many.
    pub async fn redrive(&self, function: &str) -> Result<usize, EventsError> {
        let rows = self.queue.redrive(function).await?;
        let n = rows.len();
        if !self.queue.feeds() {
            for r in rows {
                self.push(Event::from_row(r));
            }
        }
        Ok(n)
    }

    /// Publishes to a topic: one asynchronous invocation per subscribed function.
    /// Returns the message id and the subscribers.
    pub async fn publish(
        &self,
        topic: &str,
        message: &str,
        subject: Option<&str>,
    ) -> Result<(String, Vec<String>), EventsError> {
        if !virga_spec::manifest::valid_resource_name(topic) {
            return Err(EventsError::Invalid(format!(
                "topic {topic:?}: use 1 to 80 of a-z, A-Z, 0-9, '-', '_'"
            )));
        }
        let message_id = uuid::Uuid::new_v4().to_string();
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let payload = Bytes::from(
            virga_spec::events::sns_event(topic, &message_id, message, subject, &time).to_string(),
        );
        let subscribers: Vec<String> = self
            .scheduler
            .manifests()
            .into_iter()
            .filter(|(m, _)| {
                m.triggers
                    .iter()
                    .any(|t| matches!(t, TriggerSpec::Topic { topic: x } if x == topic))
            })
            .map(|(m, _)| m.name.clone())
            .collect();
        let events = subscribers
            .iter()
            .map(|f| self.new_event(f, payload.clone(), Trigger::Topic))
            .collect();
        self.accept(events).await?;
        Ok((message_id, subscribers))
    }

    /// Stops event sources (schedules, queue pollers) and starts no new
    /// delivery; deliveries in flight go on.
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for (_, h) in lock(&self.sources).drain() {
            h.abort();
        }
    }

    /// Deliveries in flight, all functions together.
    pub fn deliveries_in_flight(&self) -> usize {
        lock(&self.functions).values().map(|q| q.in_flight).sum()
    }

    /// Waits (at most until `deadline`) for the deliveries in flight to
    /// finish and their outcome to be stored.
    pub async fn drain(&self, deadline: tokio::time::Instant) -> bool {
        while self.deliveries_in_flight() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Stops event sources and writes what is queued.
    pub async fn shutdown(&self) {
        for (_, h) in lock(&self.sources).drain() {
            h.abort();
        }
        let (queue, durable) = (self.queue.clone(), self.durable.clone());
        let _ = tokio::task::spawn_blocking(move || {
            queue.close();
            durable.close();
        })
        .await;
    }

    /// Starts and stops schedules and queue pollers as functions are
    /// deployed, redeployed and deleted.
    async fn follow_deployments(self: Arc<Self>) {
        let mut changes = self.scheduler.changes();
        loop {
            self.reconcile_sources();
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    fn reconcile_sources(self: &Arc<Self>) {
        let mut wanted: HashMap<String, (String, TriggerSpec)> = HashMap::new();
        for (m, version) in self.scheduler.manifests() {
            for (i, t) in m.triggers.iter().enumerate() {
                if matches!(t, TriggerSpec::Schedule { .. } | TriggerSpec::Queue { .. }) {
                    wanted.insert(
                        format!("{}:{version}:{i}", m.name),
                        (m.name.clone(), t.clone()),
                    );
                }
            }
        }
        let mut sources = lock(&self.sources);
        sources.retain(|key, handle| {
            let keep = wanted.contains_key(key);
            if !keep {
                handle.abort();
            }
            keep
        });
        for (key, (function, spec)) in wanted {
            if sources.contains_key(&key) {
                continue;
            }
            let handle = match spec {
                TriggerSpec::Schedule { expression, input } => tokio::spawn(
                    self.clone()
                        .run_schedule(function, key.clone(), expression, input),
                )
                .abort_handle(),
                TriggerSpec::Queue {
                    queue,
                    batch_size,
                    batch_window_ms,
                    max_receive,
                } => tokio::spawn(self.clone().poll_queue(
                    function,
                    queue,
                    batch_size as usize,
                    Duration::from_millis(batch_window_ms),
                    max_receive,
                ))
                .abort_handle(),
                _ => continue,
            };
            sources.insert(key, handle);
        }
    }
}

/// A payload in an allocation of its own, sized to it. The body of an
/// HTTP request is a slice of its connection's read buffer, and an event
/// waiting in a backlog for minutes would keep all of that buffer alive
/// (kilobytes for a payload of a few bytes: the soak bench's backlog held
/// 7-8 KB per queued event). Always a copy: whether a `Bytes` is the only
/// view of its allocation says nothing of that allocation's size. One
/// copy per event, beside the durable write of the same bytes.
fn owned(payload: Bytes) -> Bytes {
    Bytes::copy_from_slice(&payload)
}

/// The first retry waits `base`, each next one twice as long, +-25% jitter so
/// retries of many events spread out.
fn retry_delay(base_ms: u64, attempt: u32) -> Duration {
    let exp = base_ms.saturating_mul(1u64 << (attempt.saturating_sub(1)).min(16));
    let jitter = 0.75 + rand::random::<f64>() * 0.5;
    Duration::from_millis((exp as f64 * jitter) as u64)
}

/// Lambda's destination record for an asynchronous invocation.
fn destination_record(
    ev: &Event,
    function: &str,
    condition: &str,
    response: Option<&[u8]>,
) -> String {
    let parse = |b: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(b).unwrap_or(serde_json::Value::Null)
    };
    serde_json::json!({
        "version": "1.0",
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "requestContext": {
            "requestId": ev.request_id,
            "functionArn": format!("arn:aws:lambda:us-east-1:000000000000:function:{function}:$LATEST"),
            "condition": condition,
            "approximateInvokeCount": ev.attempts.max(1),
        },
        "requestPayload": parse(&ev.payload),
        "responsePayload": response.map(parse),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_payload_does_not_keep_its_request_buffer() {
        let buffer = Bytes::from(vec![b'x'; 8192]);
        let body = buffer.slice(100..120);
        drop(buffer);
        let kept = owned(body.clone());
        assert_eq!(kept, body);
        // Its own allocation: the slice's buffer goes once the slice does.
        assert_ne!(kept.as_ptr(), body.as_ptr());
        assert!(kept.is_unique());
    }

    #[test]
    fn retry_delays_grow_exponentially_with_bounded_jitter() {
        for _ in 0..100 {
            let d1 = retry_delay(1000, 1).as_millis();
            let d2 = retry_delay(1000, 2).as_millis();
            let d3 = retry_delay(1000, 3).as_millis();
            assert!((750..=1250).contains(&d1), "{d1}");
            assert!((1500..=2500).contains(&d2), "{d2}");
            assert!((3000..=5000).contains(&d3), "{d3}");
        }
    }
}
