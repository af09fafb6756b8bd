//! `discovery services`: every service a registry node holds, as a table or as the
//! `GET /v1/services` body.

use clap::Args;

use crate::cli::connect::{CommandError, ReadArgs};
use crate::cli::output::{self, Table};

/// The flags of `discovery services`.
#[derive(Debug, Clone, Args)]
pub struct ServicesArgs {
    #[command(flatten)]
    pub(crate) read: ReadArgs,
    /// Print the registry's JSON body instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Asks the first registry that answers and prints its services.
pub async fn run(args: ServicesArgs) -> Result<(), CommandError> {
    let response = args.read.client()?.services().await?;
    let text = if args.json {
        output::json_pretty(&response)
    } else {
        let mut table = Table::new(&["SERVICE", "HOSTS", "STALE", "INDEX"]);
        for s in &response.services {
            table.row(vec![
                s.service.clone(),
                s.hosts.to_string(),
                s.stale.to_string(),
                s.index.to_string(),
            ]);
        }
        table.render()
    };
    output::print(&text)?;
    Ok(())
}
