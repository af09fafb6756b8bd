//! `GET /healthz` (and the seed's `/healthcheck`): the process is up. `GET /readyz`: the node
//! holds a usable state (SPEC 4.4). Both stay open when tokens are set.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::Json;
use serde_json::{json, Value};

use super::NodeState;

/// `GET /healthz`.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /healthcheck`: the seed's answer, `OK` as text, which load balancer checks match on.
pub(crate) async fn healthcheck() -> ([(header::HeaderName, &'static str); 1], &'static str) {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "OK")
}

/// `GET /readyz`: 200 once ready, 503 before.
pub(crate) async fn readyz(State(shared): State<Arc<NodeState>>) -> (StatusCode, Json<Value>) {
    if shared.is_ready() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"status": "starting", "error": "not ready: still loading the registry's state"}),
            ),
        )
    }
}
