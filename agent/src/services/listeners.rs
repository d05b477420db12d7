//! The set of this node's service listeners, owned by the services task:
//! one per live service on `--service-bind` and its `listen` port, or why
//! it could not bind. Accepted connections go to `Front`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mesh_protocol::ServiceName;
use mesh_protocol::service::ServiceSpec;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::front::Front;
use super::ports::MeshPort;

/// A service's listener on this node.
enum Listener {
    Open {
        port: u16,
        stop: CancellationToken,
        /// The definition its connections are served by (updated in place
        /// when the service is redefined on the same port).
        spec: watch::Sender<Arc<ServiceSpec>>,
    },
    /// It could not bind; why.
    Refused(String),
}

pub struct Listeners<M> {
    front: Arc<Front<M>>,
    bind: IpAddr,
    map: BTreeMap<ServiceName, Listener>,
}

impl<M: MeshPort> Listeners<M> {
    pub fn new(front: Arc<Front<M>>, bind: IpAddr) -> Self {
        Self {
            front,
            bind,
            map: BTreeMap::new(),
        }
    }

    /// Whether this node listens for `name`, or why not.
    pub fn state(&self, name: &ServiceName) -> (bool, Option<String>) {
        match self.map.get(name) {
            Some(Listener::Open { .. }) => (true, None),
            Some(Listener::Refused(why)) => (false, Some(why.clone())),
            None => (false, None),
        }
    }

    /// Listens for the service's clients (again, if its port changed).
    pub fn listen(&mut self, spec: &ServiceSpec) -> std::io::Result<()> {
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
        let addr = SocketAddr::new(self.bind, spec.listen);
        let bound = std::net::TcpListener::bind(addr).and_then(|l| {
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)
        });
        let listener = match bound {
            Ok(l) => l,
            Err(e) => {
                // Tried again every round; said once per new reason.
                let why = format!("cannot listen on {addr}: {e}");
                let new = Listener::Refused(why.clone());
                if !matches!(self.map.insert(spec.name.clone(), new), Some(Listener::Refused(old)) if old == why)
                {
                    warn!(service = %spec.name, %why, "service not served from this node (tried again every round)");
                }
                return Err(e);
            }
        };
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

    /// Stops accepting new clients of `name`; open connections go on.
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
