//! `meshctl token`'s flags: no agent involved (`crate::token` carries
//! them out).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use mesh_protocol::UserName;
use mesh_protocol::auth::Role;

/// `meshctl token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a bearer token for the API: prints the secret (once; it is
    /// kept nowhere else) and appends its hash to the agents' tokens file.
    Create(TokenCreateArgs),
}

/// `meshctl token create`'s flags.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// The user the token stands for; tasks and services it creates are
    /// theirs.
    #[arg(long, value_name = "NAME")]
    pub user: UserName,
    /// What the token may do: read (every GET), submit (also submit tasks,
    /// create services, kill and remove one's own) or admin (everything).
    #[arg(long, value_name = "ROLE")]
    pub role: Role,
    /// Append the line to this tokens file (meshd's --api-tokens), created
    /// readable by its owner only; without it the line is printed.
    #[arg(long, value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,
}
