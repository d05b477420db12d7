//! The decisions about this node's service containers, with no Docker, no
//! sockets and no clock (`now` is passed in): which warm containers and
//! pool instances to start, which container a connection gets, what to
//! retire and remove, and when failing starts back off. Every method
//! updates the state and returns the `Action`s an executor carries out;
//! the results come back through the `*_started`, `release` and
//! `instance_exited` methods.
//!
//! The figures (`ServiceLoad`) are derived from what is held, never kept
//! as separate counters: a container is counted while it is starting, warm,
//! busy or a pool instance, and stops being counted when the `Remove` for
//! it is returned.
//!
//! `W` is what a warm container carries besides its identity (the agent:
//! its open connection; tests: nothing).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_protocol::load::ServiceLoad;
use mesh_protocol::service::{Mode, ServiceSpec};
use mesh_protocol::{CoreCount, ServiceName, TaskId};
use tokio::time::Instant;

/// Failed background starts wait this long, doubling up to `BACKOFF_MAX`.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Most containers of one service starting at once on this node (warm,
/// for a connection, pool instances): more wait for one to finish, so a
/// large `--warm` or pool, or a burst of connections, does not ask Docker
/// for thousands of starts at once.
pub const MAX_STARTING: u32 = 16;

/// A started service container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The runtime's id.
    pub id: String,
    /// The service it serves.
    pub service: ServiceName,
    pub name: String,
    /// Who holds its cores at the supervisor.
    pub holder: TaskId,
    /// Where it accepts connections.
    pub addr: SocketAddr,
}

/// What the executor is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a per-connection container and keep it warm; report with
    /// `warm_started`.
    StartWarm(Arc<ServiceSpec>),
    /// Start a pool instance holding these cores; report with
    /// `instance_started`.
    StartInstance(Arc<ServiceSpec>, CoreCount),
    /// Follow a pool instance; report its end with `instance_exited`.
    Watch(ServiceName, Started),
    /// Stop the container, free its cores and remove it.
    Remove(Started),
}

/// The container a connection gets.
#[derive(Debug)]
pub enum Grant<W> {
    /// A warm container, to be released by id when the connection ends.
    Warm(Started, W),
    /// None is warm: start one for this connection (it is counted from
    /// now) and report with `fresh_started`.
    Fresh(Arc<ServiceSpec>),
    /// A pool instance, to be released by id when the connection ends.
    Instance(Started),
}

/// Why a connection gets no container here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The service is not (or no longer) served here.
    Gone,
    /// `--max-per-node` containers of the service are here.
    AtCapacity { containers: u32 },
    /// The pool has no ready instance here.
    NoInstance,
    /// `MAX_STARTING` containers of the service are starting here.
    Starting { starting: u32 },
}

/// How a start that did not give a container failed. Either way the
/// background starts back off: a node that is full stays full for a while
/// too, and trying again at every tick and every connection's end only
/// loads the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFailure {
    /// No free cores now.
    NoRoom,
    /// The container did not start or become ready.
    Broken,
}

#[derive(Debug)]
struct Instance {
    started: Started,
    conns: u32,
    /// Takes no new connections; removed once its last one ends.
    retiring: bool,
}

#[derive(Debug)]
struct Svc<W> {
    spec: Arc<ServiceSpec>,
    removed: bool,
    warm: VecDeque<(Started, W)>,
    /// Warm containers being started.
    warming: u32,
    /// Per-connection containers being started for a connection.
    fresh: u32,
    /// Per-connection containers serving a connection, by id.
    busy: BTreeMap<String, Started>,
    instances: Vec<Instance>,
    /// Pool instances being started.
    starting: u32,
    queued: u32,
    /// No background start before this (connections still try).
    retry_at: Option<Instant>,
    backoff: Duration,
    /// This node's pull of the image failed: no warm containers (it gets
    /// no connections either, see `choice`).
    no_image: bool,
}

impl<W> Svc<W> {
    fn new(spec: Arc<ServiceSpec>) -> Self {
        Self {
            spec,
            removed: false,
            warm: VecDeque::new(),
            warming: 0,
            fresh: 0,
            busy: BTreeMap::new(),
            instances: Vec::new(),
            starting: 0,
            queued: 0,
            retry_at: None,
            backoff: Duration::ZERO,
            no_image: false,
        }
    }

    /// Every container of the service here, whatever its state (a
    /// redefinition may leave containers of the other mode behind).
    fn containers(&self) -> u32 {
        self.warm.len() as u32
            + self.warming
            + self.fresh
            + self.busy.len() as u32
            + self.instances.len() as u32
            + self.starting
    }

    /// Containers being started.
    fn starting_now(&self) -> u32 {
        self.warming + self.fresh + self.starting
    }

    /// How many more may start now (`MAX_STARTING` at once).
    fn start_room(&self) -> u32 {
        MAX_STARTING.saturating_sub(self.starting_now())
    }

    fn conns(&self) -> u32 {
        self.busy.len() as u32 + self.instances.iter().map(|i| i.conns).sum::<u32>()
    }

    fn load(&self) -> ServiceLoad {
        let ready = match self.spec.mode {
            Mode::PerConnection => self.warm.len() as u32,
            Mode::Pool => self.instances.iter().filter(|i| !i.retiring).count() as u32,
        };
        ServiceLoad {
            containers: self.containers(),
            ready: if self.removed { 0 } else { ready },
            conns: self.conns(),
            queued: self.queued,
        }
    }

    fn backing_off(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|t| now < t)
    }

    /// A background start ended: success ends a back-off, a failure (no
    /// room, or a broken start) doubles it.
    fn note_start(&mut self, failure: Option<StartFailure>, now: Instant) {
        match failure {
            None => {
                self.backoff = Duration::ZERO;
                self.retry_at = None;
            }
            Some(StartFailure::Broken | StartFailure::NoRoom) => {
                self.backoff = (self.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                self.retry_at = now.checked_add(self.backoff);
            }
        }
    }

    /// Warm containers up to `--warm`, within `--max-per-node` and
    /// `MAX_STARTING`.
    fn refill(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.removed
            || self.no_image
            || self.spec.mode != Mode::PerConnection
            || self.backing_off(now)
        {
            return;
        }
        let have = self.warm.len() as u32 + self.warming;
        let room = self.spec.max_per_node.saturating_sub(self.containers());
        let n = self
            .spec
            .warm
            .saturating_sub(have)
            .min(room)
            .min(self.start_room());
        self.warming += n;
        out.extend((0..n).map(|_| Action::StartWarm(self.spec.clone())));
    }

    /// Pool instances to `want` (cores of each): starts the missing ones
    /// (`MAX_STARTING` at once), retires the least busy extra ones.
    fn scale(&mut self, want: &[u32], now: Instant, out: &mut Vec<Action>) {
        let active = self.instances.iter().filter(|i| !i.retiring).count() + self.starting as usize;
        if !self.backing_off(now) {
            let room = self.start_room() as usize;
            for cores in want.iter().skip(active).take(room) {
                if let Ok(cores) = CoreCount::new(*cores) {
                    self.starting += 1;
                    out.push(Action::StartInstance(self.spec.clone(), cores));
                }
            }
        }
        let extra = active.saturating_sub(want.len());
        let mut ready: Vec<&mut Instance> =
            self.instances.iter_mut().filter(|i| !i.retiring).collect();
        ready.sort_by_key(|i| i.conns);
        for i in ready.into_iter().take(extra) {
            i.retiring = true;
        }
        self.sweep(out);
    }

    /// Removes the retiring instances without connections.
    fn sweep(&mut self, out: &mut Vec<Action>) {
        let (gone, kept): (Vec<Instance>, Vec<Instance>) = std::mem::take(&mut self.instances)
            .into_iter()
            .partition(|i| i.retiring && i.conns == 0);
        self.instances = kept;
        out.extend(gone.into_iter().map(|i| Action::Remove(i.started)));
    }

    /// Lets go of what the current definition no longer wants: warm
    /// containers now, instances once idle.
    fn retire_all(&mut self, out: &mut Vec<Action>) {
        out.extend(self.warm.drain(..).map(|(s, _)| Action::Remove(s)));
        for i in &mut self.instances {
            i.retiring = true;
        }
        self.sweep(out);
    }

    /// A removed service with nothing left can be forgotten.
    fn forgettable(&self) -> bool {
        self.removed && self.containers() == 0 && self.queued == 0
    }
}

/// Every service's state on this node; see the module documentation.
#[derive(Debug)]
pub struct Plan<W> {
    svcs: BTreeMap<ServiceName, Svc<W>>,
}

impl<W> Default for Plan<W> {
    fn default() -> Self {
        Self {
            svcs: BTreeMap::new(),
        }
    }
}

impl<W> Plan<W> {
    /// Serves (or updates) a service. A changed definition retires the
    /// containers of the old one (busy ones when their connections end).
    pub fn define(&mut self, spec: Arc<ServiceSpec>) -> Vec<Action> {
        let mut out = Vec::new();
        match self.svcs.get_mut(&spec.name) {
            Some(svc) => {
                if *svc.spec != *spec {
                    svc.retire_all(&mut out);
                    svc.backoff = Duration::ZERO;
                    svc.retry_at = None;
                }
                svc.spec = spec;
                svc.removed = false;
            }
            None => {
                self.svcs.insert(spec.name.clone(), Svc::new(spec));
            }
        }
        out
    }

    /// Stops serving a service: warm containers and idle instances go now,
    /// busy ones when their connections end.
    pub fn remove(&mut self, name: &ServiceName) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(svc) = self.svcs.get_mut(name) {
            svc.removed = true;
        }
        self.settle(name, &mut out);
        out
    }

    /// The current definition of a served service.
    pub fn spec(&self, name: &ServiceName) -> Option<&Arc<ServiceSpec>> {
        self.svcs.get(name).filter(|s| !s.removed).map(|s| &s.spec)
    }

    /// Per service (removed ones included until forgotten), this node's
    /// figures.
    pub fn loads(&self) -> impl Iterator<Item = (&ServiceName, ServiceLoad)> {
        self.svcs.iter().map(|(n, s)| (n, s.load()))
    }

    /// Every container here that holds cores under a known holder id, with
    /// its service and whether it is warm or serving (for the dashboard's
    /// picture of the cores; those still starting are not listed).
    pub fn holders(&self) -> Vec<mesh_protocol::cores::ServiceHolder> {
        use mesh_protocol::cores::{ServiceHolder, ServiceUse};
        let mut out = Vec::new();
        for (name, svc) in &self.svcs {
            let mut add = |started: &Started, usage| {
                out.push(ServiceHolder {
                    holder: started.holder.clone(),
                    service: name.clone(),
                    usage,
                })
            };
            svc.warm.iter().for_each(|(s, _)| add(s, ServiceUse::Warm));
            svc.busy.values().for_each(|s| add(s, ServiceUse::Serving));
            svc.instances
                .iter()
                .for_each(|i| add(&i.started, ServiceUse::Serving));
        }
        out
    }

    /// A container for one connection. A warm one for which `is_open` is
    /// false (it closed its connection) is removed and the next tried.
    pub fn acquire(
        &mut self,
        name: &ServiceName,
        is_open: impl Fn(&W) -> bool,
        now: Instant,
    ) -> (Result<Grant<W>, Refusal>, Vec<Action>) {
        let mut out = Vec::new();
        let Some(svc) = self.svcs.get_mut(name).filter(|s| !s.removed) else {
            return (Err(Refusal::Gone), out);
        };
        if svc.spec.mode == Mode::Pool {
            let grant = svc
                .instances
                .iter_mut()
                .filter(|i| !i.retiring)
                .min_by_key(|i| i.conns)
                .map(|i| {
                    i.conns += 1;
                    Grant::Instance(i.started.clone())
                })
                .ok_or(Refusal::NoInstance);
            return (grant, out);
        }
        while let Some((started, w)) = svc.warm.pop_front() {
            if is_open(&w) {
                svc.busy.insert(started.id.clone(), started.clone());
                svc.refill(now, &mut out);
                return (Ok(Grant::Warm(started, w)), out);
            }
            out.push(Action::Remove(started));
        }
        let containers = svc.containers();
        if containers >= svc.spec.max_per_node {
            return (Err(Refusal::AtCapacity { containers }), out);
        }
        if svc.start_room() == 0 {
            let starting = svc.starting_now();
            return (Err(Refusal::Starting { starting }), out);
        }
        svc.fresh += 1;
        (Ok(Grant::Fresh(svc.spec.clone())), out)
    }

    /// A container started for a connection (`Grant::Fresh`) is ready
    /// (`Some`, now busy) or did not start. A connection's own start does
    /// not back off: the client asked.
    pub fn fresh_started(&mut self, name: &ServiceName, started: Option<Started>) -> Vec<Action> {
        let mut out = Vec::new();
        match self.svcs.get_mut(name) {
            Some(svc) => {
                svc.fresh = svc.fresh.saturating_sub(1);
                if let Some(s) = started {
                    svc.busy.insert(s.id.clone(), s);
                }
            }
            None => out.extend(started.map(Action::Remove)),
        }
        self.settle(name, &mut out);
        out
    }

    /// A warm container asked by `StartWarm(spec)` is ready or failed.
    pub fn warm_started(
        &mut self,
        spec: &ServiceSpec,
        result: Result<(Started, W), StartFailure>,
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(svc) = self.svcs.get_mut(&spec.name) else {
            out.extend(result.ok().map(|(s, _)| Action::Remove(s)));
            return out;
        };
        svc.warming = svc.warming.saturating_sub(1);
        svc.note_start(result.as_ref().err().copied(), now);
        if let Ok((started, w)) = result {
            if svc.removed || *svc.spec != *spec {
                out.push(Action::Remove(started));
            } else {
                svc.warm.push_back((started, w));
            }
        }
        self.settle(&spec.name, &mut out);
        out
    }

    /// A pool instance asked by `StartInstance(spec, _)` is ready or
    /// failed.
    pub fn instance_started(
        &mut self,
        spec: &ServiceSpec,
        result: Result<Started, StartFailure>,
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(svc) = self.svcs.get_mut(&spec.name) else {
            out.extend(result.ok().map(Action::Remove));
            return out;
        };
        svc.starting = svc.starting.saturating_sub(1);
        svc.note_start(result.as_ref().err().copied(), now);
        if let Ok(started) = result {
            if svc.removed || *svc.spec != *spec {
                out.push(Action::Remove(started));
            } else {
                out.push(Action::Watch(spec.name.clone(), started.clone()));
                svc.instances.push(Instance {
                    started,
                    conns: 0,
                    retiring: false,
                });
            }
        }
        self.settle(&spec.name, &mut out);
        out
    }

    /// A pool instance ended by itself: it is removed (the next tick starts
    /// a replacement). Returns nothing for one already let go.
    pub fn instance_exited(&mut self, name: &ServiceName, id: &str) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(svc) = self.svcs.get_mut(name)
            && let Some(at) = svc.instances.iter().position(|i| i.started.id == id)
        {
            out.push(Action::Remove(svc.instances.remove(at).started));
        }
        self.settle(name, &mut out);
        out
    }

    /// A connection to container `id` ended: a per-connection container is
    /// removed (and the warm pool refilled), a pool instance has one
    /// connection less.
    pub fn release(&mut self, name: &ServiceName, id: &str, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(svc) = self.svcs.get_mut(name) {
            if let Some(started) = svc.busy.remove(id) {
                out.push(Action::Remove(started));
                svc.refill(now, &mut out);
            } else if let Some(i) = svc.instances.iter_mut().find(|i| i.started.id == id) {
                i.conns = i.conns.saturating_sub(1);
                svc.sweep(&mut out);
            }
        }
        self.settle(name, &mut out);
        out
    }

    /// Counts a connection waiting here for a container; false when the
    /// service's queue is full (or it is not served).
    pub fn enqueue(&mut self, name: &ServiceName) -> bool {
        match self.svcs.get_mut(name).filter(|s| !s.removed) {
            Some(svc) if svc.queued < svc.spec.queue => {
                svc.queued += 1;
                true
            }
            _ => false,
        }
    }

    /// A waiting connection stopped waiting.
    pub fn dequeue(&mut self, name: &ServiceName) {
        if let Some(svc) = self.svcs.get_mut(name) {
            svc.queued = svc.queued.saturating_sub(1);
        }
        self.settle(name, &mut Vec::new());
    }

    /// The periodic round: pools to the node's share (`pool_wants`, cores
    /// of each instance), warm pools to `--warm`, removed services let go.
    /// The services whose image this node failed to pull: they keep no
    /// warm containers until a pull succeeds.
    pub fn set_no_image(&mut self, failed: &BTreeSet<ServiceName>) {
        for (name, svc) in &mut self.svcs {
            svc.no_image = failed.contains(name);
        }
    }

    pub fn tick(
        &mut self,
        pool_wants: &BTreeMap<ServiceName, Vec<u32>>,
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let names: Vec<ServiceName> = self.svcs.keys().cloned().collect();
        for name in names {
            if let Some(svc) = self.svcs.get_mut(&name)
                && !svc.removed
            {
                match svc.spec.mode {
                    Mode::PerConnection => svc.refill(now, &mut out),
                    Mode::Pool => {
                        let want = pool_wants.get(&name).map_or(&[][..], Vec::as_slice);
                        svc.scale(want, now, &mut out);
                    }
                }
            }
            self.settle(&name, &mut out);
        }
        out
    }

    /// A removed service gives up what it holds as it becomes idle, and is
    /// forgotten once nothing of it is left.
    fn settle(&mut self, name: &ServiceName, out: &mut Vec<Action>) {
        if let Some(svc) = self.svcs.get_mut(name)
            && svc.removed
        {
            svc.retire_all(out);
            if svc.forgettable() {
                self.svcs.remove(name);
            }
        }
    }
}

#[cfg(test)]
mod tests;
