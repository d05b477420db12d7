//! The address of the agent meshctl talks to, parsed once from `--node` or
//! `MESH_NODE` into a base URL that endpoint URLs are built on.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use reqwest::Url;

/// Where meshctl looks for an agent unless told otherwise.
pub const DEFAULT_NODE: &str = "http://127.0.0.1:7700";
/// The agent's default API port, used for a bare host name such as `node2`.
pub const DEFAULT_PORT: u16 = 7700;

/// A `--node` value that cannot name an agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeUrlError {
    #[error("node address is empty; use host:port or http://host:port")]
    Empty,
    #[error("{input:?} is not a node address ({reason}); use host:port or http://host:port")]
    Syntax { input: String, reason: String },
    #[error(
        "{input:?} uses {scheme}://, but meshctl speaks HTTP or HTTPS to the agent; use http://host:port or https://host:port"
    )]
    Scheme { input: String, scheme: String },
    #[error("{input:?} has a query or fragment; give only http://host:port")]
    Extra { input: String },
}

/// An agent's base URL: `http`, with a host, without query or fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUrl(Url);

impl NodeUrl {
    /// The same agent over HTTPS (meshctl given --ca).
    pub fn secure(mut self) -> Self {
        // http and https are both special schemes: switching never fails.
        let _ = self.0.set_scheme("https");
        self
    }

    /// The URL of an API path below the base, e.g. `["v1", "tasks", id]`.
    /// Segments are percent-encoded, so an id can never change the path.
    pub fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.0.clone();
        // `parse` only accepts http URLs with a host, which can always be a
        // base, so this never fails; if it did the base URL would be used.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }
}

impl FromStr for NodeUrl {
    type Err = NodeUrlError;

    /// Accepts `http://host:port[/prefix]`, `host:port` and a bare `host`
    /// (which gets port 7700). Anything else is refused with a hint.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(NodeUrlError::Empty);
        }
        let full = if trimmed.contains("://") {
            trimmed.to_owned()
        } else if has_port(trimmed) {
            format!("http://{trimmed}")
        } else {
            let (authority, path) = trimmed.split_at(trimmed.find('/').unwrap_or(trimmed.len()));
            format!("http://{authority}:{DEFAULT_PORT}{path}")
        };
        let url = Url::parse(&full).map_err(|e| NodeUrlError::Syntax {
            input: input.to_owned(),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(NodeUrlError::Scheme {
                input: input.to_owned(),
                scheme: url.scheme().to_owned(),
            });
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(NodeUrlError::Syntax {
                input: input.to_owned(),
                reason: "no host".into(),
            });
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(NodeUrlError::Extra {
                input: input.to_owned(),
            });
        }
        Ok(Self(url))
    }
}

impl From<SocketAddr> for NodeUrl {
    /// `http://ADDR`: an agent known by its address (the tests' agents).
    fn from(addr: SocketAddr) -> Self {
        // A socket address always formats as a valid host:port (IPv6 in
        // brackets), so `http://` and it always parse.
        let url = Url::parse(&format!("http://{addr}")).expect("http://ip:port is a valid URL");
        Self(url)
    }
}

/// Whether a scheme-less address names a port: `host:1`, `[::1]:1`, but not
/// `host` or `[::1]`.
fn has_port(address: &str) -> bool {
    let authority = address.split('/').next().unwrap_or(address);
    authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.contains(']'))
}

impl fmt::Display for NodeUrl {
    /// The base URL without its trailing slash: `http://127.0.0.1:7700`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str().trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<String, NodeUrlError> {
        s.parse::<NodeUrl>().map(|u| u.to_string())
    }

    #[test]
    fn default_parses() {
        assert_eq!(parse(DEFAULT_NODE).unwrap(), "http://127.0.0.1:7700");
    }

    #[test]
    fn adds_scheme_and_default_port() {
        assert_eq!(parse("10.0.0.2:7701").unwrap(), "http://10.0.0.2:7701");
        assert_eq!(parse("node2").unwrap(), "http://node2:7700");
        assert_eq!(parse(" node2:80 ").unwrap(), "http://node2");
        assert_eq!(parse("[::1]:9000").unwrap(), "http://[::1]:9000");
        assert_eq!(parse("[::1]").unwrap(), "http://[::1]:7700");
        assert_eq!(parse("node2/mesh").unwrap(), "http://node2:7700/mesh");
    }

    #[test]
    fn socket_addresses_become_http_urls() {
        let v4: SocketAddr = "10.200.0.2:7700".parse().unwrap();
        assert_eq!(NodeUrl::from(v4).to_string(), "http://10.200.0.2:7700");
        let v6: SocketAddr = "[::1]:9000".parse().unwrap();
        assert_eq!(NodeUrl::from(v6).to_string(), "http://[::1]:9000");
    }

    #[test]
    fn keeps_explicit_urls() {
        assert_eq!(parse("http://node2").unwrap(), "http://node2");
        assert_eq!(parse("http://node2:7700/").unwrap(), "http://node2:7700");
        assert_eq!(parse("HTTP://Node2:1").unwrap(), "http://node2:1");
    }

    #[test]
    fn refuses_what_cannot_work() {
        assert_eq!(parse(""), Err(NodeUrlError::Empty));
        assert!(matches!(
            parse("gopher://n:1"),
            Err(NodeUrlError::Scheme { .. })
        ));
        assert!(matches!(parse("ftp://n"), Err(NodeUrlError::Scheme { .. })));
        assert!(matches!(parse("n:1?x=1"), Err(NodeUrlError::Extra { .. })));
        assert!(matches!(
            parse("n:notaport"),
            Err(NodeUrlError::Syntax { .. })
        ));
        assert!(matches!(parse("http://"), Err(NodeUrlError::Syntax { .. })));
    }

    #[test]
    fn endpoints_append_encoded_segments() {
        let base: NodeUrl = "n:1".parse().unwrap();
        assert_eq!(
            base.endpoint(&["v1", "tasks"]).as_str(),
            "http://n:1/v1/tasks"
        );
        assert_eq!(
            base.endpoint(&["v1", "a/b"]).as_str(),
            "http://n:1/v1/a%2Fb"
        );
        let prefixed: NodeUrl = "http://n:1/mesh/".parse().unwrap();
        assert_eq!(
            prefixed.endpoint(&["v1", "node"]).as_str(),
            "http://n:1/mesh/v1/node"
        );
    }
}
