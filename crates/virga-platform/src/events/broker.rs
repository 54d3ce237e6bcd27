//! Asynchronous events on the cluster's NATS JetStream broker
//! (`virga serve --cluster`): the [`EventQueue`] every node shares.
//!
//! - An accepted event is a message on `virga.events.<function>` in the
//!   work-queue stream [`EVENTS_STREAM`]; the accept is acknowledged once
//!   the broker has acknowledged the publish (stored by the stream's
//!   servers: see the guide for what that survives).
//! - Every node pulls from one durable consumer ([`CONSUMER`]), at most
//!   [`HOLD`] events at a time, so an event reaches whichever node has
//!   room. An event held by a node is kept alive with progress acks while
//!   it waits or runs (functions may run 900 s; the ack wait stays short so
//!   a dead node's events come back quickly): when a node dies, what it
//!   held is redelivered to the others after [`ACK_WAIT`].
//! - Attempts are counted in the message's headers, not by the broker's
//!   delivery count: a failed attempt republishes the event with one more
//!   attempt and a not-before time, then acknowledges the old message; a
//!   throttled delivery, or one for a function this node has not applied
//!   yet, goes back with a delayed NAK, which is not an attempt.
//! - Dead letters are messages on `virga.dead.<function>` in
//!   [`DEAD_STREAM`]; every node lists and redrives the same ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::Publish, stream, AckKind};
use async_nats::HeaderMap;
use futures_util::{StreamExt, TryStreamExt};

use super::durable::{DurableError, EventRow};
use super::queue::{EventQueue, QueueFuture, Sink};

/// Accepted asynchronous events, until delivered or dead-lettered.
pub const EVENTS_STREAM: &str = "VIRGA_EVENTS";
const EVENTS_SUBJECT: &str = "virga.events";
/// Queue messages (`/v1/queues/NAME/messages`), until a function took them.
pub const QUEUES_STREAM: &str = "VIRGA_QUEUES";
const QUEUE_SUBJECT: &str = "virga.queue";
/// Objects (`/v1/buckets/BUCKET/objects/KEY`), named `BUCKET/KEY`.
pub const OBJECTS_BUCKET: &str = "virga_objects";
/// Dead letters, until redriven.
pub const DEAD_STREAM: &str = "VIRGA_DEAD";
const DEAD_SUBJECT: &str = "virga.dead";
/// The consumer every node delivers from.
pub const CONSUMER: &str = "deliver";
/// How long an event pulled by a node that stopped answering stays its own.
pub const ACK_WAIT: Duration = Duration::from_secs(10);
const PROGRESS_EVERY: Duration = Duration::from_secs(3);
/// Events a node holds at most (waiting for room or running).
pub const HOLD: usize = 32;

const H_REQUEST: &str = "Virga-Request-Id";
const H_FUNCTION: &str = "Virga-Function";
const H_TRIGGER: &str = "Virga-Trigger";
const H_ATTEMPTS: &str = "Virga-Attempts";
const H_ENQUEUED: &str = "Virga-Enqueued-At-Ms";
const H_NOT_BEFORE: &str = "Virga-Not-Before-Ms";
const H_ERROR: &str = "Virga-Error";
const H_MESSAGE: &str = "Virga-Message-Id";
const H_SENT: &str = "Virga-Sent-At-Ms";

pub struct BrokerQueue {
    client: async_nats::Client,
    js: jetstream::Context,
    objects: jetstream::object_store::ObjectStore,
    servers: String,
    /// Events this node pulled and has not finished, by request id.
    held: Mutex<HashMap<String, Arc<jetstream::Message>>>,
    room: tokio::sync::Notify,
    /// Acknowledgements and republishes under way (awaited by `close`).
    outstanding: Arc<AtomicUsize>,
    closed: AtomicBool,
    runtime: tokio::runtime::Handle,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl BrokerQueue {
    /// Makes (or finds) the streams and the shared consumer.
    pub async fn open(
        client: async_nats::Client,
        servers: String,
        replicas: usize,
    ) -> Result<Arc<BrokerQueue>, DurableError> {
        let js = jetstream::new(client.clone());
        let broker = |what: &str, e: &dyn std::fmt::Display| DurableError::Broker {
            servers: servers.clone(),
            why: format!("{what}: {e}"),
        };
        let events = js
            .get_or_create_stream(stream::Config {
                name: EVENTS_STREAM.into(),
                subjects: vec![format!("{EVENTS_SUBJECT}.*")],
                retention: stream::RetentionPolicy::WorkQueue,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| broker("the events stream", &e))?;
        events
            .get_or_create_consumer(CONSUMER, consumer_config())
            .await
            .map(|_: consumer::PullConsumer| ())
            .map_err(|e| broker("the events consumer", &e))?;
        js.get_or_create_stream(stream::Config {
            name: QUEUES_STREAM.into(),
            subjects: vec![format!("{QUEUE_SUBJECT}.*")],
            retention: stream::RetentionPolicy::WorkQueue,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| broker("the queues stream", &e))?;
        js.get_or_create_stream(stream::Config {
            name: DEAD_STREAM.into(),
            subjects: vec![format!("{DEAD_SUBJECT}.*")],
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| broker("the dead-letter stream", &e))?;
        let objects = js
            .create_object_store(jetstream::object_store::Config {
                bucket: OBJECTS_BUCKET.into(),
                description: Some("virga buckets' objects".into()),
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| broker("the objects bucket", &e))?;
        Ok(Arc::new(BrokerQueue {
            client,
            js,
            objects,
            servers,
            held: Mutex::new(HashMap::new()),
            room: tokio::sync::Notify::new(),
            outstanding: Arc::new(AtomicUsize::new(0)),
            closed: AtomicBool::new(false),
            runtime: tokio::runtime::Handle::current(),
        }))
    }

    fn error(&self, why: impl std::fmt::Display) -> DurableError {
        DurableError::Broker {
            servers: self.servers.clone(),
            why: why.to_string(),
        }
    }

    /// Whether the connection to the broker is up now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn reachable(&self) -> Result<(), DurableError> {
        if self.connected() {
            Ok(())
        } else {
            Err(self.error("not connected (reconnecting)"))
        }
    }

    /// Takes the event `id` out of what this node holds.
    fn release_held(&self, id: &str) -> Option<Arc<jetstream::Message>> {
        let m = lock(&self.held).remove(id);
        self.room.notify_one();
        m
    }

    /// Runs `f` off the caller, counted until it ends (for `close`).
    fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        let outstanding = self.outstanding.clone();
        outstanding.fetch_add(1, Ordering::SeqCst);
        self.runtime.spawn(async move {
            f.await;
            outstanding.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// Publishes `row` to the events stream; the returned future resolves
    /// with the broker's acknowledgement (so several can be in flight).
    async fn publish_event(
        js: &jetstream::Context,
        row: &EventRow,
        message_id: &str,
    ) -> Result<jetstream::context::PublishAckFuture, async_nats::jetstream::context::PublishError>
    {
        js.send_publish(
            format!("{EVENTS_SUBJECT}.{}", row.function),
            Publish::build()
                .payload(row.payload.clone().into())
                .headers(headers(row))
                .message_id(message_id),
        )
        .await
    }

    /// Pulls events while this node has room; runs until the queue closes.
    async fn pull(self: Arc<Self>, sink: Sink) {
        let mut consumer: Option<consumer::PullConsumer> = None;
        while !self.closed.load(Ordering::SeqCst) {
            let want = HOLD.saturating_sub(lock(&self.held).len());
            if want == 0 {
                let _ = tokio::time::timeout(Duration::from_secs(1), self.room.notified()).await;
                continue;
            }
            let c = match &consumer {
                Some(c) => c.clone(),
                None => match self.consumer().await {
                    Ok(c) => {
                        consumer = Some(c.clone());
                        c
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reach the events consumer; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            let batch = c
                .batch()
                .max_messages(want)
                .expires(Duration::from_secs(1))
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(error = %e, "pulling events failed; again");
                    consumer = None;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            while let Some(m) = batch.next().await {
                match m {
                    Ok(m) => self.take(m, &sink),
                    Err(e) => {
                        tracing::debug!(error = %e, "an events pull ended");
                        break;
                    }
                }
            }
        }
    }

    async fn consumer(&self) -> Result<consumer::PullConsumer, String> {
        self.js
            .get_stream(EVENTS_STREAM)
            .await
            .map_err(|e| e.to_string())?
            .get_or_create_consumer(CONSUMER, consumer_config())
            .await
            .map_err(|e| e.to_string())
    }

    fn take(&self, m: jetstream::Message, sink: &Sink) {
        let Some(row) = row_of(&m) else {
            tracing::warn!(subject = %m.subject, "an unreadable event on the broker; dropped");
            self.spawn(async move {
                let _ = m.ack_with(AckKind::Term).await;
            });
            return;
        };
        let wait = header_i64(&m, H_NOT_BEFORE).map_or(0, |t| t - now_ms());
        if wait > 0 {
            // A retry not due yet: back until it is (not an attempt).
            self.spawn(async move {
                let _ = m
                    .ack_with(AckKind::Nak(Some(Duration::from_millis(wait as u64))))
                    .await;
            });
            return;
        }
        let fresh = lock(&self.held)
            .insert(row.request_id.clone(), Arc::new(m))
            .is_none();
        // The same event again while this node holds it (its ack wait ran
        // out): it keeps the newer delivery's handle, and runs once here.
        if fresh {
            sink(row);
        }
    }

    /// Keeps the held events this node's while they wait or run.
    async fn keep_alive(self: Arc<Self>) {
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        while !self.closed.load(Ordering::SeqCst) {
            tick.tick().await;
            let held: Vec<_> = lock(&self.held).values().cloned().collect();
            progress(&held).await;
        }
    }

    /// Publishes `row` as a new message on `subject`, then acknowledges
    /// `m`, the one it replaces: a crash in between delivers the event once
    /// more, never not at all. The new message's id names the one it
    /// replaces, so the broker drops a second republish of that one but
    /// never a later one's (a redriven event fails with the same attempt
    /// counts again). Not published: `m` comes back after a second.
    fn replace(
        &self,
        m: Arc<jetstream::Message>,
        subject: String,
        h: HeaderMap,
        row: EventRow,
        kind: &'static str,
        failed: &'static str,
    ) {
        let js = self.js.clone();
        self.spawn(async move {
            let msg_id = format!("{}.{kind}.{}", row.request_id, sequence(&m));
            let published = publish_acked(&js, subject, row.payload, h, msg_id).await;
            if published.is_ok() {
                let _ = m.ack().await;
            } else {
                tracing::warn!(request_id = %row.request_id, "{failed}; the broker redelivers the event");
                let _ = m.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
            }
        });
    }

    /// Sends a queue message: resolves once the broker has it.
    pub async fn send_message(&self, m: &super::durable::MessageRow) -> Result<(), DurableError> {
        self.reachable()?;
        let mut h = HeaderMap::new();
        h.insert(H_MESSAGE, m.id.as_str());
        h.insert(H_SENT, m.sent_at_ms.to_string().as_str());
        let subject = format!("{QUEUE_SUBJECT}.{}", m.queue);
        publish_acked(
            &self.js,
            subject,
            m.body.clone().into_bytes(),
            h,
            m.id.clone(),
        )
        .await
        .map_err(|e| self.error(e))
    }

    /// The consumer every node's pollers of `queue` share (competing
    /// consumers, as on SQS).
    pub async fn queue_consumer(
        &self,
        queue: &str,
    ) -> Result<consumer::PullConsumer, DurableError> {
        let name = format!("queue-{queue}");
        self.js
            .get_stream(QUEUES_STREAM)
            .await
            .map_err(|e| self.error(e))?
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: format!("{QUEUE_SUBJECT}.{queue}"),
                    ..consumer_config()
                },
            )
            .await
            .map_err(|e| self.error(e))
    }

    /// Stores an object; resolves once the broker has all of it.
    pub async fn put_object(
        &self,
        meta: &super::durable::ObjectMeta,
        body: &[u8],
    ) -> Result<(), DurableError> {
        self.reachable()?;
        let object = jetstream::object_store::ObjectMetadata {
            name: format!("{}/{}", meta.bucket, meta.key),
            metadata: HashMap::from([
                ("etag".to_string(), meta.etag.clone()),
                ("last_modified".to_string(), meta.last_modified.clone()),
            ]),
            ..Default::default()
        };
        let mut reader = body;
        self.objects
            .put(object, &mut reader)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// An object's metadata and bytes; `None` when there is no such object.
    pub async fn get_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(super::durable::ObjectMeta, Vec<u8>)>, DurableError> {
        use tokio::io::AsyncReadExt;
        self.reachable()?;
        let name = format!("{bucket}/{key}");
        // A deleted object's marker is no object (and reading it would
        // wait for chunks that are gone).
        match self.objects.info(&name).await {
            Ok(i) if !i.deleted => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == jetstream::object_store::InfoErrorKind::NotFound => {
                return Ok(None)
            }
            Err(e) => return Err(self.error(e)),
        }
        let mut object = match self.objects.get(&name).await {
            Ok(o) => o,
            Err(e) if e.kind() == jetstream::object_store::GetErrorKind::NotFound => {
                return Ok(None)
            }
            Err(e) => return Err(self.error(e)),
        };
        let meta = object_meta(object.info());
        let mut body = Vec::new();
        // Deleted between the look and the read: its chunks never come.
        tokio::time::timeout(Duration::from_secs(30), object.read_to_end(&mut body))
            .await
            .map_err(|_| self.error(format!("reading {name} timed out")))?
            .map_err(|e| self.error(e))?;
        Ok(meta.map(|m| (m, body)))
    }

    /// The objects of `bucket` whose keys start with `prefix`, by key.
    pub async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<super::durable::ObjectMeta>, DurableError> {
        self.reachable()?;
        let mut list = self.objects.list().await.map_err(|e| self.error(e))?;
        let start = format!("{bucket}/{prefix}");
        let mut out = Vec::new();
        while let Some(info) = list.try_next().await.map_err(|e| self.error(e))? {
            if !info.deleted && info.name.starts_with(&start) {
                out.extend(object_meta(&info));
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Deletes an object; returns what it was (`None`: there was none).
    pub async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<super::durable::ObjectMeta>, DurableError> {
        use jetstream::object_store::{DeleteErrorKind, InfoErrorKind};
        self.reachable()?;
        let name = format!("{bucket}/{key}");
        let info = match self.objects.info(&name).await {
            Ok(i) if !i.deleted => i,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == InfoErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(e)),
        };
        match self.objects.delete(&name).await {
            Ok(()) => Ok(object_meta(&info)),
            Err(e) if e.kind() == DeleteErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Messages per queue the broker holds.
    pub async fn queue_counts(&self) -> Result<Vec<(String, u64)>, DurableError> {
        self.per_function(QUEUES_STREAM, QUEUE_SUBJECT).await
    }

    /// Messages per function in `stream` (subjects `prefix.FUNCTION`),
    /// sorted by function.
    async fn per_function(
        &self,
        stream: &str,
        prefix: &str,
    ) -> Result<Vec<(String, u64)>, DurableError> {
        self.reachable()?;
        let stream = self
            .js
            .get_stream(stream)
            .await
            .map_err(|e| self.error(e))?;
        let mut subjects = stream
            .info_with_subjects(format!("{prefix}.>"))
            .await
            .map_err(|e| self.error(e))?;
        let mut out = Vec::new();
        while let Some((subject, n)) = subjects.try_next().await.map_err(|e| self.error(e))? {
            if let Some(f) = subject.strip_prefix(&format!("{prefix}.")) {
                out.push((f.to_string(), n as u64));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Dead letters of `function` with their stream sequences.
    async fn dead(&self, function: &str) -> Result<Vec<(u64, EventRow)>, DurableError> {
        let stream = self
            .js
            .get_stream(DEAD_STREAM)
            .await
            .map_err(|e| self.error(e))?;
        let c: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                filter_subject: format!("{DEAD_SUBJECT}.{function}"),
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|e| self.error(e))?;
        let mut c = c;
        let mut left = c.info().await.map_err(|e| self.error(e))?.num_pending as usize;
        let mut out = Vec::with_capacity(left);
        while left > 0 {
            let mut batch = c
                .fetch()
                .max_messages(left.min(1000))
                .expires(Duration::from_secs(2))
                .messages()
                .await
                .map_err(|e| self.error(e))?;
            let mut got = 0;
            while let Some(m) = batch.try_next().await.map_err(|e| self.error(e))? {
                got += 1;
                let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
                if let Some(mut row) = row_of(&m) {
                    row.last_error = header(&m, H_ERROR).map(str::to_string);
                    out.push((seq, row));
                }
            }
            if got == 0 {
                break;
            }
            left = left.saturating_sub(got);
        }
        let name = c.cached_info().name.clone();
        let _ = stream.delete_consumer(&name).await;
        Ok(out)
    }
}

/// Publishes one message and waits for the broker's acknowledgement.
async fn publish_acked(
    js: &jetstream::Context,
    subject: String,
    payload: Vec<u8>,
    headers: HeaderMap,
    message_id: String,
) -> Result<(), String> {
    let publish = Publish::build()
        .payload(payload.into())
        .headers(headers)
        .message_id(message_id);
    js.send_publish(subject, publish)
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn consumer_config() -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(CONSUMER.into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        // Unbounded: attempts are counted in the headers, and a NAK for
        // lack of room must not use them up.
        max_deliver: -1,
        max_ack_pending: 100_000,
        ..Default::default()
    }
}

fn headers(row: &EventRow) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(H_REQUEST, row.request_id.as_str());
    h.insert(H_FUNCTION, row.function.as_str());
    h.insert(H_TRIGGER, row.trigger.as_str());
    h.insert(H_ATTEMPTS, row.attempts.to_string().as_str());
    h.insert(H_ENQUEUED, row.enqueued_at_ms.to_string().as_str());
    h
}

/// The message's place in its stream (unique per stream).
fn sequence(m: &jetstream::Message) -> u64 {
    m.info().map(|i| i.stream_sequence).unwrap_or(0)
}

fn header<'a>(m: &'a jetstream::Message, name: &str) -> Option<&'a str> {
    m.headers.as_ref()?.get(name).map(|v| v.as_str())
}

fn header_i64(m: &jetstream::Message, name: &str) -> Option<i64> {
    header(m, name)?.parse().ok()
}

/// The event a message carries; `None` for one virga did not publish.
fn row_of(m: &jetstream::Message) -> Option<EventRow> {
    let enqueued_at_ms = header_i64(m, H_ENQUEUED)?;
    Some(EventRow {
        request_id: header(m, H_REQUEST)?.to_string(),
        function: header(m, H_FUNCTION)?.to_string(),
        payload: m.payload.to_vec(),
        trigger: header(m, H_TRIGGER)?.to_string(),
        attempts: header(m, H_ATTEMPTS)?.parse().ok()?,
        enqueued_at_ms,
        available_at_ms: header_i64(m, H_NOT_BEFORE).unwrap_or(enqueued_at_ms),
        last_error: None,
    })
}

impl EventQueue for BrokerQueue {
    /// Resolves once the broker has acknowledged every publish.
    fn enqueue(&self, rows: Vec<EventRow>) -> QueueFuture<'_, ()> {
        Box::pin(async move {
            self.reachable()?;
            let mut acks = Vec::with_capacity(rows.len());
            for row in &rows {
                // The request id as the message id: the broker drops a
                // second publish of the same accept (its duplicate window).
                let ack = Self::publish_event(&self.js, row, &row.request_id)
                    .await
                    .map_err(|e| self.error(e))?;
                acks.push(ack);
            }
            for ack in acks {
                ack.await.map_err(|e| self.error(e))?;
            }
            Ok(())
        })
    }

    fn pending(&self) -> Result<Vec<EventRow>, DurableError> {
        // The broker redelivers what no node finished.
        Ok(Vec::new())
    }

    fn feeds(&self) -> bool {
        true
    }

    fn feed(self: Arc<Self>, sink: Sink) {
        let runtime = self.runtime.clone();
        runtime.spawn(self.clone().keep_alive());
        runtime.spawn(self.pull(sink));
    }

    fn complete(&self, id: &str) {
        if let Some(m) = self.release_held(id) {
            self.spawn(async move {
                let _ = m.ack().await;
            });
        }
    }

    fn release(&self, id: &str, after: Duration) {
        if let Some(m) = self.release_held(id) {
            self.spawn(async move {
                let _ = m.ack_with(AckKind::Nak(Some(after))).await;
            });
        }
    }

    fn retry(&self, id: &str, attempts: u32, available_at_ms: i64, _error: &str) {
        let Some(m) = self.release_held(id) else {
            return;
        };
        let Some(mut row) = row_of(&m) else { return };
        row.attempts = attempts;
        let mut h = headers(&row);
        h.insert(H_NOT_BEFORE, available_at_ms.to_string().as_str());
        let subject = format!("{EVENTS_SUBJECT}.{}", row.function);
        self.replace(m, subject, h, row, "retry", "cannot republish a retry");
    }

    fn dead_letter(&self, id: &str, attempts: u32, error: &str) {
        let Some(m) = self.release_held(id) else {
            return;
        };
        let Some(mut row) = row_of(&m) else { return };
        row.attempts = attempts;
        let mut h = headers(&row);
        h.insert(H_ERROR, error);
        let subject = format!("{DEAD_SUBJECT}.{}", row.function);
        self.replace(m, subject, h, row, "dead", "cannot store a dead letter");
    }

    fn bury(&self, row: EventRow, error: &str) -> QueueFuture<'_, ()> {
        let error = error.to_string();
        Box::pin(async move {
            self.reachable()?;
            let mut h = headers(&row);
            h.insert(H_ERROR, error.as_str());
            let subject = format!("{DEAD_SUBJECT}.{}", row.function);
            let msg_id = format!("{}.buried", row.request_id);
            publish_acked(&self.js, subject, row.payload, h, msg_id)
                .await
                .map_err(|e| self.error(e))
        })
    }

    fn dead_letters<'a>(&'a self, function: &'a str) -> QueueFuture<'a, Vec<EventRow>> {
        Box::pin(async move {
            self.reachable()?;
            Ok(self
                .dead(function)
                .await?
                .into_iter()
                .map(|(_, r)| r)
                .collect())
        })
    }

    fn dead_counts(&self) -> QueueFuture<'_, Vec<(String, u64)>> {
        Box::pin(self.per_function(DEAD_STREAM, DEAD_SUBJECT))
    }

    fn queued(&self) -> QueueFuture<'_, Vec<(String, u64)>> {
        Box::pin(self.per_function(EVENTS_STREAM, EVENTS_SUBJECT))
    }

    fn redrive<'a>(&'a self, function: &'a str) -> QueueFuture<'a, Vec<EventRow>> {
        Box::pin(async move {
            self.reachable()?;
            let stream = self
                .js
                .get_stream(DEAD_STREAM)
                .await
                .map_err(|e| self.error(e))?;
            let now = now_ms();
            let mut out = Vec::new();
            for (seq, mut row) in self.dead(function).await? {
                row.attempts = 0;
                row.enqueued_at_ms = now;
                row.available_at_ms = now;
                row.last_error = None;
                let msg_id = format!("{}.redrive.{seq}", row.request_id);
                Self::publish_event(&self.js, &row, &msg_id)
                    .await
                    .map_err(|e| self.error(e))?
                    .await
                    .map_err(|e| self.error(e))?;
                // Removed once it is back in the queue: a failure between
                // leaves it in both, delivered once more at worst.
                stream
                    .delete_message(seq)
                    .await
                    .map_err(|e| self.error(e))?;
                out.push(row);
            }
            Ok(out)
        })
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // What this node pulled and did not run goes back at once, for the
        // other nodes (or this one's next start).
        let held: Vec<_> = lock(&self.held).drain().map(|(_, m)| m).collect();
        for m in held {
            self.spawn(async move {
                let _ = m.ack_with(AckKind::Nak(None)).await;
            });
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.outstanding.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let client = self.client.clone();
        let _ = self.runtime.block_on(async move {
            tokio::time::timeout(Duration::from_secs(2), client.flush()).await
        });
    }
}

/// A queue message as a poller delivers it: its row (receive count from
/// the broker's delivery count) and the message to acknowledge.
pub fn message_of(
    m: jetstream::Message,
) -> Option<(super::durable::MessageRow, jetstream::Message)> {
    let info = m.info().ok()?;
    let queue = m
        .subject
        .as_str()
        .strip_prefix(&format!("{QUEUE_SUBJECT}."))?
        .to_string();
    let row = super::durable::MessageRow {
        id: header(&m, H_MESSAGE)?.to_string(),
        queue,
        body: String::from_utf8_lossy(&m.payload).into_owned(),
        sent_at_ms: header_i64(&m, H_SENT)?,
        receive_count: info.delivered.max(1) as u32,
    };
    Some((row, m))
}

/// Tells the broker `msgs` are still being worked on.
async fn progress(msgs: &[Arc<jetstream::Message>]) {
    for m in msgs {
        let _ = m.ack_with(AckKind::Progress).await;
    }
}

/// Keeps `msgs` this node's until aborted (a batch while it runs).
pub async fn keep_alive(msgs: Vec<Arc<jetstream::Message>>) {
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        progress(&msgs).await;
    }
}

/// An object's metadata as the API shows it, from the object store's.
fn object_meta(info: &jetstream::object_store::ObjectInfo) -> Option<super::durable::ObjectMeta> {
    let (bucket, key) = info.name.split_once('/')?;
    Some(super::durable::ObjectMeta {
        bucket: bucket.to_string(),
        key: key.to_string(),
        size: info.size as u64,
        etag: info.metadata.get("etag").cloned().unwrap_or_default(),
        last_modified: info
            .metadata
            .get("last_modified")
            .cloned()
            .unwrap_or_default(),
    })
}
