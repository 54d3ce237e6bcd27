//! Errors as the API shows them: Lambda error names and messages that say
//! what to fix.

use super::*;

/// An error as Lambda reports it: status, `x-amzn-ErrorType`, and
/// `{"Type": "User", "message": ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error_type: &'static str,
    message: String,
}

impl ApiError {
    pub(super) fn new(
        status: StatusCode,
        error_type: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            error_type,
            message: message.into(),
        }
    }

    pub(super) fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", what)
    }

    /// Lambda's `ResourceNotFoundException` for a function.
    pub(super) fn function_not_found(name: &str) -> Self {
        Self::not_found(format!("Function not found: {name}"))
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_server_error() {
            "Service"
        } else {
            "User"
        };
        let mut body = json!({ "Type": kind, "message": self.message });
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            body["Reason"] = json!("ReservedFunctionConcurrentInvocationLimitExceeded");
        }
        let mut resp = (self.status, Json(body)).into_response();
        resp.headers_mut().insert(
            HeaderName::from_static("x-amzn-errortype"),
            HeaderValue::from_static(self.error_type),
        );
        resp
    }
}

/// The status and Lambda error name of an invocation that did not run.
pub(crate) fn describe_invoke_error(e: &InvokeError) -> (StatusCode, &'static str) {
    match e {
        InvokeError::NotFound(_) | InvokeError::Deleted(_) => {
            (StatusCode::NOT_FOUND, "ResourceNotFoundException")
        }
        InvokeError::Throttled { .. }
        | InvokeError::NoMemory { .. }
        | InvokeError::ShareFull { .. } => {
            (StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException")
        }
        InvokeError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "ServiceException"),
    }
}

impl From<InvokeError> for ApiError {
    fn from(e: InvokeError) -> Self {
        let (status, error_type) = describe_invoke_error(&e);
        ApiError::new(status, error_type, e.to_string())
    }
}

impl From<crate::cluster::route::RemoteError> for ApiError {
    fn from(e: crate::cluster::route::RemoteError) -> Self {
        // The names another node can answer (`describe_invoke_error`).
        let error_type = match e.error_type.as_str() {
            "ResourceNotFoundException" => "ResourceNotFoundException",
            "TooManyRequestsException" => "TooManyRequestsException",
            _ => "ServiceException",
        };
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY);
        ApiError::new(status, error_type, e.message)
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        match e {
            DeployError::Store(s) => s.into(),
            DeployError::NotFound(name) => ApiError::function_not_found(&name),
            DeployError::Code(e @ crate::code::CodeError::Io { .. }) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                e.to_string(),
            ),
            DeployError::Code(
                e @ (crate::code::CodeError::TooLarge { .. }
                | crate::code::CodeError::TooManyFiles { .. }),
            ) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "CodeStorageExceededException",
                e.to_string(),
            ),
            other => ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                other.to_string(),
            ),
        }
    }
}

impl From<EventsError> for ApiError {
    fn from(e: EventsError) -> Self {
        match e {
            EventsError::NotFound(_) => ApiError::not_found(e.to_string()),
            EventsError::NoSuchKey { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "NoSuchKey", e.to_string())
            }
            EventsError::Invalid(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                e.to_string(),
            ),
            EventsError::Durable(crate::events::durable::DurableError::Broker { .. }) => {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceException",
                    e.to_string(),
                )
            }
            EventsError::Durable(_) | EventsError::Io(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                e.to_string(),
            ),
        }
    }
}

pub(super) fn too_large(limit: usize, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestTooLargeException",
        format!("{what} must be smaller than {limit} bytes"),
    )
}

/// What needs the broker while it is away, or what it refused.
impl From<crate::cluster::ClusterError> for ApiError {
    fn from(e: crate::cluster::ClusterError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceException",
            e.to_string(),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            e.to_string(),
        )
    }
}

/// Work moved off the async threads panicked or was cancelled.
impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            format!("the platform failed while answering: {e}"),
        )
    }
}
