//! Request plumbing shared by the handlers: bounded body reads, content types (form, JSON,
//! multipart), path segments and query strings, each turning bad input into an [`ApiError`]
//! instead of axum's plain-text rejections.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;

use super::ApiError;
use crate::bounded_body::{self, BodyError};

/// Path parameters, with a JSON 400 when they do not decode.
pub(crate) struct Segments<T>(pub T);

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
pub(crate) struct QueryMap(pub HashMap<String, String>);

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

/// The body encodings the write endpoints take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// `application/x-www-form-urlencoded`, what `curl -d` sends.
    Form,
    /// `application/json`.
    Json,
    /// `multipart/form-data` with its boundary, what `curl -F` sends (the seed's form parser
    /// took it).
    Multipart(String),
}

/// What the content types say about the accepted encodings, for 415 messages.
const ACCEPTED: &str =
    "send application/x-www-form-urlencoded, multipart/form-data or application/json";

/// The body's encoding, from `Content-Type`; anything else is a 415.
pub(crate) fn encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
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
        "multipart/form-data" => multer::parse_boundary(value)
            .map(Encoding::Multipart)
            .map_err(|_| {
                ApiError::BadRequest(
                    "multipart/form-data needs a `boundary` parameter in Content-Type".into(),
                )
            }),
        "" => Err(ApiError::UnsupportedMediaType(format!(
            "missing Content-Type: {ACCEPTED}"
        ))),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "unsupported Content-Type {other:?}: {ACCEPTED}"
        ))),
    }
}

/// A write endpoint's body, read within the limits.
#[derive(Debug)]
pub(crate) enum Payload {
    /// A url-encoded form.
    Form(Bytes),
    /// A JSON document.
    Json(Bytes),
    /// The text fields of a multipart form, in order (duplicates are for the caller to refuse).
    Fields(Vec<(String, String)>),
}

/// Reads a write endpoint's body: within `limit` bytes and `timeout`, in the encoding its
/// `Content-Type` names. A request without a body (`curl -X POST`, Python's
/// `requests.post(url)`, which send no content type either) is an empty form whatever its
/// content type, so its missing fields answer 400, as the seed's did (SPEC 3.1: "an empty
/// body included"), rather than 415: there is no content to be of the wrong type.
pub(crate) async fn read_payload(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Payload, ApiError> {
    if is_empty(&body) {
        return Ok(Payload::Form(Bytes::new()));
    }
    let encoding = encoding(headers)?;
    let bytes = read(body, limit, timeout).await?;
    Ok(match encoding {
        Encoding::Form => Payload::Form(bytes),
        Encoding::Json => Payload::Json(bytes),
        Encoding::Multipart(boundary) => Payload::Fields(multipart_fields(bytes, boundary).await?),
    })
}

/// Whether a request has no body at all (`Content-Length: 0`, or no length and no chunks).
fn is_empty(body: &Body) -> bool {
    use axum::body::HttpBody;
    body.size_hint().exact() == Some(0)
}

/// The most parts a multipart body may have. A heartbeat has nine fields; the bound keeps a
/// 64 KiB body of empty parts from becoming thousands of allocations.
pub(crate) const MAX_MULTIPART_PARTS: usize = 32;

/// The text fields of a multipart body already read within the body limit (so no part, file
/// or not, can hold more memory than `--max-body`). File parts are refused rather than
/// dropped: a `curl -F tags=@file` would otherwise register a host without its tags.
async fn multipart_fields(
    bytes: Bytes,
    boundary: String,
) -> Result<Vec<(String, String)>, ApiError> {
    let stream =
        futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(bytes) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut fields = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        if fields.len() == MAX_MULTIPART_PARTS {
            return Err(ApiError::BadRequest(format!(
                "malformed body: a multipart body may have at most {MAX_MULTIPART_PARTS} parts"
            )));
        }
        let Some(name) = field.name().map(str::to_owned) else {
            return Err(ApiError::BadRequest(
                "malformed body: a multipart part has no name (Content-Disposition: form-data; name=...)".into(),
            ));
        };
        if field.file_name().is_some() {
            return Err(ApiError::BadRequest(format!(
                "malformed body: multipart part `{name}` is a file upload; send it as a plain field (curl -F '{name}=<file')"
            )));
        }
        let value = field.bytes().await.map_err(malformed)?;
        let value = String::from_utf8(value.to_vec()).map_err(|_| {
            ApiError::BadRequest(format!(
                "malformed body: multipart part `{name}` is not UTF-8 text"
            ))
        })?;
        fields.push((name, value));
    }
    Ok(fields)
}

fn malformed(e: multer::Error) -> ApiError {
    ApiError::BadRequest(format!("malformed body: not a valid multipart form: {e}"))
}

/// Reads a body of at most `limit` bytes within `timeout` (see [`bounded_body::read`]).
pub(crate) async fn read(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, ApiError> {
    bounded_body::read(body, limit, timeout)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge { .. } => ApiError::PayloadTooLarge(limit),
            BodyError::Timeout => ApiError::Timeout,
            BodyError::Unreadable(e) => {
                ApiError::BadRequest(format!("could not read the body: {e}"))
            }
        })
}
