//! `GET /`: the dashboard for people (SPEC 3.3), one self-contained HTML page embedded in the
//! binary (inline CSS and JS, no external asset) that reads the JSON API and follows changes
//! by itself. Everything it shows is inserted as text (`textContent`), never as HTML.
//!
//! The page is a static shell that holds no registry data, so it is served without a token:
//! a browser cannot attach a bearer token to a navigation. When `--read-token` is set, the
//! page asks for the token, keeps it in `sessionStorage` and sends it with every data request,
//! which the JSON endpoints check as usual.

use axum::http::header;
use axum::response::IntoResponse;

/// The page, with the constants it shares with the server filled in once.
static PAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let warning_days = crate::tls::EXPIRY_WARNING_DAYS.to_string();
    include_str!("dashboard.html").replace("EXPIRY_WARNING_DAYS", &warning_days)
});

/// What the page may do: its own inline script and style, `fetch` to this origin, nothing
/// else (no frames, no forms, no plugins, no other origin).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `GET /`.
pub(crate) async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE.as_str(),
    )
}

#[cfg(test)]
mod tests {
    use super::PAGE;

    /// Review finding 9: the page's "days left" window is the server's, not a second 7.
    #[test]
    fn the_page_carries_the_servers_expiry_warning_window() {
        let days = crate::tls::EXPIRY_WARNING_DAYS;
        assert!(PAGE.contains(&format!("const warningDays = {days};")));
        assert!(!PAGE.contains("EXPIRY_WARNING_DAYS"));
    }
}
