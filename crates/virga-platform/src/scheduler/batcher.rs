//! The batch dispatcher: gathers waiting requests into one invocation as
//! the pure [`virga_policy::BatchPolicy`] allows, and splits the answer.

use super::*;
use serde_json::value::RawValue;
use virga_spec::contract;

/// The payload of a batch: `{"batch": [event, ...]}`, each event as sent
/// (an empty one as `null`).
pub(super) fn batch_payload(events: &[&[u8]]) -> Bytes {
    let mut out = Vec::with_capacity(events.iter().map(|e| e.len() + 1).sum::<usize>() + 12);
    out.extend_from_slice(b"{\"batch\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if e.iter().all(u8::is_ascii_whitespace) {
            out.extend_from_slice(b"null");
        } else {
            out.extend_from_slice(e);
        }
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// Splits a runtime's answer to a batch of `n`: `{"batch": [response, ...]}`
/// in order, with an optional `"errors"` list (index-aligned, `null` for
/// success, else `{"errorType", "errorMessage"}`) for members that failed.
pub(super) fn split_batch_response(body: &[u8], n: usize) -> Vec<Result<Bytes, Failure>> {
    let invalid = |why: String| -> Vec<Result<Bytes, Failure>> {
        (0..n)
            .map(|_| {
                Err(Failure::new(
                    Status::Error,
                    "Runtime.InvalidBatchResponse",
                    format!("the runtime's answer to a batch of {n} is not {{\"batch\": [response, ...]}} with {n} responses: {why}"),
                ))
            })
            .collect()
    };
    // Each answer is handed on as written, as a batch of one's would be:
    // parsed into a `Value` and written again, its keys would be sorted and
    // its floats could change in their last digit.
    if let Err(e) = serde_json::from_slice::<&RawValue>(body) {
        return invalid(format!("not JSON ({e})"));
    }
    let fields: HashMap<String, &RawValue> = serde_json::from_slice(body).unwrap_or_default();
    let Some(items) = fields
        .get(contract::BATCH_FIELD)
        .and_then(|b| serde_json::from_str::<Vec<&RawValue>>(b.get()).ok())
    else {
        return invalid("no \"batch\" list".into());
    };
    if items.len() != n {
        return invalid(format!("{} responses", items.len()));
    }
    let errors = fields
        .get(contract::BATCH_ERRORS_FIELD)
        .and_then(|e| serde_json::from_str::<Vec<serde_json::Value>>(e.get()).ok());
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match errors.as_ref().and_then(|e| e.get(i)) {
            Some(err) if !err.is_null() => {
                let error_type = err
                    .get("errorType")
                    .and_then(|t| t.as_str())
                    .unwrap_or("Unhandled")
                    .to_string();
                Err(Failure {
                    body: Some(Bytes::from(err.to_string())),
                    ..Failure::new(Status::Error, &error_type, String::new())
                })
            }
            _ => Ok(Bytes::copy_from_slice(item.get().as_bytes())),
        })
        .collect()
}

/// [`split_batch_response`] with each failure as its error type: public
/// for the fuzz target and its property test.
#[doc(hidden)]
pub fn split_batch_answer(body: &[u8], n: usize) -> Vec<Result<Bytes, String>> {
    split_batch_response(body, n)
        .into_iter()
        .map(|r| r.map_err(|f| f.error_type))
        .collect()
}

impl Scheduler {
    /// The batch dispatcher of one function: takes the first waiting request,
    /// waits for a slot, gathers a batch as the policy allows and runs it.
    pub(super) async fn dispatch_batches(
        self: Arc<Self>,
        f: Arc<Function>,
        mut rx: mpsc::Receiver<Pending>,
        mut policy: BatchPolicy,
    ) {
        while let Some(first) = rx.recv().await {
            if first.caller_gone() {
                self.fail_queued(&f, first, "ClientClosed", InvokeError::ShuttingDown);
                continue;
            }
            policy.observe(first.arrived);
            // Requests pile up in `rx` while this waits: the batch grows.
            let Some((lease, first)) = self.lease_for(&f, first).await else {
                if f.retired.load(Ordering::SeqCst) {
                    // Redeployed or deleted: what is still queued moves on.
                    rx.close();
                    while let Some(p) = rx.recv().await {
                        self.resubmit(&f, p);
                    }
                    return;
                }
                continue;
            };
            let members = batch::gather(&mut rx, first, &mut policy, |m| m.arrived).await;
            tokio::spawn(self.clone().run_batch(lease, members));
        }
    }

    /// Runs the members of one batch as one invocation; each gets its own
    /// answer and record. Members whose callers left while they were queued
    /// are taken out first.
    pub(super) async fn run_batch(self: Arc<Self>, lease: Lease, members: Vec<Pending>) {
        let f = lease.function().clone();
        let (gone, members): (Vec<Pending>, Vec<Pending>) =
            members.into_iter().partition(Pending::caller_gone);
        for p in gone {
            self.fail_queued(&f, p, "ClientClosed", InvokeError::ShuttingDown);
        }
        if members.is_empty() {
            lease.release(true);
            return;
        }
        let n = members.len();
        let dispatched = Instant::now();
        // A batch of one is delivered as a plain event.
        let (invocation_id, payload, batch) = if n == 1 {
            (
                members[0].request_id.clone(),
                members[0].req.payload.clone(),
                None,
            )
        } else {
            let payloads: Vec<&[u8]> = members.iter().map(|m| &m.req.payload[..]).collect();
            (
                uuid::Uuid::new_v4().to_string(),
                batch_payload(&payloads),
                Some(n),
            )
        };
        for m in &members {
            f.logs.push(format!(
                "START RequestId: {} Version: {}",
                m.request_id, f.version
            ));
        }
        let tail = members.iter().any(|m| m.req.tail);
        let run = self
            .execute(lease, &invocation_id, payload, batch, tail)
            .await;
        let outcomes: Vec<Result<Bytes, Failure>> = match (&run.outcome, batch) {
            (Ok(body), Some(n)) => split_batch_response(body, n),
            (Ok(body), None) => vec![Ok(body.clone())],
            (Err(failure), _) => (0..n).map(|_| Err(failure.clone())).collect(),
        };
        for (m, outcome) in members.into_iter().zip(outcomes) {
            let mut record = self.blank_record(&f, &m);
            record.queue_ms = m.req.waited_ms + ms(dispatched.saturating_duration_since(m.arrived));
            run.fill(&mut record);
            record.caller_gone = m.caller_gone();
            let answer = self.conclude(&f, record, outcome, run.output.clone());
            m.answer(Ok(answer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_answers_are_handed_on_as_written() {
        let out = split_batch_response(
            br#"{"batch": [{"z": 1, "a": [1.9808579742613906e-10]}, "caf\u00e9"]}"#,
            2,
        );
        assert_eq!(
            &out[0].as_ref().unwrap()[..],
            br#"{"z": 1, "a": [1.9808579742613906e-10]}"#
        );
        assert_eq!(&out[1].as_ref().unwrap()[..], br#""caf\u00e9""#);
    }

    #[test]
    fn batches_are_wrapped_and_answers_split_per_member() {
        let p = batch_payload(&[b"{\"a\":1}", b"", b"[2]"]);
        assert_eq!(&p[..], br#"{"batch":[{"a":1},null,[2]]}"#);
        let out = split_batch_response(
            br#"{"batch":[{"x":1},null,3],"errors":[null,{"errorType":"Bad","errorMessage":"no"},null]}"#,
            3,
        );
        assert_eq!(&out[0].as_ref().unwrap()[..], br#"{"x":1}"#);
        let e = out[1].as_ref().unwrap_err();
        assert_eq!(e.error_type, "Bad");
        assert_eq!(&out[2].as_ref().unwrap()[..], b"3");
        for bad in [
            &b"nope"[..],
            br#"{"batch":[1]}"#,
            br#"{"other":[1,2,3]}"#,
            br#"[1,2,3]"#,
            br#"{"batch":{"0":1}}"#,
        ] {
            let out = split_batch_response(bad, 3);
            assert_eq!(out.len(), 3);
            assert!(out
                .iter()
                .all(|o| o.as_ref().unwrap_err().error_type == "Runtime.InvalidBatchResponse"));
        }
    }
}
