//! `/v1` storage: objects (S3-like buckets), topics and queues.

use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct ListObjectsQuery {
    prefix: Option<String>,
}

pub(super) async fn list_objects(
    State(state): State<Arc<AppState>>,
    Path(bucket): Path<String>,
    Query(q): Query<ListObjectsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let objects = state
        .events
        .list_objects(&bucket, q.prefix.as_deref().unwrap_or(""))
        .await?;
    Ok(Json(json!({ "objects": objects })))
}

pub(super) async fn put_object(
    State(state): State<Arc<AppState>>,
    Path((bucket, key)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let body = to_bytes(body, MAX_OBJECT_BYTES)
        .await
        .map_err(|_| too_large(MAX_OBJECT_BYTES, "An object"))?;
    let stored = state.events.put_object(&bucket, &key, body).await?;
    let mut resp = Json(&stored).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", stored.object.etag)) {
        resp.headers_mut().insert("etag", v);
    }
    Ok(resp)
}

pub(super) async fn get_object(
    State(state): State<Arc<AppState>>,
    Path((bucket, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (meta, body) = state.events.get_object(&bucket, &key).await?;
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", meta.etag)) {
        h.insert("etag", v);
    }
    Ok(resp)
}

pub(super) async fn delete_object(
    State(state): State<Arc<AppState>>,
    Path((bucket, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.events.delete_object(&bucket, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub(super) struct PublishQuery {
    subject: Option<String>,
}

pub(super) async fn publish(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
    Query(q): Query<PublishQuery>,
    body: Body,
) -> Result<Json<virga_spec::api::Published>, ApiError> {
    let body = to_bytes(body, MAX_ASYNC_PAYLOAD_BYTES)
        .await
        .map_err(|_| too_large(MAX_ASYNC_PAYLOAD_BYTES, "A message"))?;
    let message = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("a message must be UTF-8 text"))?;
    let (id, subscribers) = state
        .events
        .publish(&topic, &message, q.subject.as_deref())
        .await?;
    Ok(Json(virga_spec::api::Published {
        message_id: id,
        subscribers,
    }))
}

pub(super) async fn send_message(
    State(state): State<Arc<AppState>>,
    Path(queue): Path<String>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = to_bytes(body, crate::events::sqs::MAX_MESSAGE_BYTES)
        .await
        .map_err(|_| too_large(crate::events::sqs::MAX_MESSAGE_BYTES, "A message"))?;
    let message = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("a message must be UTF-8 text"))?;
    let id = state.events.send_message(&queue, message).await?;
    Ok(Json(json!({ "message_id": id })))
}

pub(super) async fn queues(
    State(state): State<Arc<AppState>>,
) -> Result<Json<virga_spec::api::Queues>, ApiError> {
    let functions = state.events.async_depths().await?;
    Ok(Json(virga_spec::api::Queues {
        functions,
        queues: state.events.queue_depths().await?,
    }))
}
