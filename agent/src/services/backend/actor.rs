//! The task that owns the state of this node's service containers. It is
//! fed commands by `Backend` handles, asks the pure `plan` what to do, runs
//! what it says as tracked work (a `JoinSet`) whose results come back here
//! as events, and publishes the figures after every message. At shutdown
//! the work is drained (within a deadline) and every service container of
//! this node removed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use mesh_protocol::ServiceName;
use mesh_protocol::load::ServiceLoad;
use mesh_protocol::service::ServiceSpec;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::error::AcquireError;
use super::start::Effects;
use crate::runtime::{ContainerRuntime, RuntimeError};
use crate::services::plan::{Action, Grant, Plan, Refusal, StartFailure, Started};
use crate::services::ports::Cores;

/// How long the jobs in flight (starts, removals) may take at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

pub(super) type Reply<T> = oneshot::Sender<T>;

/// What handles ask of the actor.
pub(super) enum Cmd {
    Define(Arc<ServiceSpec>),
    Remove(ServiceName),
    Acquire(ServiceName, Reply<Result<Granted, AcquireError>>),
    /// A connection to this container (by id) ended.
    Release(ServiceName, String),
    Enqueue(ServiceName, Reply<bool>),
    Dequeue(ServiceName),
    /// Pool wants, and the services whose image this node failed to pull.
    Tick(BTreeMap<ServiceName, Vec<u32>>, BTreeSet<ServiceName>),
    RemoveStale(Reply<Result<usize, RuntimeError>>),
    Shutdown(Reply<Result<usize, RuntimeError>>),
}

/// A container handed to a connection.
pub(super) enum Granted {
    /// A per-connection container, with the connection the readiness check
    /// opened (a client's first bytes go to a container that accepted).
    Connected(Started, TcpStream),
    /// A pool instance; the caller connects.
    Instance(Started),
}

/// The figures the actor publishes after each message.
#[derive(Debug, Default)]
pub(super) struct Snapshot {
    pub loads: BTreeMap<ServiceName, ServiceLoad>,
    /// The containers' holder ids, warm or serving.
    pub holders: Vec<mesh_protocol::cores::ServiceHolder>,
}

/// What tracked work reports back.
enum Event {
    Warm(Arc<ServiceSpec>, Result<(Started, TcpStream), AcquireError>),
    Instance(Arc<ServiceSpec>, Result<Started, AcquireError>),
    Fresh(
        ServiceName,
        Result<(Started, TcpStream), AcquireError>,
        Reply<Result<Granted, AcquireError>>,
    ),
    Exited(ServiceName, Started, Result<i64, RuntimeError>),
    Done,
}

pub(super) struct Actor<R, C> {
    plan: Plan<TcpStream>,
    fx: Arc<Effects<R, C>>,
    work: JoinSet<Event>,
    rx: mpsc::UnboundedReceiver<Cmd>,
    publish: watch::Sender<Arc<Snapshot>>,
    released: Arc<Notify>,
    /// Ends the watches of pool instances at shutdown.
    watching: CancellationToken,
}

impl<R: ContainerRuntime, C: Cores> Actor<R, C> {
    pub fn new(
        fx: Effects<R, C>,
        rx: mpsc::UnboundedReceiver<Cmd>,
        publish: watch::Sender<Arc<Snapshot>>,
        released: Arc<Notify>,
    ) -> Self {
        Self {
            plan: Plan::default(),
            fx: Arc::new(fx),
            work: JoinSet::new(),
            rx,
            publish,
            released,
            watching: CancellationToken::new(),
        }
    }

    pub async fn run(mut self) {
        loop {
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => {
                        if let Some(reply) = self.command(cmd) {
                            let _ = reply.send(self.shutdown().await);
                            return;
                        }
                    }
                    None => {
                        let _ = self.shutdown().await;
                        return;
                    }
                },
                Some(done) = self.work.join_next() => match done {
                    Ok(event) => self.event(event),
                    Err(e) => warn!(error = %e, "a service container job failed"),
                },
            }
            self.publish();
        }
    }

    /// Handles one command; returns where to answer when it asks to stop.
    fn command(&mut self, cmd: Cmd) -> Option<Reply<Result<usize, RuntimeError>>> {
        let now = Instant::now();
        match cmd {
            Cmd::Define(spec) => {
                let actions = self.plan.define(spec);
                self.execute(actions);
            }
            Cmd::Remove(name) => {
                let actions = self.plan.remove(&name);
                self.execute(actions);
            }
            Cmd::Acquire(name, reply) => self.acquire(name, reply, now),
            Cmd::Release(name, id) => {
                let actions = self.plan.release(&name, &id, now);
                self.execute(actions);
                self.released.notify_waiters();
            }
            Cmd::Enqueue(name, reply) => {
                let _ = reply.send(self.plan.enqueue(&name));
            }
            Cmd::Dequeue(name) => self.plan.dequeue(&name),
            Cmd::Tick(wants, no_image) => {
                self.plan.set_no_image(&no_image);
                let actions = self.plan.tick(&wants, now);
                self.execute(actions);
            }
            Cmd::RemoveStale(reply) => {
                let fx = self.fx.clone();
                self.work.spawn(async move {
                    let _ = reply.send(fx.remove_stale().await);
                    Event::Done
                });
            }
            Cmd::Shutdown(reply) => return Some(reply),
        }
        None
    }

    fn acquire(
        &mut self,
        name: ServiceName,
        reply: Reply<Result<Granted, AcquireError>>,
        now: Instant,
    ) {
        let (grant, actions) = self.plan.acquire(&name, still_open, now);
        self.execute(actions);
        match grant {
            Ok(Grant::Warm(started, stream)) => {
                self.hand_over(&name, reply, Granted::Connected(started, stream))
            }
            Ok(Grant::Instance(started)) => {
                self.hand_over(&name, reply, Granted::Instance(started))
            }
            Ok(Grant::Fresh(spec)) => {
                let fx = self.fx.clone();
                self.work.spawn(async move {
                    let started = fx.start_ready(&spec, spec.cores).await;
                    Event::Fresh(spec.name.clone(), started, reply)
                });
            }
            Err(refusal) => {
                let node = self.fx.cfg.node.clone();
                let _ = reply.send(Err(match refusal {
                    Refusal::Gone => AcquireError::Gone(name),
                    Refusal::AtCapacity { containers } => AcquireError::AtCapacity {
                        node,
                        service: name,
                        containers,
                    },
                    Refusal::NoInstance => AcquireError::NoInstance {
                        node,
                        service: name,
                    },
                    Refusal::Starting { starting } => AcquireError::Starting {
                        node,
                        service: name,
                        starting,
                    },
                }));
            }
        }
    }

    /// Gives a container to the connection that asked; if it stopped
    /// waiting, the container is released at once.
    fn hand_over(
        &mut self,
        name: &ServiceName,
        reply: Reply<Result<Granted, AcquireError>>,
        granted: Granted,
    ) {
        if let Err(Ok(Granted::Connected(s, _) | Granted::Instance(s))) = reply.send(Ok(granted)) {
            let actions = self.plan.release(name, &s.id, Instant::now());
            self.execute(actions);
        }
    }

    fn event(&mut self, event: Event) {
        let now = Instant::now();
        let actions = match event {
            Event::Warm(spec, result) => {
                let result = result.map_err(|e| failure(&e));
                self.released.notify_waiters();
                self.plan.warm_started(&spec, result, now)
            }
            Event::Instance(spec, result) => {
                if let Ok(s) = &result {
                    info!(service = %spec.name, container = %s.name, "pool instance ready");
                }
                let result = result.map_err(|e| failure(&e));
                self.released.notify_waiters();
                self.plan.instance_started(&spec, result, now)
            }
            // A start ended: a connection waiting for one of the
            // `MAX_STARTING` may now start one.
            Event::Fresh(name, Ok((started, stream)), reply) => {
                let actions = self.plan.fresh_started(&name, Some(started.clone()));
                self.execute(actions);
                self.hand_over(&name, reply, Granted::Connected(started, stream));
                self.released.notify_waiters();
                Vec::new()
            }
            Event::Fresh(name, Err(e), reply) => {
                let _ = reply.send(Err(e));
                self.released.notify_waiters();
                self.plan.fresh_started(&name, None)
            }
            Event::Exited(name, started, code) => {
                let actions = self.plan.instance_exited(&name, &started.id);
                if !actions.is_empty() {
                    warn!(service = %name, container = %started.name, exit = ?code, "pool instance ended; a new one will replace it");
                }
                self.released.notify_waiters();
                actions
            }
            Event::Done => Vec::new(),
        };
        self.execute(actions);
    }

    /// Carries out the plan's actions as tracked work.
    fn execute(&mut self, actions: Vec<Action>) {
        for action in actions {
            let fx = self.fx.clone();
            match action {
                Action::StartWarm(spec) => {
                    self.work.spawn(async move {
                        let started = fx.start_ready(&spec, spec.cores).await;
                        Event::Warm(spec, started)
                    });
                }
                Action::StartInstance(spec, cores) => {
                    self.work.spawn(async move {
                        // The readiness check's connection is not needed.
                        let started = fx.start_ready(&spec, cores).await.map(|(s, _)| s);
                        Event::Instance(spec, started)
                    });
                }
                Action::Watch(name, started) => {
                    let stop = self.watching.clone();
                    self.work.spawn(async move {
                        tokio::select! {
                            _ = stop.cancelled() => Event::Done,
                            code = fx.wait(&started) => Event::Exited(name, started, code),
                        }
                    });
                }
                Action::Remove(started) => {
                    self.fx.cfg.events.emit_flood(
                        mesh_protocol::events::EventKind::ContainerRetired,
                        &started.service,
                        format!(
                            "{} on {} stopped and removed",
                            started.name, self.fx.cfg.node
                        ),
                    );
                    self.work.spawn(async move {
                        fx.discard(&started).await;
                        Event::Done
                    });
                }
            }
        }
    }

    fn publish(&self) {
        let loads = self.plan.loads().map(|(n, l)| (n.clone(), l)).collect();
        let holders = self.plan.holders();
        self.publish
            .send_replace(Arc::new(Snapshot { loads, holders }));
    }

    /// Drains the work in flight (watches end at once; starts and removals
    /// get `DRAIN`), then removes every service container of this node.
    async fn shutdown(&mut self) -> Result<usize, RuntimeError> {
        self.watching.cancel();
        let deadline = Instant::now() + DRAIN;
        while let Ok(Some(_)) = tokio::time::timeout_at(deadline, self.work.join_next()).await {}
        if !self.work.is_empty() {
            warn!(
                jobs = self.work.len(),
                "service container jobs did not finish in time; stopped"
            );
        }
        self.work.shutdown().await;
        self.fx.remove_all().await
    }
}

/// Whether a failed background start backs off.
fn failure(e: &AcquireError) -> StartFailure {
    if e.is_failure() {
        StartFailure::Broken
    } else {
        StartFailure::NoRoom
    }
}

/// Whether a warm container's connection is still open (the container may
/// have closed it or died since): a closed one reads end-of-stream now.
fn still_open(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut rb = tokio::io::ReadBuf::new(&mut buf);
    match stream.poll_peek(&mut cx, &mut rb) {
        std::task::Poll::Ready(Ok(0)) | std::task::Poll::Ready(Err(_)) => false,
        std::task::Poll::Ready(Ok(_)) | std::task::Poll::Pending => true,
    }
}
