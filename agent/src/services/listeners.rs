//! The set of this node's service listeners, owned by the services task:
//! one per live service on `--service-bind` and its `listen` port, or why
//! not: a port outside `--service-ports` (never listened on here), or one
//! that could not be bound (tried again with a back-off). Accepted
//! connections go to `Front`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mesh_protocol::ServiceName;
use mesh_protocol::service::ServiceSpec;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::front::Front;
use super::port_range::ServicePorts;
use super::ports::MeshPort;
use crate::repeat::RepeatGate;

/// A port that could not be bound is tried again after this long, doubling
/// up to `RETRY_MAX` (so a port a restarting daemon wants back is not
/// taken from it at the first chance, every round).
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// A service's listener on this node.
enum Listener {
    Open {
        port: u16,
        stop: CancellationToken,
        /// The definition its connections are served by (updated in place
        /// when the service is redefined on the same port).
        spec: watch::Sender<Arc<ServiceSpec>>,
    },
    /// Its port is outside `--service-ports`: not listened on here.
    NotAllowed { port: u16, why: String },
    /// It could not bind: why, how often it was tried, and when next; the
    /// gate says a reason once and counts its repeats.
    Refused {
        port: u16,
        why: String,
        tries: u32,
        next: Instant,
        gate: RepeatGate,
    },
}

/// Why a service is not listened for.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("port {port} is outside this node's --service-ports {allowed}")]
    NotAllowed { port: u16, allowed: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// Not tried now: the last bind failed and its back-off runs.
    #[error("waiting to try the port again")]
    Waiting,
}

/// How long to wait after `tries` failed binds in a row.
fn retry_after(tries: u32) -> Duration {
    RETRY_MIN
        .saturating_mul(1 << tries.saturating_sub(1).min(16))
        .min(RETRY_MAX)
}

pub struct Listeners<M> {
    front: Arc<Front<M>>,
    bind: IpAddr,
    ports: ServicePorts,
    map: BTreeMap<ServiceName, Listener>,
}

impl<M: MeshPort> Listeners<M> {
    pub fn new(front: Arc<Front<M>>, bind: IpAddr, ports: ServicePorts) -> Self {
        Self {
            front,
            bind,
            ports,
            map: BTreeMap::new(),
        }
    }

    /// The ports services may listen on here.
    pub fn ports(&self) -> &ServicePorts {
        &self.ports
    }

    /// Whether this node listens for `name`, or why not.
    pub fn state(&self, name: &ServiceName) -> (bool, Option<String>) {
        match self.map.get(name) {
            Some(Listener::Open { .. }) => (true, None),
            Some(Listener::NotAllowed { why, .. }) => (false, Some(why.clone())),
            Some(Listener::Refused {
                why, tries, next, ..
            }) => {
                let wait = next.saturating_duration_since(Instant::now());
                let again = format!(
                    "{why} (tried {tries} time{}; next in {} s)",
                    if *tries == 1 { "" } else { "s" },
                    wait.as_secs().max(1)
                );
                (false, Some(again))
            }
            None => (false, None),
        }
    }

    /// Listens again for a service that could not bind, if its back-off
    /// has run out; does nothing for one that listens or is not allowed
    /// (unless its port changed: then as `listen`).
    pub fn retry(&mut self, spec: &ServiceSpec) -> Result<(), ListenError> {
        match self.map.get(&spec.name) {
            Some(Listener::Refused { port, next, .. })
                if *port == spec.listen && Instant::now() < *next =>
            {
                Err(ListenError::Waiting)
            }
            _ => self.listen(spec),
        }
    }

    /// Listens for the service's clients (again, if its port changed).
    pub fn listen(&mut self, spec: &ServiceSpec) -> Result<(), ListenError> {
        if !self.ports.allows(spec.listen) {
            let e = ListenError::NotAllowed {
                port: spec.listen,
                allowed: self.ports.to_string(),
            };
            let why = e.to_string();
            match self.map.insert(
                spec.name.clone(),
                Listener::NotAllowed {
                    port: spec.listen,
                    why: why.clone(),
                },
            ) {
                Some(Listener::NotAllowed { port, .. }) if port == spec.listen => {}
                Some(Listener::Open { stop, .. }) => {
                    stop.cancel();
                    warn!(service = %spec.name, %why, "service not served from this node");
                }
                _ => warn!(service = %spec.name, %why, "service not served from this node"),
            }
            return Err(e);
        }
        match self.map.get(&spec.name) {
            Some(Listener::Open {
                port, spec: now, ..
            }) if *port == spec.listen => {
                now.send_if_modified(|now| {
                    let changed = **now != *spec;
                    if changed {
                        *now = Arc::new(spec.clone());
                    }
                    changed
                });
                return Ok(());
            }
            Some(Listener::Open { stop, .. }) => stop.cancel(),
            _ => {}
        }
        // The failures of the same port so far, if any.
        let (tries, mut gate) = match self.map.remove(&spec.name) {
            Some(Listener::Refused {
                port, tries, gate, ..
            }) if port == spec.listen => (tries, gate),
            _ => (0, RepeatGate::default()),
        };
        let addr = SocketAddr::new(self.bind, spec.listen);
        let bound = std::net::TcpListener::bind(addr).and_then(|l| {
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)
        });
        let listener = match bound {
            Ok(l) => l,
            Err(source) => {
                let e = ListenError::Bind { addr, source };
                let why = e.to_string();
                let tries = tries.saturating_add(1);
                // Tried again with a back-off; said once per new reason,
                // with how often the reason before came back.
                match gate.failed(&why) {
                    Some(None) => {
                        warn!(service = %spec.name, %why, "service not served from this node (tried again after 1 s, doubling up to a minute)")
                    }
                    Some(Some(before)) => {
                        warn!(service = %spec.name, %why, before = %before.reason, repeats = before.repeats, "service not served from this node, for another reason now (tried again after 1 s, doubling up to a minute)")
                    }
                    None => {}
                }
                let refused = Listener::Refused {
                    port: spec.listen,
                    why,
                    tries,
                    next: Instant::now() + retry_after(tries),
                    gate,
                };
                self.map.insert(spec.name.clone(), refused);
                return Err(e);
            }
        };
        if let Some(last) = gate.cleared() {
            info!(service = %spec.name, %addr, failed_tries = tries, last_reason = %last.reason, repeats = last.repeats, "the service's port is free again");
        }
        let stop = CancellationToken::new();
        let (spec_tx, spec_rx) = watch::channel(Arc::new(spec.clone()));
        let open = Listener::Open {
            port: spec.listen,
            stop: stop.clone(),
            spec: spec_tx,
        };
        self.map.insert(spec.name.clone(), open);
        info!(service = %spec.name, %addr, mode = %spec.mode, "listening for a service's clients");
        self.front.accept(listener, spec_rx, stop);
        Ok(())
    }

    /// Stops accepting new clients of `name`, and forgets why it could not
    /// listen; open connections go on.
    pub fn stop(&mut self, name: &ServiceName) {
        if let Some(Listener::Open { stop, .. }) = self.map.remove(name) {
            stop.cancel();
        }
    }

    /// Stops every listener; open connections go on.
    pub fn stop_all(&mut self) {
        for (_, l) in std::mem::take(&mut self.map) {
            if let Listener::Open { stop, .. } = l {
                stop.cancel();
            }
        }
    }
}

impl<M> std::fmt::Debug for Listeners<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners")
            .field("services", &self.map.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_bind_waits_longer_each_time_up_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_after(u32::MAX), RETRY_MAX);
    }
}
