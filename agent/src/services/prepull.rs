//! Pre-pull: the task that gets every live service's image onto this node
//! as soon as the node knows the service (created here, learned by gossip,
//! or read from `services.json` at start), so that the first connection
//! does not wait for a pull. It follows the pure `PrePulls` (which pulls to
//! start, stop and retry, which failures to log), pulls through the shared
//! `Pulls` (a container start that needs the image joins the same pull),
//! and publishes each service's `ImageStatus` on a `watch`: the owner
//! gossips it (`simg`), the front routes by it, reports show it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use mesh_protocol::ServiceName;
use mesh_protocol::image::PullProgress;
use mesh_protocol::service::ServiceDef;
use mesh_protocol::service::image::{ImageStatus, NodeImage};
use mesh_protocol::service::prepull::{PrePulls, Step, Wanted};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tracing::{info, warn};

use crate::clock::Clock;
use crate::images::Pulls;
use crate::runtime::ContainerRuntime;

/// Each live service's image on this node, as last published.
#[derive(Debug, Default)]
pub struct Images {
    pub statuses: BTreeMap<ServiceName, ImageStatus>,
    /// What this node gossips under `simg`.
    pub gossip: BTreeMap<String, NodeImage>,
}

pub type ImagesView = watch::Receiver<Arc<Images>>;

/// The owner's handle: says which services this node serves. The task ends
/// when the handle is dropped.
#[derive(Debug)]
pub struct PrePull {
    tx: mpsc::UnboundedSender<BTreeMap<ServiceName, Wanted>>,
    view: ImagesView,
}

/// What a pull reports back.
enum Event {
    Progress(ServiceName, u64, PullProgress),
    Finished(ServiceName, u64, String, Result<(), String>),
}

impl PrePull {
    pub fn spawn<R: ContainerRuntime>(
        pulls: Pulls<R>,
        clock: Clock,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (publish, view) = watch::channel(Arc::new(Images::default()));
        let join = tokio::spawn(run(pulls, clock, rx, publish));
        (Self { tx, view }, join)
    }

    /// The live definitions: their images are pulled here (again when a
    /// definition names another image); removed ones are forgotten.
    pub fn want(&self, defs: &[ServiceDef]) {
        let wanted = defs
            .iter()
            .filter(|d| !d.removed)
            .map(|d| {
                let w = Wanted {
                    image: d.spec.image.clone(),
                    policy: d.spec.pull,
                };
                (d.name().clone(), w)
            })
            .collect();
        // After the task ended (shutdown) nothing is pulled.
        let _ = self.tx.send(wanted);
    }

    pub fn view(&self) -> ImagesView {
        self.view.clone()
    }
}

async fn run<R: ContainerRuntime>(
    pulls: Pulls<R>,
    clock: Clock,
    mut wants: mpsc::UnboundedReceiver<BTreeMap<ServiceName, Wanted>>,
    publish: watch::Sender<Arc<Images>>,
) {
    let mut state = PrePulls::default();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    // Dropping the set (when the handle goes) aborts the pulls we wait on.
    let mut work = JoinSet::new();
    let mut running: HashMap<ServiceName, AbortHandle> = HashMap::new();
    loop {
        let retry_in = state
            .next_due()
            .map(|at| Duration::from_millis(at.saturating_sub(clock.now_ms())));
        let steps = tokio::select! {
            wanted = wants.recv() => match wanted {
                Some(wanted) => state.want(wanted),
                None => return,
            },
            Some(event) = events.recv() => {
                match event {
                    Event::Progress(name, generation, p) => state.progress(&name, generation, p),
                    Event::Finished(name, generation, image, result) => {
                        let ok = result.is_ok();
                        if let Some(why) = state.finished(&name, generation, result, clock.now_ms()) {
                            warn!(service = %name, %image, reason = %why, "cannot pull the service's image; connections go to other nodes until a pull succeeds (tried again later)");
                        } else if ok {
                            info!(service = %name, %image, "service image present");
                        }
                    }
                }
                Vec::new()
            }
            _ = sleep(retry_in) => state.due(clock.now_ms()),
            Some(_) = work.join_next() => Vec::new(),
        };
        for step in steps {
            match step {
                Step::Stop(name) => {
                    if let Some(pull) = running.remove(&name) {
                        pull.abort();
                    }
                }
                Step::Pull {
                    service,
                    image,
                    policy,
                    generation,
                } => {
                    let pulls = pulls.clone();
                    let events = events_tx.clone();
                    let name = service.clone();
                    let handle = work.spawn(async move {
                        let moved = |p| {
                            let _ = events.send(Event::Progress(name.clone(), generation, p));
                        };
                        let result = pulls.ensure(&image, policy, moved).await;
                        let result = result.map_err(|e| e.to_string());
                        let _ = events.send(Event::Finished(name, generation, image, result));
                    });
                    if let Some(old) = running.insert(service, handle) {
                        old.abort();
                    }
                }
            }
        }
        let images = Images {
            statuses: state.statuses(),
            gossip: state.gossip(),
        };
        publish.send_if_modified(|now| {
            let changed = now.statuses != images.statuses;
            if changed {
                *now = Arc::new(images);
            }
            changed
        });
    }
}

/// Sleeps `d`, or forever with none.
async fn sleep(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
