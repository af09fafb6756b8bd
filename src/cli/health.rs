//! `discovery health`: asks a node's `/healthz` (or `/readyz` with `--ready`) and exits 0 when
//! it answers 200. The container image's health check, which has no curl to call.

use std::time::Duration;

use discovery_client::ClientTls;

/// Why the check failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The node did not answer.
    #[error("{url}: {why}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// Why it failed, with the TLS cause in words when it was one.
        why: String,
    },
    /// The node answered something other than 200.
    #[error("{url}: status {status}")]
    Unhealthy {
        /// What was asked.
        url: String,
        /// What it answered.
        status: u16,
    },
}

/// Checks one node, over TLS as `tls` says for an `https://` URL.
pub async fn run(base: &str, ready: bool, tls: Option<ClientTls>) -> Result<(), HealthError> {
    let url = format!(
        "{}/{}",
        base.trim_end_matches('/'),
        if ready { "readyz" } else { "healthz" }
    );
    let unreachable = |source: reqwest::Error| HealthError::Unreachable {
        url: url.clone(),
        why: super::connect::why_unreachable(&source),
    };
    let client = discovery_client::tls::http_client(tls.as_ref())
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(unreachable)?;
    let response = client.get(&url).send().await.map_err(unreachable)?;
    match response.status().as_u16() {
        200 => Ok(()),
        status => Err(HealthError::Unhealthy { url, status }),
    }
}
