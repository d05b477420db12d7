//! The services task: owns the definitions (`Registry`) and this node's
//! listeners (`Listeners`). It merges the gossip's definitions every round,
//! starts or stops listeners, tells the backend what to serve and how big
//! each pool is here, answers the API's create and remove, tells the
//! pre-pull which images to get, and publishes the definitions and this
//! node's figures and images (to the mesh, and on a `watch` for the API's
//! reads).

use mesh_protocol::events::EventKind;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mesh_protocol::ServiceName;
use mesh_protocol::auth::Caller;
use mesh_protocol::service::choice::pool_share;
use mesh_protocol::service::image::{ImageStatus, NodeImage, node_images};
use mesh_protocol::service::{Mode, ServiceDef, ServiceRequest, ServiceSpec};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::backend::Backend;
use super::front::Front;
use super::gossiped::{self, Warned};
use super::listeners::Listeners;
use super::ports::MeshPort;
use super::prepull::{ImagesView, PrePull};
use super::registry::Registry;
use super::{Conflict, ServiceApiError, UnknownService};
use crate::clock::Clock;
use crate::mesh::candidates_of;

/// How long open connections may take to end at shutdown.
const CONNECTIONS_DRAIN: Duration = Duration::from_secs(2);

pub(super) type Answer = oneshot::Sender<Result<ServiceDef, ServiceApiError>>;

/// What the API asks of the task.
pub(super) enum Cmd {
    Create(Box<ServiceRequest>, Caller, Answer),
    Remove(String, Caller, Answer),
}

/// What the task publishes for the API's reads.
#[derive(Debug, Default)]
pub(super) struct Published {
    /// Live (not removed) definitions.
    pub defs: Vec<ServiceDef>,
    /// Per live service: whether this node listens, or why not.
    pub listening: BTreeMap<ServiceName, (bool, Option<String>)>,
}

pub(super) struct Owner<M> {
    pub registry: Registry,
    pub listeners: Listeners<M>,
    pub backend: Backend,
    pub front: Arc<Front<M>>,
    pub mesh: M,
    pub publish: watch::Sender<Arc<Published>>,
    /// Pulls the live services' images here.
    pub prepull: PrePull,
    pub images: ImagesView,
    /// The `simg` value last seen changing.
    pub gossiped_images: BTreeMap<String, NodeImage>,
    /// Whether the containers of earlier runs are gone (tried at start,
    /// and every round until Docker answers).
    pub stale_removed: bool,
    /// Revisions are the time of a change, in milliseconds.
    pub clock: Clock,
    /// The peers' invalid definitions warned about.
    pub warned: Warned,
    /// Where services made and removed through this node are told.
    pub events: crate::events::EventLog,
}

impl<M: MeshPort> Owner<M> {
    /// Runs rounds every `every` and answers commands until `shutdown`;
    /// then stops listening and has the backend remove every service
    /// container of this node.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Cmd>,
        every: Duration,
        shutdown: CancellationToken,
        backend_task: tokio::task::JoinHandle<()>,
    ) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.round().await,
                Some(cmd) = rx.recv() => {
                    self.command(cmd);
                    self.publish_mesh().await;
                }
                // A pull began, ended or failed: the mesh routes by it (a
                // pull's progress alone changes nothing gossiped).
                Ok(()) = self.images.changed() => {
                    let now = self.images.borrow().gossip.clone();
                    if now != self.gossiped_images {
                        self.gossiped_images = now;
                        self.publish_mesh().await;
                    }
                }
            }
        }
        self.listeners.stop_all();
        match self.backend.shutdown().await {
            Ok(n) => info!(count = n, "removed this node's service containers"),
            Err(e) => {
                warn!(error = %e, "cannot remove this node's service containers; the next start (or meshd --cleanup) removes them")
            }
        }
        // Their containers are gone: local connections have ended.
        self.front.drain(CONNECTIONS_DRAIN).await;
        if let Err(e) = backend_task.await {
            warn!(error = %e, "the service containers' task failed");
        }
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Create(request, by, answer) => {
                let _ = answer.send(self.create(*request, by));
            }
            Cmd::Remove(name, by, answer) => {
                let _ = answer.send(self.remove(&name, &by));
            }
        }
        self.publish_local();
    }

    /// Creates a service owned by `by`.
    fn create(
        &mut self,
        request: ServiceRequest,
        by: Caller,
    ) -> Result<ServiceDef, ServiceApiError> {
        let spec = ServiceSpec::try_from(request)?;
        if !self.listeners.ports().allows(spec.listen) {
            return Err(ServiceApiError::PortNotAllowed {
                port: spec.listen,
                allowed: self.listeners.ports().to_string(),
            });
        }
        let live = self.registry.all();
        if let Some(old) = live.iter().find(|d| d.name() == &spec.name && !d.removed) {
            return Err(Conflict::Exists {
                name: spec.name.clone(),
                listen: old.spec.listen,
            }
            .into());
        }
        if let Some(other) = live
            .iter()
            .find(|d| !d.removed && d.spec.listen == spec.listen)
        {
            return Err(Conflict::PortTaken {
                port: spec.listen,
                by: other.name().clone(),
            }
            .into());
        }
        let revision = ServiceDef::next_revision(
            live.iter().find(|d| d.name() == &spec.name),
            self.clock.now_ms(),
        );
        let def = ServiceDef {
            spec,
            revision,
            removed: false,
            owner: by.user,
        };
        // Listen here first: a port this node cannot bind is refused before
        // the definition spreads.
        self.backend.define(def.spec.clone());
        if let Err(e) = self.listeners.listen(&def.spec) {
            self.listeners.stop(def.name());
            self.backend.remove(def.name());
            return Err(Conflict::CannotListen(e).into());
        }
        let changed = match self.registry.merge(vec![def.clone()]) {
            Ok(changed) => changed,
            Err(e) => {
                self.listeners.stop(def.name());
                self.backend.remove(def.name());
                return Err(e.into());
            }
        };
        self.apply(&changed);
        info!(service = %def.name(), listen = def.spec.listen, mode = %def.spec.mode, "service created");
        self.events.emit(
            EventKind::ServiceCreated,
            def.name(),
            format!(
                "by {} through {}: image {}, port {}, {}",
                def.owner,
                self.mesh.node(),
                def.spec.image,
                def.spec.listen,
                def.spec.mode
            ),
        );
        Ok(def)
    }

    /// Removes a service for `by`, if they may: its owner or an admin.
    fn remove(&mut self, name: &str, by: &Caller) -> Result<ServiceDef, ServiceApiError> {
        let name = ServiceName::new(name).map_err(UnknownService::from)?;
        let old = self
            .registry
            .get(&name)
            .ok_or_else(|| UnknownService::Missing(name.clone()))?;
        if !by.may_act_on(&old.owner) {
            return Err(ServiceApiError::Forbidden(
                by.refusal(&format!("service {name}"), &old.owner),
            ));
        }
        let tombstone = ServiceDef {
            revision: ServiceDef::next_revision(Some(&old), self.clock.now_ms()),
            removed: true,
            spec: old.spec,
            owner: old.owner,
        };
        let changed = self.registry.merge(vec![tombstone.clone()])?;
        self.apply(&changed);
        self.events.emit(
            EventKind::ServiceRemoved,
            &name,
            format!(
                "by {} through {}; open connections finish",
                by.user,
                self.mesh.node()
            ),
        );
        Ok(tombstone)
    }

    /// Starts serving, stops serving or updates what changed.
    pub fn apply(&mut self, changed: &[ServiceDef]) {
        for def in changed {
            if def.removed {
                info!(service = %def.name(), "service removed; open connections finish");
                self.listeners.stop(def.name());
                self.backend.remove(def.name());
                self.front.forget_counts(def.name());
            } else {
                self.backend.define(def.spec.clone());
                // Errors are logged and shown in reports.
                let _ = self.listeners.listen(&def.spec);
            }
        }
    }

    /// Publishes the definitions and listeners for the API's reads, and
    /// has the pre-pull follow the live definitions.
    pub fn publish_local(&self) {
        let defs: Vec<ServiceDef> = self
            .registry
            .all()
            .into_iter()
            .filter(|d| !d.removed)
            .collect();
        self.prepull.want(&defs);
        let listening = defs
            .iter()
            .map(|d| (d.name().clone(), self.listeners.state(d.name())))
            .collect();
        self.publish
            .send_replace(Arc::new(Published { defs, listening }));
    }

    async fn publish_mesh(&self) {
        let images = self.images.borrow().gossip.clone();
        self.mesh
            .publish_services(&self.registry.all(), &self.backend.loads(), &images)
            .await;
    }

    /// Removes the containers of earlier runs unless they are gone already.
    pub async fn remove_stale(&mut self) {
        if self.stale_removed {
            return;
        }
        match self.backend.remove_stale().await {
            Ok(n) => {
                self.stale_removed = true;
                if n > 0 {
                    info!(count = n, "removed service containers a previous run left");
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot remove the service containers of a previous run yet")
            }
        }
    }

    async fn round(&mut self) {
        self.remove_stale().await;
        // A listener that could not bind (port taken) is tried again once
        // its back-off has run out.
        for d in self.registry.all().iter().filter(|d| !d.removed) {
            let _ = self.listeners.retry(&d.spec);
        }
        let (defs, refused) = gossiped::read(self.mesh.service_defs().await, self.clock.now_ms());
        self.warned.warn(&refused);
        match self.registry.merge(defs) {
            Ok(changed) => self.apply(&changed),
            Err(e) => warn!(error = %e, "cannot store service definitions"),
        }
        let peers = self.mesh.peers().await;
        let view = candidates_of(&peers);
        let me = self.mesh.node();
        let own = self.images.borrow().clone();
        let wants: BTreeMap<ServiceName, Vec<u32>> = self
            .registry
            .all()
            .into_iter()
            .filter(|d| !d.removed && d.spec.mode == Mode::Pool)
            .map(|d| {
                let images =
                    node_images(&peers, d.name().as_str(), &me, own.statuses.get(d.name()));
                (
                    d.spec.name.clone(),
                    pool_share(&d.spec, &view, &images, &me),
                )
            })
            .collect();
        let no_image = own
            .statuses
            .iter()
            .filter(|(_, s)| matches!(s, ImageStatus::Failed(_)))
            .map(|(n, _)| n.clone())
            .collect();
        self.backend.tick(wants, no_image);
        self.publish_local();
        self.publish_mesh().await;
    }
}
