use std::collections::BTreeSet;

use mesh_protocol::service::ServiceRequest;
use proptest::prelude::*;

use super::*;

fn spec(mode: &str, image: &str, warm: u32, max: u32) -> Arc<ServiceSpec> {
    Arc::new(
        ServiceSpec::try_from(ServiceRequest {
            name: "web".into(),
            image: image.into(),
            port: 80,
            listen: 8080,
            mode: Some(mode.into()),
            warm: (mode != "pool").then_some(warm),
            max_per_node: (mode != "pool").then_some(max),
            queue: Some(2),
            instances: (mode == "pool").then(|| "2".into()),
            ..Default::default()
        })
        .unwrap(),
    )
}

fn name() -> ServiceName {
    ServiceName::new("web").unwrap()
}

fn started(id: &str) -> Started {
    Started {
        id: id.into(),
        service: name(),
        name: format!("c-{id}"),
        holder: TaskId::new(format!("s-{id}")).unwrap(),
        addr: SocketAddr::from(([127, 0, 0, 1], 80)),
    }
}

fn load<W>(plan: &Plan<W>) -> ServiceLoad {
    plan.loads().next().map(|(_, l)| l).unwrap_or_default()
}

fn open(_: &()) -> bool {
    true
}

#[test]
fn a_warm_pool_refills_after_each_connection_within_the_node_limit() {
    let now = Instant::now();
    let mut plan = Plan::<()>::default();
    let web = spec("per-connection", "img", 2, 3);
    assert!(plan.define(web.clone()).is_empty());
    let starts = plan.tick(&BTreeMap::new(), now);
    assert_eq!(starts, vec![Action::StartWarm(web.clone()); 2]);
    // Asking again while they start asks nothing more.
    assert!(plan.tick(&BTreeMap::new(), now).is_empty());
    for id in ["a", "b"] {
        assert!(
            plan.warm_started(&web, Ok((started(id), ())), now)
                .is_empty()
        );
    }
    assert_eq!(load(&plan).ready, 2);

    // A connection takes a warm one; one more is started (3 = the limit).
    let (grant, actions) = plan.acquire(&name(), open, now);
    assert!(matches!(grant, Ok(Grant::Warm(s, ())) if s.id == "a"));
    assert_eq!(actions, vec![Action::StartWarm(web.clone())]);
    // The next takes the other warm one; the limit stops a refill.
    let (grant, actions) = plan.acquire(&name(), open, now);
    assert!(matches!(grant, Ok(Grant::Warm(s, ())) if s.id == "b"));
    assert!(actions.is_empty());
    assert_eq!(
        plan.acquire(&name(), open, now).0.unwrap_err(),
        Refusal::AtCapacity { containers: 3 }
    );
    // The end of a connection removes its container and refills.
    assert_eq!(
        plan.release(&name(), "a", now),
        vec![Action::Remove(started("a")), Action::StartWarm(web)]
    );
    assert_eq!(load(&plan).conns, 1);
    assert_eq!(load(&plan).containers, 3);
}

/// A node whose pull of the image failed keeps no warm container, and
/// starts them again once a pull succeeded.
#[test]
fn no_warm_containers_while_the_image_could_not_be_pulled() {
    let now = Instant::now();
    let mut plan = Plan::<()>::default();
    let web = spec("per-connection", "img", 2, 3);
    plan.define(web.clone());
    plan.set_no_image(&BTreeSet::from([name()]));
    assert!(plan.tick(&BTreeMap::new(), now).is_empty());
    plan.set_no_image(&BTreeSet::new());
    assert_eq!(
        plan.tick(&BTreeMap::new(), now),
        vec![Action::StartWarm(web); 2]
    );
}

#[test]
fn a_closed_warm_container_is_removed_and_a_fresh_one_started_for_the_connection() {
    let now = Instant::now();
    let mut plan = Plan::<bool>::default();
    let web = spec("per-connection", "img", 1, 4);
    plan.define(web.clone());
    plan.tick(&BTreeMap::new(), now);
    plan.warm_started(&web, Ok((started("a"), false)), now);
    let (grant, actions) = plan.acquire(&name(), |open| *open, now);
    assert!(matches!(grant, Ok(Grant::Fresh(s)) if s == web));
    assert_eq!(actions, vec![Action::Remove(started("a"))]);
    assert!(plan.fresh_started(&name(), Some(started("b"))).is_empty());
    assert_eq!(
        plan.release(&name(), "b", now)[0],
        Action::Remove(started("b"))
    );
}

#[test]
fn broken_starts_back_off_doubling_and_a_success_ends_it() {
    let t0 = Instant::now();
    let mut plan = Plan::<()>::default();
    let web = spec("per-connection", "img", 1, 4);
    plan.define(web.clone());
    assert_eq!(plan.tick(&BTreeMap::new(), t0).len(), 1);
    plan.warm_started(&web, Err(StartFailure::Broken), t0);
    assert!(
        plan.tick(&BTreeMap::new(), t0 + Duration::from_millis(999))
            .is_empty()
    );
    assert_eq!(plan.tick(&BTreeMap::new(), t0 + BACKOFF_MIN).len(), 1);
    let t1 = t0 + BACKOFF_MIN;
    plan.warm_started(&web, Err(StartFailure::Broken), t1);
    assert!(
        plan.tick(&BTreeMap::new(), t1 + Duration::from_millis(1999))
            .is_empty()
    );
    let t2 = t1 + Duration::from_secs(2);
    assert_eq!(plan.tick(&BTreeMap::new(), t2).len(), 1);
    // No room backs off too: a full node is not asked again at every tick.
    plan.warm_started(&web, Err(StartFailure::NoRoom), t2);
    assert!(
        plan.tick(&BTreeMap::new(), t2 + Duration::from_millis(3999))
            .is_empty()
    );
    let t3 = t2 + Duration::from_secs(4);
    assert_eq!(plan.tick(&BTreeMap::new(), t3).len(), 1);
    plan.warm_started(&web, Ok((started("a"), ())), t3);
    assert_eq!(load(&plan).ready, 1);
    // Taking it refills; that start fails, and the next connection's own
    // start does not wait out the back-off: the client asked.
    let (_, refill) = plan.acquire(&name(), open, t3);
    assert_eq!(refill, vec![Action::StartWarm(web.clone())]);
    plan.warm_started(&web, Err(StartFailure::Broken), t3);
    assert!(matches!(
        plan.acquire(&name(), open, t3).0,
        Ok(Grant::Fresh(_))
    ));
}

/// A definition at the limits (256 warm, 4096 per node) or a large pool
/// asks for `MAX_STARTING` starts at a time, not all at once; connections'
/// own starts count too.
#[test]
fn starts_in_flight_are_bounded() {
    let now = Instant::now();
    let mut plan = Plan::<()>::default();
    let web = spec("per-connection", "img", 256, 4096);
    plan.define(web.clone());
    let starts = plan.tick(&BTreeMap::new(), now);
    assert_eq!(starts.len(), MAX_STARTING as usize);
    assert!(plan.tick(&BTreeMap::new(), now).is_empty());
    assert_eq!(
        plan.acquire(&name(), open, now).0.unwrap_err(),
        Refusal::Starting {
            starting: MAX_STARTING
        }
    );
    // One ends: one more may start.
    plan.warm_started(&web, Ok((started("a"), ())), now);
    assert_eq!(plan.tick(&BTreeMap::new(), now).len(), 1);

    let mut plan = Plan::<()>::default();
    let cold = spec("per-connection", "img", 0, 4096);
    plan.define(cold);
    for _ in 0..MAX_STARTING {
        assert!(matches!(
            plan.acquire(&name(), open, now).0,
            Ok(Grant::Fresh(_))
        ));
    }
    assert!(matches!(
        plan.acquire(&name(), open, now).0,
        Err(Refusal::Starting { .. })
    ));
    plan.fresh_started(&name(), None);
    assert!(matches!(
        plan.acquire(&name(), open, now).0,
        Ok(Grant::Fresh(_))
    ));

    let mut plan = Plan::<()>::default();
    plan.define(spec("pool", "img", 0, 4));
    let want = BTreeMap::from([(name(), vec![1; 4096])]);
    assert_eq!(plan.tick(&want, now).len(), MAX_STARTING as usize);
    assert!(plan.tick(&want, now).is_empty());
}

#[test]
fn a_pool_grows_to_its_share_spreads_connections_and_retires_the_least_busy() {
    let now = Instant::now();
    let mut plan = Plan::<()>::default();
    let pool = spec("pool", "img", 0, 4);
    plan.define(pool.clone());
    let want = BTreeMap::from([(name(), vec![2, 2])]);
    let cores = CoreCount::new(2).unwrap();
    assert_eq!(
        plan.tick(&want, now),
        vec![Action::StartInstance(pool.clone(), cores); 2]
    );
    assert_eq!(
        plan.acquire(&name(), open, now).0.unwrap_err(),
        Refusal::NoInstance
    );
    for id in ["a", "b"] {
        let actions = plan.instance_started(&pool, Ok(started(id)), now);
        assert_eq!(actions, vec![Action::Watch(name(), started(id))]);
    }
    let ids: Vec<String> = (0..3)
        .map(|_| match plan.acquire(&name(), open, now).0 {
            Ok(Grant::Instance(s)) => s.id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, ["a", "b", "a"]);
    // Shrinking to one retires b (one connection, fewer than a's two): it
    // stays until its connection ends.
    let one = BTreeMap::from([(name(), vec![2])]);
    assert!(plan.tick(&one, now).is_empty());
    assert_eq!(load(&plan).ready, 1);
    assert_eq!(
        plan.release(&name(), "b", now),
        vec![Action::Remove(started("b"))]
    );
    // An instance that exits is removed, and the next tick replaces it.
    assert_eq!(
        plan.instance_exited(&name(), "a"),
        vec![Action::Remove(started("a"))]
    );
    assert_eq!(plan.tick(&one, now).len(), 1);
}

#[test]
fn a_redefinition_retires_the_old_containers_and_a_removal_forgets_the_service_when_idle() {
    let now = Instant::now();
    let mut plan = Plan::<()>::default();
    let v1 = spec("per-connection", "v1", 1, 4);
    plan.define(v1.clone());
    plan.tick(&BTreeMap::new(), now);
    plan.warm_started(&v1, Ok((started("a"), ())), now);
    let (grant, _) = plan.acquire(&name(), open, now);
    assert!(matches!(grant, Ok(Grant::Warm(s, ())) if s.id == "a"));
    plan.warm_started(&v1, Ok((started("b"), ())), now);
    let v2 = spec("per-connection", "v2", 1, 4);
    // The new definition removes the old warm one; the busy one stays.
    assert_eq!(plan.define(v2.clone()), vec![Action::Remove(started("b"))]);
    assert!(plan.enqueue(&name()));
    assert_eq!(plan.remove(&name()), Vec::new());
    assert!(!plan.enqueue(&name()), "a removed service queues nothing");
    assert_eq!(
        plan.release(&name(), "a", now),
        vec![Action::Remove(started("a"))]
    );
    assert_eq!(plan.loads().count(), 1, "one connection still waits");
    plan.dequeue(&name());
    assert_eq!(plan.loads().count(), 0);
    assert!(matches!(
        plan.acquire(&name(), open, now).0,
        Err(Refusal::Gone)
    ));
    // A late result of the forgotten service is removed.
    assert_eq!(
        plan.warm_started(&v2, Ok((started("c"), ())), now),
        vec![Action::Remove(started("c"))]
    );
}

/// One step a property test takes.
#[derive(Debug, Clone)]
enum Op {
    Acquire,
    /// Finish the n-th pending start, well or not.
    Finish(usize, bool),
    Release(usize),
    /// A warm container closes its connection.
    Close(usize),
    /// A pool instance exits.
    Exit(usize),
    Tick(u8),
    Redefine(bool, u8),
    Remove,
    Enqueue,
    Dequeue,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Acquire),
        4 => (any::<usize>(), any::<bool>()).prop_map(|(i, ok)| Op::Finish(i, ok)),
        3 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::Close),
        1 => any::<usize>().prop_map(Op::Exit),
        2 => (0u8..4).prop_map(Op::Tick),
        1 => (any::<bool>(), 0u8..3).prop_map(|(pool, warm)| Op::Redefine(pool, warm)),
        1 => Just(Op::Remove),
        1 => Just(Op::Enqueue),
        1 => Just(Op::Dequeue),
    ]
}

enum Pending {
    Warm(Arc<ServiceSpec>),
    Instance(Arc<ServiceSpec>),
    Fresh,
}

/// Plays the executor: starts what is asked (when told to finish), keeps
/// the containers that exist, and checks each is removed exactly once.
#[derive(Default)]
struct World {
    plan: Plan<String>,
    live: BTreeSet<String>,
    closed: BTreeSet<String>,
    pending: Vec<Pending>,
    leases: Vec<String>,
    queued: u32,
    next: u32,
    now: Option<Instant>,
    /// Definitions and pools far beyond `MAX_STARTING`.
    big: bool,
}

const MAX: u32 = 3;

impl World {
    fn now(&mut self) -> Instant {
        *self.now.get_or_insert_with(Instant::now)
    }

    fn new_container(&mut self) -> Started {
        self.next += 1;
        let id = self.next.to_string();
        self.live.insert(id.clone());
        started(&id)
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::StartWarm(s) => self.pending.push(Pending::Warm(s)),
                Action::StartInstance(s, _) => self.pending.push(Pending::Instance(s)),
                Action::Watch(..) => {}
                Action::Remove(s) => assert!(self.live.remove(&s.id), "{} removed twice", s.id),
            }
        }
    }

    fn step(&mut self, op: Op) {
        let now = self.now();
        let closed = self.closed.clone();
        let actions = match op {
            Op::Acquire => {
                let (grant, actions) = self.plan.acquire(&name(), |id| !closed.contains(id), now);
                match grant {
                    Ok(Grant::Warm(s, _)) => {
                        assert!(!self.leases.contains(&s.id), "{} handed out twice", s.id);
                        assert!(
                            !closed.contains(&s.id),
                            "a closed warm container handed out"
                        );
                        self.leases.push(s.id)
                    }
                    Ok(Grant::Instance(s)) => self.leases.push(s.id),
                    Ok(Grant::Fresh(_)) => {
                        assert!(load(&self.plan).containers <= self.max());
                        self.pending.push(Pending::Fresh)
                    }
                    Err(_) => {}
                }
                actions
            }
            Op::Finish(i, ok) if !self.pending.is_empty() => {
                let which = self.pending.remove(i % self.pending.len());
                let failure = StartFailure::Broken;
                match which {
                    Pending::Warm(spec) => {
                        let result = if ok {
                            let s = self.new_container();
                            Ok((s.clone(), s.id))
                        } else {
                            Err(failure)
                        };
                        self.plan.warm_started(&spec, result, now)
                    }
                    Pending::Instance(spec) => {
                        let result = if ok {
                            Ok(self.new_container())
                        } else {
                            Err(failure)
                        };
                        self.plan.instance_started(&spec, result, now)
                    }
                    Pending::Fresh => {
                        let s = ok.then(|| self.new_container());
                        if let Some(s) = &s {
                            self.leases.push(s.id.clone());
                        }
                        self.plan.fresh_started(&name(), s)
                    }
                }
            }
            Op::Release(i) if !self.leases.is_empty() => {
                let id = self.leases.remove(i % self.leases.len());
                self.plan.release(&name(), &id, now)
            }
            Op::Close(i) if !self.live.is_empty() => {
                let id = self.live.iter().nth(i % self.live.len()).cloned();
                self.closed.extend(id);
                Vec::new()
            }
            Op::Exit(i) if !self.live.is_empty() => {
                let id = self
                    .live
                    .iter()
                    .nth(i % self.live.len())
                    .cloned()
                    .unwrap_or_default();
                let actions = self.plan.instance_exited(&name(), &id);
                if !actions.is_empty() {
                    // Its connections broke; their ends change nothing more.
                    while let Some(at) = self.leases.iter().position(|l| *l == id) {
                        self.leases.remove(at);
                        assert!(self.plan.release(&name(), &id, now).is_empty());
                    }
                }
                actions
            }
            Op::Tick(n) => {
                self.now = Some(now + Duration::from_millis(700));
                let n = if self.big {
                    40 * n as usize
                } else {
                    n as usize
                };
                let want = BTreeMap::from([(name(), vec![1; n])]);
                self.plan.tick(&want, now)
            }
            Op::Redefine(pool, warm) => {
                let mode = if pool { "pool" } else { "per-connection" };
                let warm = if self.big {
                    40 * warm as u32
                } else {
                    warm as u32
                };
                self.plan.define(spec(mode, "img", warm, self.max()))
            }
            Op::Remove => self.plan.remove(&name()),
            Op::Enqueue => {
                if self.plan.enqueue(&name()) {
                    self.queued += 1;
                }
                Vec::new()
            }
            Op::Dequeue if self.queued > 0 => {
                self.queued -= 1;
                self.plan.dequeue(&name());
                Vec::new()
            }
            _ => Vec::new(),
        };
        self.apply(actions);
        self.check();
    }

    fn max(&self) -> u32 {
        if self.big { 200 } else { MAX }
    }

    fn check(&self) {
        let load = load(&self.plan);
        assert!(
            self.pending.len() <= MAX_STARTING as usize,
            "{} starts at once",
            self.pending.len()
        );
        // Every container that exists or is starting is counted, once.
        assert_eq!(
            load.containers as usize,
            self.live.len() + self.pending.len(),
            "{:?}",
            self.plan
        );
        assert_eq!(load.conns as usize, self.leases.len());
        assert_eq!(load.queued, self.queued);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Whatever happens, the figures match what exists, no container is
    /// removed twice, and once the service is removed and everything ends
    /// nothing is left and the service is forgotten.
    #[test]
    fn figures_match_the_containers_and_a_removed_service_leaves_nothing(
        pool in any::<bool>(),
        big in any::<bool>(),
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        let mut w = World { big, ..World::default() };
        let mode = if pool { "pool" } else { "per-connection" };
        let warm = if big { 80 } else { 2 };
        let actions = w.plan.define(spec(mode, "img", warm, w.max()));
        w.apply(actions);
        for op in ops {
            w.step(op);
        }
        w.step(Op::Remove);
        while !w.pending.is_empty() {
            w.step(Op::Finish(0, true));
        }
        while !w.leases.is_empty() {
            w.step(Op::Release(0));
        }
        while w.queued > 0 {
            w.step(Op::Dequeue);
        }
        prop_assert!(w.live.is_empty(), "left: {:?}", w.live);
        prop_assert_eq!(w.plan.loads().count(), 0);
    }
}
