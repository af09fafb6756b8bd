//! `discovery health`: asks a node's `/healthz` (or `/readyz` with `--ready`) and exits 0 when
//! it answers 200. The container image's health check, which has no curl to call.

use std::time::Duration;

/// Why the check failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The node did not answer.
    #[error("{url}: {source}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// Why it failed.
        source: reqwest::Error,
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

/// Checks one node.
pub async fn run(base: &str, ready: bool) -> Result<(), HealthError> {
    let url = format!(
        "{}/{}",
        base.trim_end_matches('/'),
        if ready { "readyz" } else { "healthz" }
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|source| HealthError::Unreachable {
            url: url.clone(),
            source,
        })?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|source| HealthError::Unreachable {
            url: url.clone(),
            source,
        })?;
    match response.status().as_u16() {
        200 => Ok(()),
        status => Err(HealthError::Unhealthy { url, status }),
    }
}
