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

    pub fn queue_depths(&self) -> Vec<QueueDepth> {
        let now = now_ms();
        let mut out: Vec<QueueDepth> = lock(&self.queues)
            .iter()
            .map(|(name, q)| QueueDepth {
                queue: name.clone(),
                ready: q.ready.len(),
                in_flight: q.in_flight,
                oldest_age_ms: q.ready.front().map(|m| now - m.sent_at_ms),
            })
            .collect();
        out.sort_by(|a, b| a.queue.cmp(&b.queue));
        out
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
                    function: function.clone(),
                    payload: Bytes::from(sqs_event(&queue, &messages).to_string()),
                    trigger: Trigger::Queue,
                    request_id: None,
                    waited_ms: (now_ms() - oldest).max(0) as f64,
                    has_caller: false,
                })
                .await;
            let failed: Vec<String> = match &result {
                Ok(inv) if inv.function_error.is_none() => {
                    batch_item_failures(&inv.body).unwrap_or_default()
                }
                Ok(_) => batch.iter().map(|m| m.id.clone()).collect(),
                Err(InvokeError::Throttled { .. })
                | Err(InvokeError::ShareFull { .. })
                | Err(InvokeError::NoMemory { .. })
                | Err(InvokeError::ShuttingDown)
                | Err(InvokeError::NotFound(_))
                | Err(InvokeError::Deleted(_)) => {
                    // Not delivered: back in line, not counted.
                    for m in &mut batch {
                        m.receive_count -= 1;
                    }
                    let gone = matches!(result, Err(InvokeError::NotFound(_)));
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
                    self.message_to_dlq(&function, &queue, m).await;
                } else {
                    self.durable.bump_message(&m.id, m.receive_count);
                    requeue.push(m);
                }
            }
            self.finish_batch(&queue, n, requeue);
        }
    }

    /// A message delivered `max_receive` times goes to the function's dead-letter queue.
    async fn message_to_dlq(&self, function: &str, queue: &str, m: MessageRow) {
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
        if self.queue.enqueue(vec![row]).await.is_ok() {
            self.queue
                .dead_letter(&m.id, m.receive_count, "MaxReceiveExceeded");
            self.durable.delete_messages(vec![m.id]);
        }
    }
}
