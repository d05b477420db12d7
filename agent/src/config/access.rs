//! Who may reach the agent: the guard against an API open to anyone, and
//! the API's tokens file.

use std::net::SocketAddr;
use std::path::Path;

use super::ConfigError;

/// Refuses an agent that would be open to anyone: an API reachable from
/// other hosts without credentials, or `--insecure-dev` (no peer or caller
/// checks at all) on an address that is not loopback or private.
pub fn open_guard(
    api: SocketAddr,
    bind: SocketAddr,
    api_credentials: bool,
    insecure_dev: bool,
) -> Result<(), ConfigError> {
    if insecure_dev {
        for (flag, addr) in [("--api", api), ("--bind", bind)] {
            if !loopback_or_private(addr.ip()) {
                return Err(ConfigError::InsecurePublic { flag, addr });
            }
        }
        return Ok(());
    }
    if api.ip().is_loopback() || api_credentials {
        Ok(())
    } else {
        Err(ConfigError::ApiOpen(api))
    }
}

/// Loopback, or an address of a private network (RFC 1918, IPv6 unique
/// local). The unspecified address (0.0.0.0) is neither: it listens on
/// every interface, public ones too.
fn loopback_or_private(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        std::net::IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// Reads a tokens file; one without tokens only if `revocations_only_ok`
/// (with client certificates, a file may only revoke).
pub fn read_tokens(
    path: &Path,
    revocations_only_ok: bool,
) -> Result<mesh_protocol::token::Tokens, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadTokens {
        path: path.display().to_string(),
        source,
    })?;
    let tokens =
        mesh_protocol::token::Tokens::parse(&text).map_err(|source| ConfigError::Tokens {
            path: path.display().to_string(),
            source,
        })?;
    if tokens.is_empty() && !revocations_only_ok {
        return Err(ConfigError::NoTokens(path.display().to_string()));
    }
    Ok(tokens)
}
