//! The testnet network's address plan, decided without Docker.
//!
//! The network is a /24 that we choose (so that an agent keeps its address
//! across `partition`/`heal` and `kill`/`restart`: Docker only lets a
//! container ask for a fixed address on a network with a user-given subnet).
//! Agents get fixed addresses in the lower half; the containers the agents
//! start get addresses from Docker in the upper half, so the two never meet.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::testsvc::fnv::fnv1a64;

/// Most agents (cluster members and foreign ones) a testnet can hold:
/// addresses .2 to .127.
pub const MAX_AGENTS: usize = 126;

/// Where candidate subnets are taken from: 10.200.0.0/24 to 10.255.255.0/24,
/// a corner of 10/8 that Docker's default pools and most LANs leave alone.
const FIRST_SECOND_OCTET: u8 = 200;
const CANDIDATES: u32 = (256 - FIRST_SECOND_OCTET as u32) * 256;

/// A /24 network `x.y.z.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Subnet {
    base: Ipv4Addr,
}

impl Subnet {
    fn from_index(index: u32) -> Self {
        let index = index % CANDIDATES;
        // Both quotient and remainder fit a byte: index < 56 * 256.
        let second = FIRST_SECOND_OCTET + (index / 256) as u8;
        let third = (index % 256) as u8;
        Self {
            base: Ipv4Addr::new(10, second, third, 0),
        }
    }

    /// `x.y.z.0/24`, for `docker network create --subnet`.
    pub fn cidr(&self) -> String {
        format!("{}/24", self.base)
    }

    /// `x.y.z.1`.
    pub fn gateway(&self) -> Ipv4Addr {
        self.host(1)
    }

    /// `x.y.z.128/25`: where Docker picks addresses for containers that do not
    /// ask for one (the agents' task containers).
    pub fn dynamic_range(&self) -> String {
        format!("{}/25", self.host(128))
    }

    /// The fixed address of the agent in `slot` (0-based, in the order agents
    /// were added), or `None` past [`MAX_AGENTS`].
    pub fn agent_ip(&self, slot: usize) -> Option<Ipv4Addr> {
        (slot < MAX_AGENTS).then(|| self.host(2 + slot as u8))
    }

    fn host(&self, last: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.base.octets();
        Ipv4Addr::new(a, b, c, last)
    }
}

impl From<Subnet> for String {
    fn from(subnet: Subnet) -> Self {
        subnet.cidr()
    }
}

impl TryFrom<String> for Subnet {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        let bad = || format!("{s:?} is not a subnet of the form x.y.z.0/24");
        let base: Ipv4Addr = s
            .strip_suffix("/24")
            .ok_or_else(bad)?
            .parse()
            .map_err(|_| bad())?;
        if base.octets()[3] != 0 {
            return Err(bad());
        }
        Ok(Self { base })
    }
}

/// The subnets to try, in order, for a testnet named `name`: every candidate
/// once, starting at one derived from the name, so that testnets created at
/// the same time mostly try different subnets first.
pub fn candidates(name: &str) -> impl Iterator<Item = Subnet> {
    // The remainder is below CANDIDATES, which fits a u32.
    let start = (fnv1a64(name.as_bytes()) % u64::from(CANDIDATES)) as u32;
    (0..CANDIDATES).map(move |i| Subnet::from_index(start + i))
}

/// An IPv4 network of any prefix length, as Docker reports the subnets of
/// the networks it has (`172.17.0.0/16`), to keep new testnets clear of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    first: u32,
    last: u32,
}

impl Ipv4Net {
    /// `a.b.c.d/len`; `None` for anything else (IPv6 subnets included: they
    /// cannot overlap ours).
    pub fn parse(s: &str) -> Option<Self> {
        let (addr, len) = s.trim().split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let len: u32 = len.parse().ok()?;
        if len > 32 {
            return None;
        }
        // A /0 covers everything; shifting a u32 by 32 would overflow.
        let host_bits = u32::MAX.checked_shr(len).unwrap_or(0);
        let first = u32::from(addr) & !host_bits;
        Some(Self {
            first,
            last: first | host_bits,
        })
    }

    pub(crate) fn overlaps(&self, subnet: &Subnet) -> bool {
        let first = u32::from(subnet.base);
        let last = first | 0xff;
        self.first <= last && first <= self.last
    }
}

/// The candidates for testnet `name` (see [`candidates`]) that overlap none
/// of the `taken` networks: those of Docker's networks, and those of networks
/// an earlier teardown had to leave behind.
pub fn free_candidates(name: &str, taken: &[Ipv4Net]) -> impl Iterator<Item = Subnet> {
    candidates(name).filter(move |s| !taken.iter().any(|t| t.overlaps(s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn parses_docker_subnets() {
        let net = Ipv4Net::parse("172.17.0.0/16").unwrap();
        assert_eq!(net.first, u32::from(Ipv4Addr::new(172, 17, 0, 0)));
        assert_eq!(net.last, u32::from(Ipv4Addr::new(172, 17, 255, 255)));
        // Host bits set are masked off, as Docker would.
        assert_eq!(
            Ipv4Net::parse("10.200.3.7/24"),
            Ipv4Net::parse("10.200.3.0/24")
        );
        let all = Ipv4Net::parse("0.0.0.0/0").unwrap();
        assert_eq!((all.first, all.last), (0, u32::MAX));
        for bad in ["", "fd00::/64", "10.0.0.0", "10.0.0.0/33", "10.0.0/8"] {
            assert_eq!(Ipv4Net::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn free_candidates_keep_clear_of_taken_networks() {
        let first = candidates("ganger").next().unwrap();
        let taken: Vec<Ipv4Net> = [first.cidr().as_str(), "10.200.0.0/16", "172.17.0.0/16"]
            .iter()
            .filter_map(|s| Ipv4Net::parse(s))
            .collect();
        let free: Vec<Subnet> = free_candidates("ganger", &taken).collect();
        let in_10_200 = first.base.octets()[1] == 200;
        let gone = 256 + usize::from(!in_10_200);
        assert_eq!(free.len(), CANDIDATES as usize - gone);
        assert!(!free.contains(&first));
        assert!(free.iter().all(|s| s.base.octets()[1] != 200));
        // The rest keep their order: the name still decides where to start.
        let mut want = free.iter().peekable();
        for s in candidates("ganger") {
            if want.peek() == Some(&&s) {
                want.next();
            }
        }
        assert_eq!(want.next(), None, "free candidates out of order");
    }

    #[test]
    fn candidates_cover_the_range_once() {
        let all: Vec<Subnet> = candidates("ganger").collect();
        assert_eq!(all.len(), CANDIDATES as usize);
        let distinct: HashSet<String> = all.iter().map(Subnet::cidr).collect();
        assert_eq!(distinct.len(), all.len());
        assert!(all.iter().all(|s| {
            let [a, b, _, d] = s.base.octets();
            a == 10 && b >= 200 && d == 0
        }));
    }

    #[test]
    fn plan_keeps_agents_out_of_the_dynamic_range() {
        let s: Subnet = "10.201.7.0/24".to_owned().try_into().unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 201, 7, 1));
        assert_eq!(s.agent_ip(0), Some(Ipv4Addr::new(10, 201, 7, 2)));
        assert_eq!(
            s.agent_ip(MAX_AGENTS - 1),
            Some(Ipv4Addr::new(10, 201, 7, 127))
        );
        assert_eq!(s.agent_ip(MAX_AGENTS), None);
        assert_eq!(s.dynamic_range(), "10.201.7.128/25");
    }

    #[test]
    fn round_trips_through_text() {
        for s in candidates("x").take(300) {
            assert_eq!(Subnet::try_from(String::from(s)), Ok(s));
        }
        assert!(Subnet::try_from("10.0.0.1/24".to_owned()).is_err());
        assert!(Subnet::try_from("10.0.0.0/16".to_owned()).is_err());
    }
}
