//! `GET /metrics`: the Prometheus text exposition.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;

use super::{require, ApiError, NodeState};
use crate::auth::Access;

/// `GET /metrics`. Gauges that mirror the registry are read now, so they cannot drift.
pub(crate) async fn render(
    State(shared): State<Arc<NodeState>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    require(&shared, Access::Read, &headers)?;
    let m = &shared.metrics;
    m.hosts.set(shared.registry.host_count() as i64);
    m.stale_hosts.set(shared.registry.stale_count() as i64);
    m.services.set(shared.registry.service_count() as i64);
    m.services_held.set(shared.registry.services_held() as i64);
    m.expiry_guard_engaged
        .set(i64::from(shared.registry.guard_engaged()));
    m.grace_hosts.set(shared.registry.grace_count() as i64);
    m.expiry_guard_lost_fraction
        .set(shared.registry.guard_measure().fraction());
    m.ready.set(i64::from(shared.is_ready()));
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    ))
}
