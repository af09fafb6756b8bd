//! `GET /`: the dashboard for people (SPEC 3.3), one embedded HTML page that reads the JSON
//! API. Everything it shows is inserted as text, never as HTML.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;

use super::{require, ApiError, AppState};
use crate::auth::Access;

const PAGE: &str = include_str!("dashboard.html");

/// `GET /`.
pub async fn page(
    State(shared): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    require(&shared, Access::Read, &headers)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline'",
            ),
        ],
        PAGE,
    ))
}
