//! A real split of the testnet: two sides that each still talk among
//! themselves and not to the other (a 2|3 split: the two cut-off agents
//! see each other). Host firewall rules in Docker's `DOCKER-USER` chain,
//! which traffic between containers on one bridge passes, drop packets
//! between the two sides' addresses; each carries the comment
//! `ganger-testnet:NAME`, by which heal and teardown find and remove every
//! rule of a testnet, also after a crash. Needs root (iptables); the host
//! still reaches every agent's API.

use std::net::Ipv4Addr;
use std::process::Command;

use super::*;

/// The comment that marks the rules of testnet `name`.
fn mark(name: &TestnetName) -> String {
    format!("ganger-testnet:{name}")
}

/// The rules that cut `island` off `rest`, both ways, as `iptables` rule
/// specifications (without the `-I`/`-D` and chain).
pub(crate) fn rules(
    name: &TestnetName,
    island: &[Ipv4Addr],
    rest: &[Ipv4Addr],
) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for a in island {
        for b in rest {
            for (from, to) in [(a, b), (b, a)] {
                out.push(vec![
                    "-s".into(),
                    format!("{from}/32"),
                    "-d".into(),
                    format!("{to}/32"),
                    "-m".into(),
                    "comment".into(),
                    "--comment".into(),
                    mark(name),
                    "-j".into(),
                    "DROP".into(),
                ]);
            }
        }
    }
    out
}

fn iptables(args: &[String]) -> Result<String, TestnetError> {
    let out = Command::new("iptables").args(args).output().map_err(|e| {
        TestnetError::Split(format!(
            "cannot run iptables (a split needs it, as root): {e}"
        ))
    })?;
    if !out.status.success() {
        return Err(TestnetError::Split(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes every rule of testnet `name`; returns how many went.
pub(crate) fn remove_rules(name: &TestnetName) -> Result<usize, TestnetError> {
    let listing = match iptables(&["-S".into(), "DOCKER-USER".into()]) {
        Ok(l) => l,
        // No iptables, or no chain: no rule of ours either.
        Err(_) => return Ok(0),
    };
    let mark = mark(name);
    let mut removed = 0;
    for line in listing.lines().filter(|l| l.contains(&mark)) {
        let Some(spec) = line.strip_prefix("-A DOCKER-USER ") else {
            continue;
        };
        let mut args = vec!["-D".to_owned(), "DOCKER-USER".to_owned()];
        args.extend(
            spec.split_whitespace()
                .map(|w| w.trim_matches('"').to_owned()),
        );
        iptables(&args)?;
        removed += 1;
    }
    Ok(removed)
}

impl Testnet {
    /// Splits the testnet: `island` on one side, every other member on the
    /// other. Each side's agents still reach each other. Undone by
    /// [`Testnet::heal`].
    pub async fn split<S: fmt::Display>(&self, island: &[S]) -> Result<(), TestnetError> {
        let names: Vec<String> = island.iter().map(ToString::to_string).collect();
        let mut inside = Vec::new();
        for n in &names {
            inside.push(self.state.node(n)?.ip);
        }
        let outside: Vec<Ipv4Addr> = self
            .state
            .nodes
            .iter()
            .filter(|n| !names.contains(&n.node.to_string()))
            .map(|n| n.ip)
            .collect();
        let specs = rules(&self.state.name, &inside, &outside);
        let name = self.state.name.clone();
        blocking(move || {
            for spec in specs {
                let mut args = vec!["-I".to_owned(), "DOCKER-USER".to_owned()];
                args.extend(spec);
                if let Err(e) = iptables(&args) {
                    // Half a split is no split: take back what was set.
                    let _ = remove_rules(&name);
                    return Err(e);
                }
            }
            Ok(())
        })
        .await?;
        tracing::info!(testnet = %self.state.name, island = ?names, "split");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_drops_both_ways_between_the_sides_only() {
        let name = TestnetName::new("tn-x").unwrap();
        let ip = |d: u8| Ipv4Addr::new(10, 0, 0, d);
        let r = rules(&name, &[ip(4), ip(5)], &[ip(1), ip(2), ip(3)]);
        assert_eq!(r.len(), 12, "2 x 3 pairs, both ways");
        let pairs: Vec<(String, String)> = r.iter().map(|s| (s[1].clone(), s[3].clone())).collect();
        assert!(pairs.contains(&("10.0.0.4/32".into(), "10.0.0.1/32".into())));
        assert!(pairs.contains(&("10.0.0.1/32".into(), "10.0.0.4/32".into())));
        assert!(
            !pairs
                .iter()
                .any(|(a, b)| a == "10.0.0.4/32" && b == "10.0.0.5/32")
        );
        assert!(
            r.iter()
                .all(|s| s.contains(&"ganger-testnet:tn-x".to_owned()))
        );
    }
}
