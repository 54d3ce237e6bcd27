//! Event shapes delivered to functions by triggers, as AWS services shape
//! them (S3 notifications, SNS, SQS batches, EventBridge schedules), so
//! handlers written for AWS read them unchanged.

use serde_json::{json, Value};

/// An S3 `ObjectCreated:Put` / `ObjectRemoved:Delete` notification.
pub fn s3_event(
    bucket: &str,
    key: &str,
    size: u64,
    etag: &str,
    put: bool,
    time: &str,
    sequencer: &str,
) -> Value {
    json!({
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": time,
            "eventName": if put { "ObjectCreated:Put" } else { "ObjectRemoved:Delete" },
            "s3": {
                "s3SchemaVersion": "1.0",
                "bucket": { "name": bucket, "arn": format!("arn:aws:s3:::{bucket}") },
                "object": { "key": key, "size": size, "eTag": etag, "sequencer": sequencer }
            }
        }]
    })
}

/// An SNS notification of one message to one subscriber.
pub fn sns_event(
    topic: &str,
    message_id: &str,
    message: &str,
    subject: Option<&str>,
    time: &str,
) -> Value {
    json!({
        "Records": [{
            "EventSource": "aws:sns",
            "EventVersion": "1.0",
            "EventSubscriptionArn": format!("arn:aws:sns:us-east-1:000000000000:{topic}:virga"),
            "Sns": {
                "Type": "Notification",
                "MessageId": message_id,
                "TopicArn": format!("arn:aws:sns:us-east-1:000000000000:{topic}"),
                "Subject": subject,
                "Message": message,
                "Timestamp": time
            }
        }]
    })
}

/// One SQS message inside a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SqsMessage {
    pub message_id: String,
    pub body: String,
    pub receive_count: u32,
    pub sent_at_ms: i64,
}

/// An SQS batch, as an event source mapping delivers it.
pub fn sqs_event(queue: &str, messages: &[SqsMessage]) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({
                "messageId": m.message_id,
                "receiptHandle": m.message_id,
                "body": m.body,
                "attributes": {
                    "ApproximateReceiveCount": m.receive_count.to_string(),
                    "SentTimestamp": m.sent_at_ms.to_string(),
                },
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:us-east-1:000000000000:{queue}"),
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    json!({ "Records": records })
}

/// The message ids a handler reported as failed (`batchItemFailures`), or
/// `None` when the response does not use partial batch responses.
pub fn batch_item_failures(response: &[u8]) -> Option<Vec<String>> {
    let v: Value = serde_json::from_slice(response).ok()?;
    let failures = v.get("batchItemFailures")?.as_array()?;
    Some(
        failures
            .iter()
            .filter_map(|f| {
                f.get("itemIdentifier")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect(),
    )
}

/// An EventBridge scheduled event.
pub fn schedule_event(rule: &str, id: &str, time: &str) -> Value {
    json!({
        "version": "0",
        "id": id,
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": time,
        "region": "us-east-1",
        "resources": [format!("arn:aws:events:us-east-1:000000000000:rule/{rule}")],
        "detail": {}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_carry_the_fields_handlers_read() {
        let e = s3_event("b", "k/1.jpg", 3, "abc", true, "t", "1");
        assert_eq!(e["Records"][0]["eventName"], "ObjectCreated:Put");
        assert_eq!(e["Records"][0]["s3"]["bucket"]["name"], "b");
        assert_eq!(e["Records"][0]["s3"]["object"]["key"], "k/1.jpg");
        assert_eq!(e["Records"][0]["s3"]["object"]["size"], 3);
        assert_eq!(e["Records"][0]["s3"]["object"]["eTag"], "abc");
        let e = sns_event("t", "m", "hello", None, "t");
        assert_eq!(e["Records"][0]["Sns"]["Message"], "hello");
        let e = sqs_event(
            "q",
            &[SqsMessage {
                message_id: "1".into(),
                body: "x".into(),
                receive_count: 1,
                sent_at_ms: 5,
            }],
        );
        assert_eq!(e["Records"][0]["body"], "x");
        assert_eq!(
            e["Records"][0]["attributes"]["ApproximateReceiveCount"],
            "1"
        );
        assert_eq!(
            schedule_event("r", "i", "t")["detail-type"],
            "Scheduled Event"
        );
    }

    #[test]
    fn partial_batch_responses_are_read() {
        assert_eq!(
            batch_item_failures(
                br#"{"batchItemFailures":[{"itemIdentifier":"a"},{"itemIdentifier":"b"}]}"#
            ),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(
            batch_item_failures(br#"{"batchItemFailures":[]}"#),
            Some(vec![])
        );
        assert_eq!(batch_item_failures(b"{}"), None);
        assert_eq!(batch_item_failures(b"not json"), None);
    }
}
