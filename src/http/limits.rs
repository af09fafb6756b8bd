//! Bounds on the request head (the URI, the number of header lines, the bytes of the head),
//! checked on every request before the hot path and the router, so that a request over one
//! of them gets a JSON error like every other refusal (SPEC 3) and touches nothing.
//!
//! hyper parses the head before we see it, and answers its own limits itself: `431` for a head
//! over its bound or with more than 100 header lines, `414` for a URI over 65,534 bytes (which
//! its head bound now makes unreachable), `400` for a head that is not HTTP. Those answers have an empty body, and
//! hyper 1.x has no hook to shape them (they are written by its connection state machine
//! before any service runs). So our bounds sit well below hyper's: hyper's buffer
//! ([`HYPER_MAX_BUF`]) holds four of our largest heads, and our header count stays under
//! hyper's fixed 100 (raising hyper's count moves its header array from the stack to the heap
//! on every request, about 5% of a host-list read by hyper's own measure). Only a request past
//! hyper's bounds, or one that is not HTTP at all, gets hyper's empty answer; the operator
//! guide lists those.
//!
//! The checks read the head hyper already parsed: no allocation, and no lock.

use std::sync::Arc;

use std::borrow::Cow;
use std::time::Instant;

use axum::http::{Request, Uri};
use axum::response::{IntoResponse, Response};

use super::{record, ApiError, NodeState};

/// The longest request URI (path and query; scheme and authority too in absolute form).
/// 8 KiB, as nginx and most proxies: a host-list URL is under 200 bytes.
pub(crate) const MAX_URI_BYTES: usize = 8 * 1024;

/// The most header lines in a request. Under hyper's fixed 100 so that ours answers.
pub(crate) const MAX_HEADERS: usize = 64;

/// The largest request head: the request line plus every header line, counted as
/// `method + uri + 12` and `name + value + 4` per header (the bytes of a minimal HTTP/1.1
/// head). 16 KiB, as Node.js: room for long bearer tokens and browser cookies.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;

/// hyper's bound on a request head (past it hyper answers an empty `431`), and on its read
/// buffer, which bounds the memory one connection's reads can take (a read may overshoot it
/// by one read's size). Four of our largest heads, so that ours answer first.
pub(crate) const HYPER_MAX_BUF: usize = 4 * MAX_HEAD_BYTES;

/// The bytes of a URI as it was on the request line.
fn uri_len(uri: &Uri) -> usize {
    uri.scheme_str().map_or(0, |s| s.len() + "://".len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len())
}

/// Which bound, if any, the head of `request` is over.
pub(crate) fn check<B>(request: &Request<B>) -> Result<(), ApiError> {
    let uri = uri_len(request.uri());
    if uri > MAX_URI_BYTES {
        return Err(ApiError::UriTooLong(MAX_URI_BYTES));
    }
    let headers = request.headers();
    if headers.len() > MAX_HEADERS {
        return Err(ApiError::HeadTooLarge(format!(
            "the request has {} header lines; the limit is {MAX_HEADERS}",
            headers.len()
        )));
    }
    let mut head = request.method().as_str().len() + " ".len() + uri + " HTTP/1.1\r\n".len();
    for (name, value) in headers {
        head += name.as_str().len() + value.len() + ": \r\n".len();
    }
    if head > MAX_HEAD_BYTES {
        return Err(ApiError::HeadTooLarge(format!(
            "the request head takes {head} bytes; the limit is {MAX_HEAD_BYTES}"
        )));
    }
    Ok(())
}

/// The answer to a request whose head is over a bound, counted like any other answer (route
/// `unmatched`: it never reached one), or `None` for a request to serve.
pub(crate) fn refuse<B>(shared: &Arc<NodeState>, request: &Request<B>) -> Option<Response> {
    let error = check(request).err()?;
    let started = Instant::now();
    let response = error.into_response();
    record(
        shared,
        Cow::Borrowed("unmatched"),
        request.method(),
        started,
        &response,
    );
    Some(response)
}

#[cfg(test)]
mod tests {
    use axum::http::{Request, StatusCode};

    use super::*;

    fn request(uri: &str, headers: usize, value_len: usize) -> Request<()> {
        let mut builder = Request::get(uri);
        for i in 0..headers {
            builder = builder.header(format!("x-h{i}"), "v".repeat(value_len));
        }
        builder.body(()).unwrap()
    }

    fn status(request: &Request<()>) -> Option<StatusCode> {
        check(request).err().map(|e| e.into_response().status())
    }

    #[test]
    fn a_uri_one_byte_past_the_limit_is_414() {
        let path = |len: usize| format!("/v1/registration/{}", "a".repeat(len - 17));
        assert_eq!(path(MAX_URI_BYTES).len(), MAX_URI_BYTES);
        assert_eq!(status(&request(&path(MAX_URI_BYTES), 0, 0)), None);
        assert_eq!(
            status(&request(&path(MAX_URI_BYTES + 1), 0, 0)),
            Some(StatusCode::URI_TOO_LONG)
        );
        // The query counts, and so do scheme and authority in absolute form.
        let query = format!("/healthz?q={}", "a".repeat(MAX_URI_BYTES));
        assert_eq!(
            status(&request(&query, 0, 0)),
            Some(StatusCode::URI_TOO_LONG)
        );
        let absolute = format!("http://x{}", path(MAX_URI_BYTES - 7));
        assert_eq!(uri_len(request(&absolute, 0, 0).uri()), MAX_URI_BYTES + 1);
    }

    #[test]
    fn one_header_line_past_the_limit_is_431() {
        assert_eq!(status(&request("/", MAX_HEADERS, 1)), None);
        let e = check(&request("/", MAX_HEADERS + 1, 1)).unwrap_err();
        assert_eq!(
            e.into_response().status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn a_head_one_byte_past_the_limit_is_431() {
        // "GET / HTTP/1.1\r\n" is 16 bytes; "x-h0: " + value + "\r\n" is 8 + value.
        let fits = MAX_HEAD_BYTES - 16 - 8;
        assert_eq!(status(&request("/", 1, fits)), None);
        let e = check(&request("/", 1, fits + 1)).unwrap_err();
        assert!(e.to_string().contains("16385 bytes"), "{e}");
        assert_eq!(
            e.into_response().status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }
}
