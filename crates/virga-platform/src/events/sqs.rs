//! Queues: messages stored durably and delivered to functions in batches by
//! an event source mapping (`batch_size`, `batch_window_ms`), with partial
//! batch responses (`batchItemFailures`) and a dead-letter queue after
//! `max_receive` deliveries.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use virga_spec::events::{batch_item_failures, sqs_event, SqsMessage};
use virga_spec::Trigger;

use async_nats::jetstream::AckKind;
use futures_util::StreamExt;

use super::broker::BrokerQueue;
use super::durable::{EventRow, MessageRow};
use super::{lock, now_ms, Events, EventsError, THROTTLE_PAUSE};
use crate::scheduler::{InvokeError, InvokeRequest};

/// Largest message (SQS's limit).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

#[derive(Debug, Default)]
pub(crate) struct QueueState {
    ready: VecDeque<MessageRow>,
    in_flight: usize,
    notify: Arc<Notify>,
}

pub use virga_spec::api::QueueDepth;

impl Events {
    /// Sends a message to a queue; returns its id once it is on disk.
    pub async fn send_message(&self, queue: &str, body: String) -> Result<String, EventsError> {
        if !virga_spec::manifest::valid_resource_name(queue) {
            return Err(EventsError::Invalid(format!(
                "queue {queue:?}: use 1 to 80 of a-z, A-Z, 0-9, '-', '_'"
            )));
        }
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(EventsError::Invalid(format!(
                "a message must be at most {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        let row = MessageRow {
            id: uuid::Uuid::new_v4().to_string(),
            queue: queue.to_string(),
            body,
            sent_at_ms: now_ms(),
            receive_count: 0,
        };
        let id = row.id.clone();
        if let Some(b) = &self.broker {
            b.send_message(&row).await?;
            return Ok(id);
        }
        self.durable.insert_messages(vec![row.clone()]).await?;
        self.enqueue_message(row);
        Ok(id)
    }

    fn enqueue_message(&self, row: MessageRow) {
        let notify = {
            let mut queues = lock(&self.queues);
            let q = queues.entry(row.queue.clone()).or_default();
            q.ready.push_back(row);
            q.notify.clone()
        };
        notify.notify_waiters();
    }

    pub(crate) fn restore_messages(&self) -> Result<(), EventsError> {
        for m in self.durable.messages()? {
            self.enqueue_message(m);
        }
        Ok(())
    }

    pub async fn queue_depths(&self) -> Result<Vec<QueueDepth>, EventsError> {
        let now = now_ms();
        let mut out: Vec<QueueDepth> = lock(&self.queues)
            .iter()
            .map(|(name, q)| QueueDepth {
                queue: name.clone(),
                ready: q.ready.len(),
                in_flight: q.in_flight,
                oldest_age_ms: q.ready.front().map(|m| now - m.sent_at_ms),
                cluster_queued: None,
            })
            .collect();
        if let Some(b) = &self.broker {
            for (queue, n) in b.queue_counts().await? {
                match out.iter_mut().find(|d| d.queue == queue) {
                    Some(d) => d.cluster_queued = Some(n),
                    None => out.push(QueueDepth {
                        queue,
                        ready: 0,
                        in_flight: 0,
                        oldest_age_ms: None,
                        cluster_queued: Some(n),
                    }),
                }
            }
            for d in &mut out {
                d.cluster_queued.get_or_insert(0);
            }
        }
        out.sort_by(|a, b| a.queue.cmp(&b.queue));
        Ok(out)
    }

    fn queue_len(&self, queue: &str) -> usize {
        lock(&self.queues).get(queue).map_or(0, |q| q.ready.len())
    }

    fn take_batch(&self, queue: &str, n: usize) -> Vec<MessageRow> {
        let mut queues = lock(&self.queues);
        let Some(q) = queues.get_mut(queue) else {
            return Vec::new();
        };
        let k = n.min(q.ready.len());
        q.in_flight += k;
        q.ready.drain(..k).collect()
    }

    fn finish_batch(&self, queue: &str, n: usize, requeue: Vec<MessageRow>) {
        let mut queues = lock(&self.queues);
        let q = queues.entry(queue.to_string()).or_default();
        q.in_flight = q.in_flight.saturating_sub(n);
        for m in requeue.into_iter().rev() {
            q.ready.push_front(m);
        }
    }

    /// The event source mapping of `function` on `queue`: runs until aborted.
    pub(crate) async fn poll_queue(
        self: Arc<Self>,
        function: String,
        queue: String,
        batch_size: usize,
        window: Duration,
        max_receive: u32,
    ) {
        if let Some(broker) = self.broker.clone() {
            return self
                .poll_broker_queue(broker, function, queue, batch_size, window, max_receive)
                .await;
        }
        let notify = lock(&self.queues)
            .entry(queue.clone())
            .or_default()
            .notify
            .clone();
        loop {
            // Wait for a first message (registering interest before looking,
            // so a message sent in between is not missed).
            loop {
                let notified = notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.queue_len(&queue) > 0 {
                    break;
                }
                notified.await;
            }
            // Then gather up to a full batch, for at most the batch window.
            if !window.is_zero() {
                let deadline = tokio::time::Instant::now() + window;
                while self.queue_len(&queue) < batch_size {
                    let notified = notify.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if self.queue_len(&queue) >= batch_size {
                        break;
                    }
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(deadline) => break,
                    }
                }
            }
            let mut batch = self.take_batch(&queue, batch_size);
            if batch.is_empty() {
                continue;
            }
            for m in &mut batch {
                m.receive_count += 1;
            }
            let n = batch.len();
            let failed = match self.run_batch(&function, &queue, &batch).await {
                Batch::Ran { failed } => failed,
                Batch::NotRun { gone } => {
                    // Not delivered: back in line, not counted.
                    for m in &mut batch {
                        m.receive_count -= 1;
                    }
                    self.finish_batch(&queue, n, batch);
                    if gone {
                        return;
                    }
                    tokio::time::sleep(THROTTLE_PAUSE).await;
                    continue;
                }
            };
            let (failed, done): (Vec<MessageRow>, Vec<MessageRow>) =
                batch.into_iter().partition(|m| failed.contains(&m.id));
            self.durable
                .delete_messages(done.iter().map(|m| m.id.clone()).collect());
            let mut requeue = Vec::new();
            for m in failed {
                if m.receive_count >= max_receive {
                    if self.message_to_dlq(&function, &queue, &m).await {
                        self.durable.delete_messages(vec![m.id]);
                    }
                } else {
                    self.durable.bump_message(&m.id, m.receive_count);
                    requeue.push(m);
                }
            }
            self.finish_batch(&queue, n, requeue);
        }
    }

    /// The event source mapping of `function` on `queue` in a cluster:
    /// every node's pollers pull from the broker's consumer of the queue.
    /// A message's receive count is the broker's delivery count (a
    /// throttled batch goes back and counts, as on SQS).
    async fn poll_broker_queue(
        self: Arc<Self>,
        broker: Arc<BrokerQueue>,
        function: String,
        queue: String,
        batch_size: usize,
        window: Duration,
        max_receive: u32,
    ) {
        let consumer = loop {
            match broker.queue_consumer(&queue).await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(%queue, error = %e, "cannot reach the queue on the broker; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let pull = |n: usize, wait: Duration| {
            let consumer = consumer.clone();
            async move {
                let mut out = Vec::new();
                if let Ok(mut b) = consumer
                    .batch()
                    .max_messages(n)
                    .expires(wait)
                    .messages()
                    .await
                {
                    while let Some(Ok(m)) = b.next().await {
                        out.push(m);
                    }
                }
                out
            }
        };
        loop {
            // A first message, then up to a full batch within the window.
            let mut held = pull(1, Duration::from_secs(5)).await;
            if held.is_empty() {
                if !broker.connected() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
            if batch_size > 1 {
                let wait = window.max(Duration::from_millis(10));
                held.extend(pull(batch_size - 1, wait).await);
            }
            let (batch, msgs): (Vec<MessageRow>, Vec<_>) = held
                .into_iter()
                .filter_map(super::broker::message_of)
                .unzip();
            let msgs: Vec<_> = msgs.into_iter().map(Arc::new).collect();
            let keep = tokio::spawn(super::broker::keep_alive(msgs.clone()));
            let outcome = self.run_batch(&function, &queue, &batch).await;
            keep.abort();
            let failed = match outcome {
                Batch::Ran { failed } => failed,
                Batch::NotRun { gone } => {
                    for m in &msgs {
                        let _ = m.ack_with(AckKind::Nak(Some(THROTTLE_PAUSE))).await;
                    }
                    if gone {
                        return;
                    }
                    continue;
                }
            };
            for (row, m) in batch.iter().zip(&msgs) {
                let kind = if !failed.contains(&row.id) {
                    AckKind::Ack
                } else if row.receive_count >= max_receive {
                    if !self.message_to_dlq(&function, &queue, row).await {
                        AckKind::Nak(Some(Duration::from_secs(1)))
                    } else {
                        AckKind::Ack
                    }
                } else {
                    AckKind::Nak(None)
                };
                let _ = m.ack_with(kind).await;
            }
        }
    }

    /// Invokes `function` once with `batch` (an SQS event).
    async fn run_batch(&self, function: &str, queue: &str, batch: &[MessageRow]) -> Batch {
        let messages: Vec<SqsMessage> = batch
            .iter()
            .map(|m| SqsMessage {
                message_id: m.id.clone(),
                body: m.body.clone(),
                receive_count: m.receive_count,
                sent_at_ms: m.sent_at_ms,
            })
            .collect();
        let oldest = batch
            .iter()
            .map(|m| m.sent_at_ms)
            .min()
            .unwrap_or_else(now_ms);
        let result = self
            .scheduler
            .invoke(InvokeRequest {
                function: function.to_string(),
                payload: Bytes::from(sqs_event(queue, &messages).to_string()),
                trigger: Trigger::Queue,
                request_id: None,
                waited_ms: (now_ms() - oldest).max(0) as f64,
                has_caller: false,
                tail: false,
            })
            .await;
        match result {
            Ok(inv) if inv.function_error.is_none() => Batch::Ran {
                failed: batch_item_failures(&inv.body).unwrap_or_default(),
            },
            Ok(_) => Batch::Ran {
                failed: batch.iter().map(|m| m.id.clone()).collect(),
            },
            Err(e) => Batch::NotRun {
                gone: matches!(e, InvokeError::NotFound(_)),
            },
        }
    }

    /// A message delivered `max_receive` times goes to the function's
    /// dead-letter queue; true once it is stored there.
    async fn message_to_dlq(&self, function: &str, queue: &str, m: &MessageRow) -> bool {
        let payload = sqs_event(
            queue,
            &[SqsMessage {
                message_id: m.id.clone(),
                body: m.body.clone(),
                receive_count: m.receive_count,
                sent_at_ms: m.sent_at_ms,
            }],
        );
        let row = EventRow {
            request_id: m.id.clone(),
            function: function.to_string(),
            payload: payload.to_string().into_bytes(),
            trigger: Trigger::Queue.as_str().to_string(),
            attempts: m.receive_count,
            enqueued_at_ms: m.sent_at_ms,
            available_at_ms: m.sent_at_ms,
            last_error: None,
        };
        self.queue.bury(row, "MaxReceiveExceeded").await.is_ok()
    }
}

/// What one batch invocation gave.
enum Batch {
    /// It ran: the ids of the messages that failed (all, on a function error).
    Ran { failed: Vec<String> },
    /// It did not run (throttled, shutting down, or the function is `gone`).
    NotRun { gone: bool },
}
