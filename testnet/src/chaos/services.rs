//! The chaos run's service load: an echo service in each mode (per
//! connection with a warm container per node, and a pool of counted
//! instances), and clients that connect through any agent the run can
//! reach, send a seeded payload, half-close and read the echo back. Each
//! connection ends in an [`Outcome`]; [`check_connections`] decides which
//! outcomes break the rule "every connection completed or was refused
//! cleanly".

use std::net::SocketAddr;
use std::time::Duration;

use mesh_protocol::service::ServiceRequest;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::chaos::check::{Isolation, Violation};
use crate::chaos::{TASK_IMAGE, Unreachable, log, millis};
use crate::net::Testnet;

/// The container port of both services.
const PORT: u16 = 7000;
/// The services: name and the port every agent listens on.
pub const SERVICES: [(&str, u16); 2] = [("chaos-conn", 9400), ("chaos-pool", 9401)];
/// How often a client connects.
const CONNECT_EVERY: Duration = Duration::from_millis(1_000);
/// How long one connection may take, connect to last byte, before it counts
/// as hung.
const CONNECTION_LIMIT: Duration = Duration::from_secs(30);
/// Bytes each client sends.
const PAYLOAD: usize = 4_096;

/// The two definitions: per connection (one warm container per node) and a
/// pool of two instances, both one-core echo servers.
pub fn definitions() -> [ServiceRequest; 2] {
    let define = |(name, listen): (&str, u16), mode: &str| ServiceRequest {
        name: name.into(),
        image: TASK_IMAGE.into(),
        port: PORT,
        listen,
        mode: Some(mode.into()),
        cores: Some(1),
        command: ["echo", "--port", &PORT.to_string()]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    };
    [
        ServiceRequest {
            warm: Some(1),
            ..define(SERVICES[0], "per-connection")
        },
        ServiceRequest {
            instances: Some("2".into()),
            ..define(SERVICES[1], "pool")
        },
    ]
}

/// How one connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Every byte came back, then EOF.
    Completed,
    /// Refused, or closed before a byte came back.
    Refused,
    /// Closed after some bytes but not all, every one right.
    Cut,
    /// A byte came back that was not the one sent.
    Corrupted,
    /// No EOF within [`CONNECTION_LIMIT`].
    Hung,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Completed,
        Outcome::Refused,
        Outcome::Cut,
        Outcome::Corrupted,
        Outcome::Hung,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Refused => "refused",
            Outcome::Cut => "cut",
            Outcome::Corrupted => "corrupted",
            Outcome::Hung => "hung",
        }
    }
}

/// Judges what came back for what was sent.
pub fn judge(sent: &[u8], got: &[u8], ended: bool) -> Outcome {
    if !sent.starts_with(got) && !got.starts_with(sent) || got.len() > sent.len() {
        Outcome::Corrupted
    } else if !ended {
        Outcome::Hung
    } else if got.len() == sent.len() {
        Outcome::Completed
    } else if got.is_empty() {
        Outcome::Refused
    } else {
        Outcome::Cut
    }
}

/// One connection: where it went, when, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub service: &'static str,
    pub node: String,
    pub opened_ms: u64,
    pub closed_ms: u64,
    pub outcome: Outcome,
}

/// Completed and refused are clean; corrupted never is; a cut or hung
/// connection is clean only if a node was cut off or dead while it was open
/// (open connections are cut when their node goes, as the README says).
pub fn check_connections(conns: &[Connection], isolated: &[Isolation]) -> Vec<Violation> {
    conns
        .iter()
        .filter(|c| match c.outcome {
            Outcome::Completed | Outcome::Refused => false,
            Outcome::Corrupted => true,
            Outcome::Cut | Outcome::Hung => !isolated
                .iter()
                .any(|w| w.from_ms <= c.closed_ms && c.opened_ms <= w.to_ms),
        })
        .map(|c| Violation::Connection {
            what: format!(
                "{} through {} from {} ms to {} ms",
                c.service, c.node, c.opened_ms, c.closed_ms
            ),
            outcome: c.outcome.as_str(),
        })
        .collect()
}

/// Declares the services through `node` and waits until each serves a
/// connection through it.
pub async fn declare(net: &Testnet, node: &str) -> Result<(), crate::chaos::ChaosError> {
    let client = net.client(node)?;
    for def in definitions() {
        client
            .create_service(&def)
            .await
            .map_err(crate::TestnetError::api(node))?;
    }
    let ip = net.state().node(node)?.ip;
    for (name, listen) in SERVICES {
        let addr = SocketAddr::from((ip, listen));
        let what = format!("{name} serves through {node}");
        crate::steps::wait_until(&what, Duration::from_secs(90), async || {
            let (outcome, _) = exchange(addr, &[7; 64]).await;
            match outcome {
                Outcome::Completed => Ok(()),
                other => Err(other.as_str().to_owned()),
            }
        })
        .await?;
    }
    Ok(())
}

/// Removes the services (their containers go once their connections end).
pub async fn remove(net: &Testnet, node: &str) -> Result<(), crate::TestnetError> {
    let client = net.client(node)?;
    for (name, _) in SERVICES {
        client
            .remove_service(name)
            .await
            .map_err(crate::TestnetError::api(node))?;
    }
    Ok(())
}

/// Clients until `deadline`: one connection every [`CONNECT_EVERY`]
/// through a node the run can reach, to one of the services.
pub(crate) async fn clients(
    net: &Testnet,
    seed: u64,
    deadline: Instant,
    unreachable: &Unreachable,
    origin: Instant,
) -> Vec<Connection> {
    let mut rng = StdRng::seed_from_u64(seed);
    let nodes = net.nodes();
    let mut open = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(CONNECT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < deadline {
        tick.tick().await;
        let (service, listen) = SERVICES[rng.random_range(0..SERVICES.len())];
        let mut payload = vec![0u8; PAYLOAD];
        rng.fill_bytes(&mut payload);
        let reachable = unreachable.reachable(nodes.len());
        let pick = rng.random_range(0..reachable.len().max(1));
        let Some(node) = reachable.get(pick).map(|&i| nodes[i].to_string()) else {
            continue;
        };
        let Ok(record) = net.state().node(&node) else {
            continue;
        };
        let addr = SocketAddr::from((record.ip, listen));
        open.spawn(async move {
            let opened_ms = millis(origin);
            let (outcome, _) = exchange(addr, &payload).await;
            Connection {
                service,
                node,
                opened_ms,
                closed_ms: millis(origin),
                outcome,
            }
        });
    }
    let mut done = Vec::new();
    while let Some(conn) = open.join_next().await {
        match conn {
            Ok(conn) => done.push(conn),
            Err(e) => log(origin, format_args!("a client task failed: {e}")),
        }
    }
    done
}

/// Sends `payload`, half-closes, reads to EOF; bounded by
/// [`CONNECTION_LIMIT`].
async fn exchange(addr: SocketAddr, payload: &[u8]) -> (Outcome, usize) {
    let mut got = Vec::with_capacity(payload.len());
    let mut ended = false;
    let talk = async {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            ended = true;
            return;
        };
        let (mut rd, mut wr) = stream.split();
        let send = async {
            // A peer that closes early makes these fail: what came back
            // tells the outcome.
            let _ = wr.write_all(payload).await;
            let _ = wr.shutdown().await;
        };
        let recv = async {
            let mut buf = [0u8; 8_192];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        };
        tokio::join!(send, recv);
        ended = true;
    };
    let _ = tokio::time::timeout(CONNECTION_LIMIT, talk).await;
    (judge(payload, &got, ended), got.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_from_what_came_back() {
        let sent = b"abcdef";
        assert_eq!(judge(sent, b"abcdef", true), Outcome::Completed);
        assert_eq!(judge(sent, b"", true), Outcome::Refused);
        assert_eq!(judge(sent, b"abc", true), Outcome::Cut);
        assert_eq!(judge(sent, b"abx", true), Outcome::Corrupted);
        assert_eq!(judge(sent, b"abcdefg", true), Outcome::Corrupted);
        assert_eq!(judge(sent, b"abc", false), Outcome::Hung);
        assert_eq!(judge(sent, b"abx", false), Outcome::Corrupted);
    }

    fn conn(outcome: Outcome, opened_ms: u64, closed_ms: u64) -> Connection {
        Connection {
            service: "s",
            node: "n1".into(),
            opened_ms,
            closed_ms,
            outcome,
        }
    }

    #[test]
    fn only_a_cut_or_hang_with_no_fault_about_or_a_corruption_is_a_violation() {
        let window = [Isolation {
            node: "n3".into(),
            from_ms: 1_000,
            to_ms: 2_000,
        }];
        let conns = [
            conn(Outcome::Completed, 0, 10),
            conn(Outcome::Refused, 0, 10),
            // Open while n3 was cut off.
            conn(Outcome::Cut, 900, 1_100),
            conn(Outcome::Hung, 1_500, 31_500),
            // Nothing happening.
            conn(Outcome::Cut, 5_000, 5_100),
            conn(Outcome::Corrupted, 1_200, 1_300),
        ];
        let found = check_connections(&conns, &window);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].to_string().contains("cut"), "{}", found[0]);
        assert!(found[1].to_string().contains("corrupted"), "{}", found[1]);
    }
}
