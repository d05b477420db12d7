//! The testnet's certificates, made with `mesh_protocol::pki` and written
//! where the agents' containers mount them (see [`Layout`]).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use mesh_protocol::NodeId;
use mesh_protocol::pki::{self, Ca, OffsetDateTime};

use crate::error::TestnetError;
use crate::state::Layout;

/// Certificates are valid from a day before `now` (a container's clock is the
/// host's, but a day of slack costs nothing) for this many days: longer than
/// any testnet lives.
const VALID_DAYS: u32 = 30;
const SLACK: Duration = Duration::from_secs(24 * 3600);

/// File names inside a node's TLS directory, as the agent sees them at /tls.
pub const CA_FILE: &str = "ca.pem";
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";
const CA_KEY_FILE: &str = "ca-key.pem";
/// The API tokens file inside a node's TLS directory (meshd's --api-tokens).
pub const TOKENS_FILE: &str = "tokens";

/// Creates a CA for `cluster` and writes it into `dir`.
pub fn create_ca(dir: &Path, cluster: &str, now: OffsetDateTime) -> Result<Ca, TestnetError> {
    let ca = pki::create_ca(cluster, now - SLACK, VALID_DAYS)?;
    write(&dir.join(CA_FILE), &ca.cert_pem, false)?;
    write(&dir.join(CA_KEY_FILE), &ca.key_pem, true)?;
    Ok(ca)
}

/// Writes `node`'s TLS directory: the CA it trusts, and a certificate and key
/// signed by that CA.
pub fn create_node_tls(
    layout: &Layout,
    ca: &Ca,
    node: &NodeId,
    now: OffsetDateTime,
) -> Result<(), TestnetError> {
    let dir = layout.tls_dir(node);
    let cert = pki::create_node_cert(ca, node, now - SLACK, VALID_DAYS)?;
    write(&dir.join(CA_FILE), &ca.cert_pem, false)?;
    write(&dir.join(CERT_FILE), &cert.cert_pem, false)?;
    write(&dir.join(KEY_FILE), &cert.key_pem, true)?;
    write(&dir.join(TOKENS_FILE), &api_token(layout)?, false)
}

/// The line of the agents' tokens file that accepts the testnet's admin
/// token, made on first use: the secret goes to `Layout::api_token_file`
/// (for meshctl's --token-file), the line beside it.
fn api_token(layout: &Layout) -> Result<String, TestnetError> {
    let lines = layout.root().join("api-tokens");
    if let Ok(text) = std::fs::read_to_string(&lines) {
        return Ok(text);
    }
    let user = mesh_protocol::UserName::new("testnet")?;
    let new = mesh_protocol::token::create(&user, mesh_protocol::auth::Role::Admin)?;
    write(&layout.api_token_file(), &format!("{}\n", new.secret), true)?;
    let text = format!("{}\n", new.line);
    write(&lines, &text, false)?;
    Ok(text)
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), TestnetError> {
    let io = |source| TestnetError::Io {
        what: "write a certificate file",
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_ca_and_the_node_files() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().to_owned());
        let now = OffsetDateTime::now_utc();
        let ca = create_ca(&layout.ca_dir(), "t", now).unwrap();
        let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(layout.ca_dir().join(CA_FILE)), ca.cert_pem);
        assert_eq!(read(layout.ca_dir().join(CA_KEY_FILE)), ca.key_pem);
        let node = NodeId::new("n1").unwrap();
        create_node_tls(&layout, &ca, &node, now).unwrap();
        let tls = layout.tls_dir(&node);
        assert_eq!(read(tls.join(CA_FILE)), ca.cert_pem);
        assert!(read(tls.join(CERT_FILE)).starts_with("-----BEGIN CERTIFICATE"));
        let mode = std::fs::metadata(tls.join(KEY_FILE)).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
}
