//! `discovery peers`: one registry node's view of its cluster, as a table or as the
//! `GET /v1/peers` body.

use std::time::Duration;

use clap::Args;

use crate::cli::connect::{CommandError, ReadArgs};
use crate::cli::output::{self, Table};

/// The flags of `discovery peers`.
#[derive(Debug, Clone, Args)]
pub struct PeersArgs {
    #[command(flatten)]
    pub(crate) read: ReadArgs,
    /// Print the registry's JSON body instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Asks the first registry that answers and prints its peers. Each node has its own view,
/// so the table starts with the id of the node that answered.
pub async fn run(args: PeersArgs) -> Result<(), CommandError> {
    let registry = args.read.client()?;
    let response = registry.peers().await?;
    let text = if args.json {
        output::json_pretty(&response)
    } else {
        let mut table = Table::new(&[
            "ADDRESS",
            "NODE",
            "STATE",
            "LAST-SUCCESS",
            "BEHIND",
            "FAILURES",
        ]);
        for p in &response.peers {
            let last_success = match p.last_success_age_secs {
                Some(secs) if secs.is_finite() && secs >= 0.0 => {
                    format!(
                        "{} ago",
                        output::short_duration(Duration::from_secs_f64(secs))
                    )
                }
                _ => "never".to_owned(),
            };
            table.row(vec![
                p.address.clone(),
                p.node_id.clone().unwrap_or_else(|| "-".to_owned()),
                p.state.as_str().to_owned(),
                last_success,
                p.behind.to_string(),
                p.failures.to_string(),
            ]);
        }
        let ready = if response.ready { "ready" } else { "not ready" };
        let mut about = String::new();
        if let Some(address) = &response.address {
            about.push_str(&format!(", advertised as {address}"));
        }
        if let Some(at) = &response.tls_certificate_not_after {
            about.push_str(&format!(", TLS certificate valid until {at}"));
        }
        format!(
            "node {} at {} ({ready}){about}, {} peers\n{}",
            response.node_id,
            registry.preferred_url(),
            response.peers.len(),
            table.render()
        )
    };
    output::print(&text)?;
    Ok(())
}
