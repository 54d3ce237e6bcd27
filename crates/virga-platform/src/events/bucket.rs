//! Buckets: an object store in the data dir, and the `bucket` trigger that
//! invokes functions with S3-shaped notifications when objects change.

use std::io::Write;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use virga_spec::api::{StoredObject, Triggered};
use virga_spec::{contract, BucketEvent, Trigger, TriggerSpec};

use super::durable::ObjectMeta;
use super::{Events, EventsError};

/// Longest key, as S3 allows.
pub const MAX_KEY_BYTES: usize = 1024;

/// Largest object attached to a notification for a `[model] input =
/// "object"` function: in base64 with its envelope it stays under the
/// 6 MiB an invocation may carry.
pub const MAX_INLINE_OBJECT_BYTES: usize = 4 * 1024 * 1024;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuses keys that could escape the store or that S3 would not take.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(format!("object keys are 1 to {MAX_KEY_BYTES} bytes long"));
    }
    if key.starts_with('/') {
        return Err(format!(
            "key {key:?} is absolute: keys are relative, e.g. images/cat.jpg"
        ));
    }
    if key.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err(format!("key {key:?} has a '.' or '..' segment"));
    }
    if key.chars().any(|c| c.is_control()) {
        return Err(format!("key {key:?} has control characters"));
    }
    Ok(())
}

fn validate_bucket(bucket: &str) -> Result<(), EventsError> {
    if virga_spec::manifest::valid_bucket_name(bucket) {
        Ok(())
    } else {
        Err(EventsError::Invalid(format!(
            "bucket {bucket:?}: use 3 to 63 of a-z, 0-9, '.', '-', starting and ending with a letter or digit"
        )))
    }
}

impl Events {
    /// Where an object's bytes live: named by the key's hash, so no key can
    /// reach outside its bucket's directory.
    fn object_path(&self, bucket: &str, key: &str) -> std::path::PathBuf {
        self.objects_dir
            .join(bucket)
            .join(hex(&Sha256::digest(key.as_bytes())))
    }

    /// Stores an object (on disk before it returns), then fires `put` triggers.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
    ) -> Result<StoredObject, EventsError> {
        validate_bucket(bucket)?;
        validate_key(key).map_err(EventsError::Invalid)?;
        let etag = hex(&Sha256::digest(&body));
        let meta = ObjectMeta {
            bucket: bucket.to_string(),
            key: key.to_string(),
            size: body.len() as u64,
            etag,
            last_modified: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        if let Some(b) = &self.broker {
            b.put_object(&meta, &body).await?;
        } else {
            self.put_local(&meta, body).await?;
        }
        let invocations = self.fire_bucket(&meta, BucketEvent::Put).await?;
        Ok(StoredObject {
            object: meta,
            invocations,
        })
    }

    /// Stores an object in the data dir: its bytes on disk, then its
    /// metadata committed.
    async fn put_local(&self, meta: &ObjectMeta, body: Bytes) -> Result<(), EventsError> {
        let path = self.object_path(&meta.bucket, &meta.key);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let dir = path.parent().expect("object paths have a bucket directory");
            std::fs::create_dir_all(dir)?;
            let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })
        .await
        .map_err(|e| EventsError::Io(std::io::Error::other(e)))??;
        self.durable.put_object(meta.clone()).await?;
        Ok(())
    }

    pub async fn get_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(ObjectMeta, Bytes), EventsError> {
        validate_bucket(bucket)?;
        validate_key(key).map_err(EventsError::Invalid)?;
        let no_such = || EventsError::NoSuchKey {
            bucket: bucket.to_string(),
            key: key.to_string(),
        };
        if let Some(b) = &self.broker {
            let (meta, body) = b.get_object(bucket, key).await?.ok_or_else(no_such)?;
            return Ok((meta, Bytes::from(body)));
        }
        let meta = self.durable.object(bucket, key)?.ok_or_else(no_such)?;
        let body = tokio::fs::read(self.object_path(bucket, key))
            .await
            .map_err(|_| no_such())?;
        Ok((meta, Bytes::from(body)))
    }

    pub async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<ObjectMeta>, EventsError> {
        validate_bucket(bucket)?;
        if let Some(b) = &self.broker {
            return Ok(b.list_objects(bucket, prefix).await?);
        }
        Ok(self.durable.objects(bucket, prefix)?)
    }

    /// Deletes an object, then fires `delete` triggers.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), EventsError> {
        validate_bucket(bucket)?;
        validate_key(key).map_err(EventsError::Invalid)?;
        let no_such = || EventsError::NoSuchKey {
            bucket: bucket.to_string(),
            key: key.to_string(),
        };
        let meta = match &self.broker {
            Some(b) => b.delete_object(bucket, key).await?.ok_or_else(no_such)?,
            None => {
                let meta = self.durable.object(bucket, key)?.ok_or_else(no_such)?;
                self.durable.delete_object(bucket, key).await?;
                let _ = tokio::fs::remove_file(self.object_path(bucket, key)).await;
                meta
            }
        };
        self.fire_bucket(&meta, BucketEvent::Delete).await?;
        Ok(())
    }

    /// Accepts one event per function whose trigger matches; says which.
    async fn fire_bucket(
        &self,
        meta: &ObjectMeta,
        what: BucketEvent,
    ) -> Result<Vec<Triggered>, EventsError> {
        let matching: Vec<String> = self
            .scheduler
            .manifests()
            .into_iter()
            .filter(|(m, _)| {
                m.triggers.iter().any(|t| match t {
                    TriggerSpec::Bucket {
                        bucket,
                        prefix,
                        suffix,
                        events,
                    } => {
                        bucket == &meta.bucket
                            && events.contains(&what)
                            && prefix.as_deref().is_none_or(|p| meta.key.starts_with(p))
                            && suffix.as_deref().is_none_or(|s| meta.key.ends_with(s))
                    }
                    _ => false,
                })
            })
            .map(|(m, _)| m.name.clone())
            .collect();
        if matching.is_empty() {
            return Ok(Vec::new());
        }
        let sequencer = format!(
            "{:016X}",
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
        );
        let payload = Bytes::from(
            virga_spec::events::s3_event(
                &meta.bucket,
                &meta.key,
                meta.size,
                &meta.etag,
                what == BucketEvent::Put,
                &meta.last_modified,
                &sequencer,
            )
            .to_string(),
        );
        let events: Vec<_> = matching
            .iter()
            .map(|f| self.new_event(f, payload.clone(), Trigger::Bucket))
            .collect();
        let triggered = events
            .iter()
            .map(|e| Triggered {
                function: e.function.clone(),
                request_id: e.request_id.clone(),
            })
            .collect();
        self.accept(events).await?;
        Ok(triggered)
    }
}

impl Events {
    /// The notification with each created object's bytes attached
    /// (`s3.object.contentBase64`), for `[model] input = "object"`
    /// functions; where an object cannot be attached, `contentError` says
    /// why and the model runtime answers with that error.
    pub(super) async fn attach_object(&self, notification: &Bytes) -> Bytes {
        use base64::Engine as _;
        let Ok(mut event) = serde_json::from_slice::<serde_json::Value>(notification) else {
            return notification.clone();
        };
        let Some(records) = event
            .get_mut("Records")
            .and_then(serde_json::Value::as_array_mut)
        else {
            return notification.clone();
        };
        for record in records {
            let created = record
                .get("eventName")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|n| n.starts_with("ObjectCreated"));
            let Some(s3) = record.get_mut("s3") else {
                continue;
            };
            let bucket = s3["bucket"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let key = s3["object"]["key"].as_str().unwrap_or_default().to_string();
            if !created {
                continue;
            }
            let (field, value) = match self.get_object(&bucket, &key).await {
                Ok((_, body)) if body.len() > MAX_INLINE_OBJECT_BYTES => (
                    contract::OBJECT_CONTENT_ERROR_FIELD,
                    format!(
                        "ObjectTooLarge: {bucket}/{key} is {} bytes; a model function takes objects of at most {MAX_INLINE_OBJECT_BYTES} bytes",
                        body.len()
                    ),
                ),
                Ok((_, body)) => (
                    contract::OBJECT_CONTENT_FIELD,
                    base64::engine::general_purpose::STANDARD.encode(&body),
                ),
                Err(e) => (contract::OBJECT_CONTENT_ERROR_FIELD, format!("NoSuchKey: {e}")),
            };
            if let Some(object) = s3
                .get_mut("object")
                .and_then(serde_json::Value::as_object_mut)
            {
                object.insert(field.into(), value.into());
            }
        }
        Bytes::from(event.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_escape_or_break_the_store_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../b",
            "a/./b",
            "a\0b",
            "a\nb",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
        assert!(validate_key(&"k".repeat(1025)).is_err());
        for good in [
            "cat.jpg",
            "images/2026/cat.jpg",
            "a..b",
            "weird name (1).png",
        ] {
            assert!(validate_key(good).is_ok(), "{good:?}");
        }
    }
}
