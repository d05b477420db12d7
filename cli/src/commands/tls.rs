//! `meshctl tls`'s flags: files only, no agent involved (`crate::tls`
//! carries them out).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use mesh_protocol::NodeId;
use mesh_protocol::ids::IdError;

/// Where `meshctl tls` keeps the CA and node certificates unless told.
pub const DEFAULT_TLS_DIR: &str = "./mesh-tls";

/// `meshctl tls …`
#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// The cluster's certificate authority.
    #[command(subcommand)]
    Ca(TlsCaCommand),
    /// Node certificates, signed by the cluster's CA.
    #[command(subcommand)]
    Cert(TlsCertCommand),
}

#[derive(Debug, Subcommand)]
pub enum TlsCaCommand {
    /// Create a CA: DIR/ca.pem (give to every node) and DIR/ca-key.pem
    /// (keep secret: it admits nodes).
    Create(CaCreateArgs),
}

#[derive(Debug, Subcommand)]
pub enum TlsCertCommand {
    /// Create a node's certificate, signed by the CA: OUT/NAME.pem and
    /// OUT/NAME-key.pem.
    Create(CertCreateArgs),
}

/// `meshctl tls ca create`'s flags.
#[derive(Debug, Args)]
pub struct CaCreateArgs {
    /// The directory to write ca.pem and ca-key.pem to (created if missing).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_TLS_DIR)]
    pub dir: PathBuf,
    /// The cluster's name, shown in the CA's name.
    #[arg(long, value_name = "NAME", default_value = "ganger")]
    pub cluster: String,
    /// How many days the CA is valid.
    #[arg(long, value_name = "N", default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..))]
    pub days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// `meshctl tls cert create`'s flags.
#[derive(Debug, Args)]
pub struct CertCreateArgs {
    // Checked text under the global `--node`'s id (see `Cli::node`); use
    // `CertCreateArgs::node`.
    /// The node the certificate is for: its node id (meshd's --node-id).
    #[arg(long = "node", id = "node", value_name = "NAME", value_parser = node_name, required_unless_present = "client")]
    pub node: Option<String>,
    /// Instead of a node's: an API client's certificate for this user (meshctl's --cert), with --role.
    #[arg(long, value_name = "NAME", requires = "role")]
    pub client: Option<mesh_protocol::UserName>,
    /// The client's role: read, submit or admin.
    #[arg(long, value_name = "ROLE", requires = "client")]
    pub role: Option<mesh_protocol::auth::Role>,
    /// The directory holding ca.pem and ca-key.pem.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_TLS_DIR)]
    pub dir: PathBuf,
    /// The directory to write NAME.pem and NAME-key.pem to [default: --dir].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// How many days the certificate is valid.
    #[arg(long, value_name = "N", default_value_t = 825, value_parser = clap::value_parser!(u32).range(1..))]
    pub days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

impl CertCreateArgs {
    /// The node the certificate is for (with `--client`, None).
    pub fn node(&self) -> Result<Option<NodeId>, IdError> {
        match (&self.client, &self.node) {
            (Some(_), _) | (None, None) => Ok(None),
            (None, Some(node)) => NodeId::new(node.as_str()).map(Some),
        }
    }

    /// Where the node's files go.
    pub fn out_dir(&self) -> &PathBuf {
        self.out.as_ref().unwrap_or(&self.dir)
    }
}

/// Checks a node id, keeping the text (see [`CertCreateArgs::node`]).
fn node_name(s: &str) -> Result<String, IdError> {
    NodeId::new(s).map(|_| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::Command;
    use crate::commands::tests::parse;

    #[test]
    fn tls_cert_create_takes_its_own_node_flag() {
        let cli = parse(&[
            "--node", "agent:1", "tls", "cert", "create", "--node", "node-1",
        ])
        .unwrap();
        let Command::Tls(TlsCommand::Cert(TlsCertCommand::Create(args))) = cli.command else {
            panic!("not tls cert create");
        };
        assert_eq!(args.node().unwrap().unwrap().as_str(), "node-1");
        assert_eq!(args.dir, PathBuf::from(DEFAULT_TLS_DIR));
        assert_eq!(args.out_dir(), &PathBuf::from(DEFAULT_TLS_DIR));
        assert_eq!((args.days, args.force), (825, false));

        let cli = parse(&[
            "tls", "cert", "create", "--node", "n", "--dir", "a", "--out", "b",
        ])
        .unwrap();
        let Command::Tls(TlsCommand::Cert(TlsCertCommand::Create(args))) = cli.command else {
            panic!("not tls cert create");
        };
        assert_eq!(args.out_dir(), &PathBuf::from("b"));

        assert!(parse(&["tls", "cert", "create"]).is_err());
        assert!(parse(&["--node", "agent:1", "tls", "cert", "create"]).is_err());
        assert!(parse(&["tls", "cert", "create", "--node", "../x"]).is_err());
        assert!(parse(&["tls", "cert", "create", "--node", "n", "--days", "0"]).is_err());

        let cli = parse(&[
            "tls", "cert", "create", "--client", "alice", "--role", "submit",
        ])
        .unwrap();
        let Command::Tls(TlsCommand::Cert(TlsCertCommand::Create(args))) = cli.command else {
            panic!("not tls cert create");
        };
        assert_eq!(args.node().unwrap(), None);
        assert_eq!(args.client.unwrap().as_str(), "alice");
        assert_eq!(args.role, Some(mesh_protocol::auth::Role::Submit));
        assert!(parse(&["tls", "cert", "create", "--client", "alice"]).is_err());
        assert!(parse(&["tls", "cert", "create", "--client", "a", "--role", "root"]).is_err());
    }

    #[test]
    fn tls_ca_create_defaults() {
        let cli = parse(&["tls", "ca", "create"]).unwrap();
        let Command::Tls(TlsCommand::Ca(TlsCaCommand::Create(args))) = cli.command else {
            panic!("not tls ca create");
        };
        assert_eq!(args.dir, PathBuf::from(DEFAULT_TLS_DIR));
        assert_eq!(args.cluster, "ganger");
        assert_eq!((args.days, args.force), (3650, false));
    }
}
