//! `discovery health`: asks a node's `/healthz` (or `/readyz` with `--ready`) and exits 0 when
//! it answers 200. The container image's health check, which has no curl to call.

use std::time::Duration;

use clap::Args;

use super::connect::{CommandError, TlsFlags};

/// The flags of `discovery health`.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// The node's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Require readiness (`/readyz`) instead of liveness (`/healthz`).
    #[arg(long)]
    ready: bool,
    #[command(flatten)]
    tls: TlsFlags,
}

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
    /// The TLS flags cannot be used.
    #[error("{0}")]
    Tls(#[from] CommandError),
    /// The URL cannot be asked (an `https://` one without `--ca`, say).
    #[error("{0}")]
    Url(#[from] discovery_client::Error),
    /// The node answered something other than 200.
    #[error("{url}: status {status}{why}")]
    Unhealthy {
        /// What was asked.
        url: String,
        /// What it answered.
        status: u16,
        /// The `error` of its JSON body, after `: `, when it gave one.
        why: String,
    },
}

/// Checks one node, over TLS with `--ca` (and `--cert`/`--key`) for an `https://` URL.
pub async fn run(args: HealthArgs) -> Result<(), HealthError> {
    let tls = args.tls.client_tls()?;
    let base = discovery_client::normalize_url(&args.url, tls.is_some())?;
    let url = format!("{base}/{}", if args.ready { "readyz" } else { "healthz" });
    let unreachable = |source: reqwest::Error| HealthError::Unreachable {
        url: url.clone(),
        why: discovery_client::tls::why_unreachable(&source),
    };
    let client = discovery_client::tls::http_client(tls.as_ref())
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(unreachable)?;
    let response = client.get(&url).send().await.map_err(unreachable)?;
    match response.status().as_u16() {
        200 => Ok(()),
        status => {
            // The node's reason (401: which certificate; 400: use https://), when it says one.
            let body = response.bytes().await.unwrap_or_default();
            let why = serde_json::from_slice::<discovery_api::ErrorBody>(&body)
                .map(|b| format!(": {}", b.error))
                .unwrap_or_default();
            Err(HealthError::Unhealthy { url, status, why })
        }
    }
}
