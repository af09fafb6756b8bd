//! Request plumbing shared by the handlers: bounded body reads, content types, path segments
//! and query strings, each turning bad input into an [`ApiError`] instead of axum's plain-text
//! rejections.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;

use super::ApiError;

/// Path parameters, with a JSON 400 when they do not decode.
pub struct Segments<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Segments<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| Segments(t))
            .map_err(|e| ApiError::BadRequest(format!("invalid path: {}", e.body_text())))
    }
}

/// Query parameters by name, with a JSON 400 for a repeated one.
pub struct QueryMap(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut map = HashMap::new();
        if let Some(q) = parts.uri.query() {
            for (k, v) in form_urlencoded::parse(q.as_bytes()).into_owned() {
                if map.insert(k.clone(), v).is_some() {
                    return Err(ApiError::BadRequest(format!(
                        "query parameter `{k}` is given twice"
                    )));
                }
            }
        }
        Ok(QueryMap(map))
    }
}

/// The two body encodings the write endpoints take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-www-form-urlencoded`, what `curl -d` sends.
    Form,
    /// `application/json`.
    Json,
}

/// The body's encoding, from `Content-Type`; anything else is a 415.
pub fn encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-www-form-urlencoded" => Ok(Encoding::Form),
        "application/json" => Ok(Encoding::Json),
        "" => Err(ApiError::UnsupportedMediaType(
            "missing Content-Type: send application/x-www-form-urlencoded or application/json"
                .into(),
        )),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "unsupported Content-Type {other:?}: send application/x-www-form-urlencoded or application/json"
        ))),
    }
}

/// Reads a body of at most `limit` bytes within `timeout`.
///
/// A body whose declared `Content-Length` is over `limit` is refused before a byte of it is
/// read: waiting for bytes we would refuse anyway lets a client hold the connection until
/// the read timeout (and hyper closes the connection after the answer, so the unread body is
/// never drained).
pub async fn read(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, ApiError> {
    if body.size_hint().lower() > limit as u64 {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ApiError::Timeout),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let e = e.into_inner();
            if e.is::<http_body_util::LengthLimitError>() {
                Err(ApiError::PayloadTooLarge(limit))
            } else {
                Err(ApiError::BadRequest(format!(
                    "could not read the body: {e}"
                )))
            }
        }
    }
}
