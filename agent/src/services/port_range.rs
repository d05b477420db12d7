//! Which TCP ports services may listen on here (`--service-ports`): ranges
//! the operator allows, minus the agent's own ports. A definition outside
//! them is refused by the API (400) and, if it arrives by gossip, not
//! listened for on this node. Pure: parsing and membership.

use std::collections::BTreeSet;
use std::str::FromStr;

/// The default range: every unprivileged port.
pub const DEFAULT: &str = "1024-65535";

/// Ports services may listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePorts {
    /// Inclusive ranges, sorted, non-empty.
    ranges: Vec<(u16, u16)>,
    /// Ports inside the ranges that are the agent's own.
    except: BTreeSet<u16>,
}

/// A `--service-ports` value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--service-ports {value:?}: {why}; give ranges such as 1024-65535 or 8000-8999,9100 (ports 1 to 65535)"
)]
pub struct PortRangeError {
    value: String,
    why: String,
}

impl ServicePorts {
    /// Whether a service may listen on `port` here.
    pub fn allows(&self, port: u16) -> bool {
        !self.except.contains(&port)
            && self
                .ranges
                .iter()
                .any(|&(lo, hi)| (lo..=hi).contains(&port))
    }

    /// The same ranges without `ports` (the agent's own; 0 is ignored).
    pub fn without(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        self.except.extend(ports.into_iter().filter(|&p| p != 0));
        self
    }
}

impl Default for ServicePorts {
    fn default() -> Self {
        Self {
            ranges: vec![(1024, 65535)],
            except: BTreeSet::new(),
        }
    }
}

impl FromStr for ServicePorts {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: String| PortRangeError {
            value: s.to_owned(),
            why,
        };
        let port = |p: &str| match p.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(err(format!("{p:?} is not a port"))),
            Ok(n) => Ok(n),
        };
        let mut ranges = Vec::new();
        for part in s.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(err("an empty range".into()));
            }
            let range = match part.split_once('-') {
                Some((lo, hi)) => (port(lo)?, port(hi)?),
                None => (port(part)?, port(part)?),
            };
            if range.0 > range.1 {
                return Err(err(format!("{part} ends before it starts")));
            }
            ranges.push(range);
        }
        ranges.sort_unstable();
        Ok(Self {
            ranges,
            except: BTreeSet::new(),
        })
    }
}

impl std::fmt::Display for ServicePorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (lo, hi)) in self.ranges.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            if lo == hi {
                write!(f, "{sep}{lo}")?;
            } else {
                write!(f, "{sep}{lo}-{hi}")?;
            }
        }
        let own: Vec<String> = self
            .except
            .iter()
            .filter(|&&p| self.ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&p)))
            .map(u16::to_string)
            .collect();
        if !own.is_empty() {
            write!(f, " except {} (the agent's own)", own.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_unprivileged_ports_minus_the_agents_own() {
        let p = ServicePorts::default().without([7700, 0, 7946]);
        assert!(!p.allows(22) && !p.allows(1023) && !p.allows(7700) && !p.allows(7946));
        assert!(p.allows(1024) && p.allows(8080) && p.allows(65535));
        assert_eq!(
            p.to_string(),
            "1024-65535 except 7700, 7946 (the agent's own)"
        );
        assert_eq!(
            DEFAULT.parse::<ServicePorts>().unwrap(),
            ServicePorts::default()
        );
    }

    #[test]
    fn lists_of_ranges_parse_and_bad_ones_say_why() {
        let p: ServicePorts = "9100, 8000-8999".parse().unwrap();
        assert!(p.allows(8000) && p.allows(8999) && p.allows(9100));
        assert!(!p.allows(9000) && !p.allows(9101) && !p.allows(7999));
        assert_eq!(p.to_string(), "8000-8999,9100");
        for bad in ["", "0-100", "100-50", "a-b", "1-70000", "80,", "-5"] {
            let e = bad.parse::<ServicePorts>().unwrap_err().to_string();
            assert!(e.contains("--service-ports"), "{bad}: {e}");
        }
    }
}
