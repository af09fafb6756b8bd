//! `/v1/registration/...`: heartbeats, host lists (with ETag, index and long polls), the
//! repository query and deletes (SPEC 3.1).

use std::sync::Arc;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use discovery_api::{parse_bool, Port, Registration, RepoName, ServiceName, INDEX_HEADER};

use super::body::{self, Payload, QueryMap, Segments};
use super::{require, ApiError, NodeState};
use crate::auth::Access;
use crate::metrics::HeartbeatResult;
use crate::registry::{RegistryFull, ServiceView};
use crate::state::now;
use crate::throttle::Throttle;

/// `{}`: the seed's success body.
fn ok_empty() -> Response {
    // Static bytes: heartbeats answer this thousands of times a second.
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        axum::body::Bytes::from_static(b"{}"),
    )
        .into_response()
}

pub(super) fn service_name(s: &str) -> Result<ServiceName, ApiError> {
    Ok(ServiceName::parse(s)?)
}

pub(super) fn ip_literal(s: &str) -> Result<IpAddr, ApiError> {
    s.parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid `ip_address`: {s:?} is not an IPv4 or IPv6 address literal"
            ))
        })
}

/// `POST /v1/registration/{service}`: the heartbeat.
pub(crate) async fn register(
    State(shared): State<Arc<NodeState>>,
    Segments(service): Segments<String>,
    QueryMap(query): QueryMap,
    headers: HeaderMap,
    connect: Option<axum::extract::Extension<ConnectInfo<SocketAddr>>>,
    body: Body,
) -> Result<Response, ApiError> {
    let peer = connect.map(|axum::extract::Extension(ConnectInfo(peer))| peer);
    register_now(&shared, &service, &query, &headers, peer, body).await
}

/// A heartbeat from the connecting `peer`: the routed handler's and the hot path's answer.
/// Refusals are counted here, whatever refused them.
pub(super) async fn register_now(
    shared: &Arc<NodeState>,
    service: &str,
    query: &std::collections::HashMap<String, String>,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    body: Body,
) -> Result<Response, ApiError> {
    let result = async {
        require(shared, Access::Write, headers)?;
        if shared.writes_held() {
            return Err(ApiError::Resyncing);
        }
        let service = service_name(service)?;
        let limits = &shared.config.limits;
        let registration =
            match body::read_payload(headers, body, limits.max_body, limits.read_timeout).await? {
                Payload::Form(bytes) => Registration::from_form(&bytes)?,
                Payload::Json(bytes) => Registration::from_json(&bytes)?,
                Payload::Fields(fields) => Registration::from_text_fields(fields)?,
            };
        let auto_ip = match query.get("auto_ip") {
            Some(v) => registration.auto_ip || parse_bool("auto_ip", v)?,
            None => registration.auto_ip,
        };
        let ip = match (registration.ip, auto_ip) {
            (Some(ip), _) => ip,
            (None, true) => client_ip(headers, peer, shared.config.trusted_proxy_hops)?,
            (None, false) => {
                return Err(ApiError::BadRequest(
                    "missing field `ip` (or set auto_ip=true to use the connecting address)".into(),
                ))
            }
        };
        match shared.registry.heartbeat(&service, ip, &registration, now()) {
            Ok(hb) => {
                let result = match (&hb.change, hb.created) {
                    (_, true) => HeartbeatResult::created,
                    (Some(_), false) => HeartbeatResult::changed,
                    (None, false) => HeartbeatResult::refreshed,
                };
                shared.metrics.heartbeat(result);
                if let Some(change) = hb.change {
                    shared.publish(std::slice::from_ref(&change));
                }
                Ok(ok_empty())
            }
            Err(RegistryFull(max)) => Err(ApiError::Unavailable(format!(
                "the registry holds its maximum of {max} hosts (--max-hosts); new hosts are refused, existing ones keep refreshing"
            ))),
        }
    }
    .await;
    if result.is_err() {
        shared.metrics.heartbeat(HeartbeatResult::refused);
    }
    result
}

/// The header a proxy appends the address it received a request from to.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// The address `auto_ip` registers: the connecting peer's, or with `hops` trusted proxies in
/// front (`--trusted-proxy-hops`), the `hops`-th address from the right of `X-Forwarded-For`.
/// Each proxy appends the address it saw, so the entries left of the ones our own proxies
/// wrote are the client's to forge; counting from the right reads only trusted ones. Several
/// `X-Forwarded-For` headers are one list, in order (RFC 7230 3.2.2).
fn client_ip(
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    hops: usize,
) -> Result<IpAddr, ApiError> {
    if hops == 0 {
        let Some(peer) = peer else {
            return Err(ApiError::BadRequest(
                "`auto_ip` is set but the peer address is unknown; send `ip`".into(),
            ));
        };
        return Ok(peer.ip().to_canonical());
    }
    let mut entries = Vec::new();
    for value in headers.get_all(FORWARDED_FOR) {
        let text = value.to_str().map_err(|_| {
            ApiError::BadRequest("invalid `X-Forwarded-For`: not ASCII text".into())
        })?;
        entries.extend(text.split(',').map(str::trim));
    }
    let Some(entry) = entries.len().checked_sub(hops).map(|i| entries[i]) else {
        return Err(ApiError::BadRequest(format!(
            "`auto_ip` behind {hops} trusted proxies (--trusted-proxy-hops) needs at least {hops} `X-Forwarded-For` addresses, got {}; send `ip`",
            entries.len()
        )));
    };
    entry
        .parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid `X-Forwarded-For`: entry {entry:?} is not an IPv4 or IPv6 address literal"
            ))
        })
}

/// Parses `?index=N&wait=30s`: the long-poll parameters.
fn long_poll(
    query: &std::collections::HashMap<String, String>,
    max: Duration,
) -> Result<Option<(u64, Duration)>, ApiError> {
    let Some(index) = query.get("index") else {
        if query.contains_key("wait") {
            return Err(ApiError::BadRequest(
                "`wait` needs `index` (the X-Discovery-Index you hold)".into(),
            ));
        }
        return Ok(None);
    };
    let index: u64 = index.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "invalid `index`: {index:?} is not a non-negative integer"
        ))
    })?;
    let wait = match query.get("wait") {
        None => Duration::from_secs(30),
        Some(w) => parse_wait(w)?,
    };
    if wait > max {
        return Err(ApiError::BadRequest(format!(
            "invalid `wait`: at most {}s",
            max.as_secs()
        )));
    }
    Ok(Some((index, wait)))
}

fn parse_wait(w: &str) -> Result<Duration, ApiError> {
    if let Ok(secs) = w.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(w).map_err(|_| {
        ApiError::BadRequest(format!(
            "invalid `wait`: {w:?} is not a duration such as 30s or 2m"
        ))
    })
}

/// Whether `If-None-Match` names this ETag (weak comparison, lists and `*` included).
fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    fn strip(t: &str) -> &str {
        t.trim().trim_start_matches("W/")
    }
    let ours = strip(etag);
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || strip(t) == ours)
}

/// Answers with a prepared view: 304 on a matching `If-None-Match`, else its bytes.
fn respond(view: &ServiceView, headers: &HeaderMap) -> Response {
    let index = HeaderValue::from(view.index);
    let etag = HeaderValue::from_str(&view.etag).unwrap_or(HeaderValue::from_static("W/\"0\""));
    if etag_matches(headers, &view.etag) {
        return (
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag),
                (header::HeaderName::from_static(INDEX_HEADER), index),
            ],
        )
            .into_response();
    }
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag),
            (header::HeaderName::from_static(INDEX_HEADER), index),
        ],
        view.body.clone(),
    )
        .into_response()
}

/// Refuses host-list reads until the node holds a usable state (SPEC 4.4).
pub(super) fn require_ready(shared: &Arc<NodeState>) -> Result<(), ApiError> {
    if shared.is_ready() {
        Ok(())
    } else {
        Err(ApiError::NotReady)
    }
}

/// `GET /v1/registration/{service}`: the live hosts, optionally as a long poll.
pub(crate) async fn list(
    State(shared): State<Arc<NodeState>>,
    Segments(service): Segments<String>,
    QueryMap(query): QueryMap,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let service = readable(&shared, &service, &headers)?;
    let Some((index, wait)) = long_poll(&query, shared.config.limits.max_wait)? else {
        return current(&shared, &service, &headers);
    };
    require_ready(&shared)?;
    if shared.registry.index(service.as_str()) > index {
        return Ok(respond(&shared.registry.view(&service, now()), &headers));
    }
    let Some(_slot) = shared.long_poll_slot() else {
        // Over the long-poll limit: answer now rather than hold more memory.
        shared.metrics.long_polls_refused.inc();
        warn_long_poll_limit(shared.config.limits.max_long_polls);
        return Ok(respond(&shared.registry.view(&service, now()), &headers));
    };
    let mut subscription = shared.wakers.subscribe(&service);
    // Subscribed first, then checked: a change in between is not lost.
    if shared.registry.index(service.as_str()) <= index {
        tokio::select! {
            _ = tokio::time::timeout(wait, subscription.changed_past(index)) => {}
            _ = shared.shutdown.cancelled() => {}
        }
    }
    drop(subscription);
    Ok(respond(&shared.registry.view(&service, now()), &headers))
}

/// When the long-poll limit last logged a warning.
static LONG_POLL_LIMIT_WARNED: Throttle = Throttle::new();

/// Warns that the long-poll limit answers polls at once, at most every 10 s: pollers
/// answered at once poll again at once, so one line per refusal would flood the log.
/// `discovery_long_polls_refused_total` counts every one.
fn warn_long_poll_limit(max: usize) {
    if LONG_POLL_LIMIT_WARNED.allow(now() / 1_000_000) {
        tracing::warn!(
            max_long_polls = max,
            "long-poll limit reached: further polls are answered at once (--max-long-polls)"
        );
    }
}

/// A host-list read that is not a long poll: the routed handler's and the hot path's answer.
pub(super) fn list_now(
    shared: &Arc<NodeState>,
    service: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    current(shared, &readable(shared, service, headers)?, headers)
}

/// The service named in a read the caller may make.
fn readable(
    shared: &Arc<NodeState>,
    service: &str,
    headers: &HeaderMap,
) -> Result<ServiceName, ApiError> {
    require(shared, Access::Read, headers)?;
    service_name(service)
}

/// The service's current list, once the node is ready.
fn current(
    shared: &Arc<NodeState>,
    service: &ServiceName,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    require_ready(shared)?;
    Ok(respond(&shared.registry.view(service, now()), headers))
}

/// `GET /v1/registration/repo/{service_repo_name}`.
pub(crate) async fn list_repo(
    State(shared): State<Arc<NodeState>>,
    Segments(repo): Segments<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require(&shared, Access::Read, &headers)?;
    let repo = RepoName::parse(&repo)?;
    if repo.as_str().is_empty() {
        return Err(ApiError::BadRequest(
            "`service_repo_name` must not be empty".into(),
        ));
    }
    require_ready(&shared)?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        shared.registry.repo_hosts(&repo),
    )
        .into_response())
}

/// `DELETE /v1/registration/{service}/{ip_address}[?port=N]`.
pub(crate) async fn delete(
    State(shared): State<Arc<NodeState>>,
    Segments((service, ip)): Segments<(String, String)>,
    QueryMap(query): QueryMap,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    delete_host(&shared, &service, &ip, &query, &headers)
}

/// `DELETE /v1/registration/repo/{ip_address}`: a delete on the service named `repo`, whose
/// path the repository query shadows.
pub(crate) async fn delete_repo_service(
    State(shared): State<Arc<NodeState>>,
    Segments(ip): Segments<String>,
    QueryMap(query): QueryMap,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    delete_host(&shared, "repo", &ip, &query, &headers)
}

fn delete_host(
    shared: &Arc<NodeState>,
    service: &str,
    ip: &str,
    query: &std::collections::HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    require(shared, Access::Write, headers)?;
    if shared.writes_held() {
        return Err(ApiError::Resyncing);
    }
    let service = service_name(service)?;
    let ip = ip_literal(ip)?;
    let port = query.get("port").map(|p| Port::parse(p)).transpose()?;
    match shared.registry.delete(&service, ip, port, now()) {
        Ok(change) => {
            shared.publish(std::slice::from_ref(&change));
            Ok(ok_empty())
        }
        Err(_) => Err(ApiError::BadRequest(format!(
            "no host of service {service:?} at {ip}{} to delete",
            port.map(|p| format!(" port {p}")).unwrap_or_default()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn auto_ip_counts_trusted_hops_from_the_right_of_x_forwarded_for() {
        let peer = Some("10.9.9.9:4000".parse().unwrap());
        let ip = |values: &[&str], hops| client_ip(&forwarded(values), peer, hops);
        let addr = |s: &str| s.parse::<IpAddr>().unwrap();
        // 0 hops: the header is the client's own text and is ignored.
        assert_eq!(ip(&["1.1.1.1"], 0).unwrap(), addr("10.9.9.9"));
        assert_eq!(ip(&["1.1.1.1, 2.2.2.2"], 1).unwrap(), addr("2.2.2.2"));
        assert_eq!(ip(&["1.1.1.1, 2.2.2.2"], 2).unwrap(), addr("1.1.1.1"));
        assert_eq!(
            ip(&["1.1.1.1", "2.2.2.2, 3.3.3.3"], 3).unwrap(),
            addr("1.1.1.1")
        );
        assert_eq!(ip(&["::ffff:1.2.3.4"], 1).unwrap(), addr("1.2.3.4"));
        for (values, hops) in [
            (&["1.1.1.1"][..], 2),
            (&[][..], 1),
            (&["host.example"][..], 1),
            (&["1.1.1.1,"][..], 1),
        ] {
            let err = ip(values, hops).unwrap_err().to_string();
            assert!(err.contains("X-Forwarded-For"), "{values:?} {hops}: {err}");
        }
        assert!(client_ip(&HeaderMap::new(), None, 0).is_err());
    }
}
