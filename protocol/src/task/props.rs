//! The task model's invariants over any sequence of transitions: a refused
//! transition changes nothing, containers are never counted down, the
//! attempt goes down only when an outage hands back the attempt it had just
//! begun, and an ended task stays ended except when its keeper's copy
//! follows a newer attempt.

use proptest::prelude::*;

use super::*;
use crate::cpuset::CpuSet;

#[derive(Debug, Clone)]
enum Op {
    Start,
    Started,
    RequeueUnavailable,
    StartFailed,
    Exited(i64),
    Lost,
    Unplaceable,
    DependencyFailed,
    Kill,
    ContainerFound,
    StopToMigrate,
    RequeuedAt(u64),
    DependenciesMet,
    OfferTo,
    OfferWithdrawn,
    PlacedOn,
    TakenHere(u64),
    Adopted(u64),
    ClaimedBy(u32, u32),
    ReplacedBy(u32, u32),
    KeeperSet,
    KeeperDropped,
    Superseded,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Start),
        Just(Op::Started),
        Just(Op::RequeueUnavailable),
        Just(Op::StartFailed),
        (0i64..3).prop_map(Op::Exited),
        Just(Op::Lost),
        Just(Op::Unplaceable),
        Just(Op::DependencyFailed),
        Just(Op::Kill),
        Just(Op::ContainerFound),
        Just(Op::StopToMigrate),
        (0u64..100).prop_map(Op::RequeuedAt),
        Just(Op::DependenciesMet),
        Just(Op::OfferTo),
        Just(Op::OfferWithdrawn),
        Just(Op::PlacedOn),
        (0u64..100).prop_map(Op::TakenHere),
        (0u64..100).prop_map(Op::Adopted),
        (0u32..3, 0u32..8).prop_map(|(e, a)| Op::ClaimedBy(e, a)),
        (0u32..3, 0u32..8).prop_map(|(e, a)| Op::ReplacedBy(e, a)),
        Just(Op::KeeperSet),
        Just(Op::KeeperDropped),
        Just(Op::Superseded),
    ]
}

/// Applies `op` at `now`; false if the transition was refused.
fn apply(r: &mut TaskRecord, op: &Op, now: u64) -> bool {
    let node = NodeId::new("other").unwrap();
    let alloc = Allocation {
        cores: vec![0],
        cpus: CpuSet::from_iter([0]),
        mems: CpuSet::from_iter([0]),
    };
    match op {
        Op::Start => r.start(alloc, now).is_ok(),
        Op::Started => r.started("c".into(), now).is_ok(),
        Op::RequeueUnavailable => r.requeue_unavailable("down".into(), now).is_ok(),
        Op::StartFailed => r.start_failed("bad".into(), now).is_ok(),
        Op::Exited(code) => r.exited(*code, now).is_ok(),
        Op::Lost => r.lost("gone".into(), now).is_ok(),
        Op::Unplaceable => r.unplaceable("small".into(), now).is_ok(),
        Op::DependencyFailed => r.dependency_failed("dep".into(), now).is_ok(),
        Op::Kill => r.kill(now).is_ok(),
        Op::ContainerFound => r.container_found("c".into(), now).is_ok(),
        Op::StopToMigrate => r.stop_to_migrate().is_ok(),
        Op::RequeuedAt(seq) => r.requeued_at(*seq).is_ok(),
        Op::DependenciesMet => {
            r.dependencies_met();
            true
        }
        Op::OfferTo => r.offer_to(node).is_ok(),
        Op::OfferWithdrawn => r.offer_withdrawn().is_ok(),
        Op::PlacedOn => {
            r.placed_on(node);
            true
        }
        Op::TakenHere(seq) => r.taken_here(node, *seq, now).is_ok(),
        Op::Adopted(seq) => r.adopted(node, *seq).is_ok(),
        Op::ClaimedBy(epoch, attempt) => {
            r.claimed_by(node, *epoch, *attempt);
            true
        }
        Op::ReplacedBy(epoch, attempt) => r.replaced_by(node, *epoch, *attempt).is_ok(),
        Op::KeeperSet => {
            r.keeper_set(node);
            true
        }
        Op::KeeperDropped => {
            r.keeper_dropped();
            true
        }
        Op::Superseded => r.superseded("re-placed".into(), now).is_ok(),
    }
}

proptest! {
    #[test]
    fn transitions_keep_the_invariants(
        retries in 0u32..3,
        ops in proptest::collection::vec(op(), 0..60),
    ) {
        let spec = TaskSpec::builder("img").retries(retries).build().unwrap();
        let mut r = TaskRecord::new(
            TaskId::new("t1").unwrap(),
            spec,
            NodeId::new("n1").unwrap(),
            0,
            0,
        );
        for (i, op) in ops.iter().enumerate() {
            let now = 10 * (i as u64 + 1);
            let before = r.clone();
            let applied = apply(&mut r, op, now);
            if !applied {
                prop_assert_eq!(&r, &before, "refused {:?} changed the record", op);
                continue;
            }
            prop_assert!(r.starts >= before.starts, "{:?} counted containers down", op);
            prop_assert!(r.epoch >= before.epoch, "{:?} took the epoch down", op);
            if r.epoch == before.epoch && r.attempt < before.attempt {
                prop_assert!(
                    matches!(op, Op::RequeueUnavailable) && r.attempt + 1 == before.attempt,
                    "{:?} took the attempt from {} to {}", op, before.attempt, r.attempt
                );
            }
            if before.state.is_terminal() && !matches!(op, Op::ReplacedBy(..)) {
                prop_assert_eq!(r.state, before.state, "{:?} changed an ended task", op);
            }
            prop_assert!(r.updated_ms >= before.updated_ms, "{:?} went back in time", op);
        }
    }
}
