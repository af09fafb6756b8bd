//! The one error type of the HTTP API. Every error answers `{"error": "..."}`: 4xx bodies say
//! what was wrong in words a user can act on, 5xx bodies say little and the detail is logged.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use discovery_api::{ErrorBody, ValidationError};

use crate::state::now;
use crate::throttle::Throttle;

/// When a refusal by a limit was last logged.
static LIMIT_WARNED: Throttle = Throttle::new();

/// Why a request was refused; its `IntoResponse` picks the status and the JSON body.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// Invalid input: a field, a path segment or a query parameter.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong bearer token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The host or route does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not with this method.
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// The body is over the limit.
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// The request URI is over the limit (bytes).
    #[error("the request URI is longer than the limit of {0} bytes")]
    UriTooLong(usize),
    /// The request head (header lines or their bytes) is over a limit; the string says which.
    #[error("{0}")]
    HeadTooLarge(String),
    /// The body's content type is not one this route takes.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The client took too long to send its body.
    #[error("the request body did not arrive in time")]
    Timeout,
    /// The node does not hold a usable state yet (SPEC 4.4).
    #[error("this registry node is starting and does not hold a usable state yet; keep your cached hosts and retry")]
    NotReady,
    /// A limit of the registry refuses the write.
    #[error("{0}")]
    Unavailable(String),
    /// The node was stalled and takes no write for a moment (see `StallWatch::writes_held`).
    #[error("this registry node was stalled and is re-syncing with its peers; send the write to another node, or retry")]
    Resyncing,
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ApiError::HeadTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotReady | ApiError::Unavailable(_) | ApiError::Resyncing => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // At most one line every 10 s: a 413 costs a client one header line, so one line per
        // refusal would let anyone flood the log. The request metrics count every one.
        if matches!(
            self,
            ApiError::Unavailable(_) | ApiError::PayloadTooLarge(_)
        ) && LIMIT_WARNED.allow(now() / 1_000_000)
        {
            tracing::warn!(error = %self, "refused by a limit (at most one line every 10 s)");
        }
        let mut response = (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::NotReady | ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::Resyncing => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}
