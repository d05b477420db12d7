//! The task model's transitions and validation, case by case.

use super::*;
use crate::cpuset::CpuSet;

fn spec(retries: u32) -> TaskSpec {
    TaskSpec::builder("img")
        .env("A=1")
        .cores(2)
        .retries(retries)
        .build()
        .unwrap()
}

fn rec(retries: u32) -> TaskRecord {
    TaskRecord::new(
        TaskId::new("t1").unwrap(),
        spec(retries),
        NodeId::new("n1").unwrap(),
        0,
        100,
    )
}

fn alloc() -> Allocation {
    Allocation {
        cores: vec![0],
        cpus: CpuSet::from_iter([0]),
        mems: CpuSet::from_iter([0]),
    }
}

#[test]
fn a_migrating_task_goes_back_to_the_queue() {
    let mut r = rec(0);
    r.start(alloc(), 1).unwrap();
    r.started("c".into(), 2).unwrap();
    r.stop_to_migrate().unwrap();
    r.exited(137, 3).unwrap();
    assert_eq!(r.state, TaskState::Queued);
    assert!(!r.migrating);
    r.start(alloc(), 4).unwrap();
    assert_eq!(r.attempt, 2);
}

#[test]
fn a_task_that_finished_as_it_was_stopped_to_migrate_succeeded() {
    // Chaos seed 7: the work ended, and the migration's stop came before
    // the exit was seen; it used to run again elsewhere.
    let mut r = rec(0);
    r.start(alloc(), 1).unwrap();
    r.started("c".into(), 2).unwrap();
    r.stop_to_migrate().unwrap();
    r.exited(0, 3).unwrap();
    assert_eq!(r.state, TaskState::Succeeded);
    assert!(!r.migrating);
}

#[test]
fn a_fenced_attempt_stops_and_waits_held_until_released() {
    let mut r = rec(0);
    r.start(alloc(), 1).unwrap();
    r.started("c".into(), 2).unwrap();
    r.fence("cut off".into(), 3).unwrap();
    assert!(r.migrating && r.is_held());
    r.exited(137, 4).unwrap();
    assert_eq!(r.state, TaskState::Queued);
    assert!(r.is_held(), "the exit keeps the hold");
    assert_eq!(r.message.as_deref(), Some("cut off"));
    r.release(5).unwrap();
    assert!(!r.is_held());
    assert_eq!(r.not_before_ms, 5);
    assert!(r.release(6).is_err(), "released once");
    r.start(alloc(), 7).unwrap();
    assert_eq!(r.attempt, 2);
    // A queued task is held where it is; an ended one or one on offer is not
    // fenced.
    let mut q = rec(0);
    q.fence("cut off".into(), 1).unwrap();
    assert!(q.is_held() && !q.migrating);
    let mut offered = rec(0);
    offered.offer_to(NodeId::new("n2").unwrap()).unwrap();
    assert!(offered.fence("x".into(), 1).is_err());
    let mut done = rec(0);
    done.start(alloc(), 1).unwrap();
    done.started("c".into(), 2).unwrap();
    done.exited(0, 3).unwrap();
    assert!(done.fence("x".into(), 4).is_err());
    // Its keeper's replacement is not held.
    assert!(!q.replacement("re-placed".into(), 9).is_held());
}

#[test]
fn only_a_live_attempt_stops_to_migrate() {
    let mut q = rec(0);
    assert!(q.stop_to_migrate().is_err());
    assert!(!q.migrating);
    q.start(alloc(), 1).unwrap();
    q.stop_to_migrate().unwrap();
    assert!(q.migrating);
}

#[test]
fn a_found_container_is_the_current_attempt() {
    let mut r = rec(0);
    assert!(
        r.container_found("c".into(), 1).is_err(),
        "queued: none yet"
    );
    r.start(alloc(), 2).unwrap();
    r.container_found("c1".into(), 3).unwrap();
    assert_eq!(r.state, TaskState::Running);
    assert_eq!(
        (r.container.as_deref(), r.started_ms),
        (Some("c1"), Some(3))
    );
    r.container_found("c1-id".into(), 4).unwrap();
    assert_eq!(r.container.as_deref(), Some("c1-id"));
    assert_eq!(r.started_ms, Some(3), "still the same attempt");
    r.exited(0, 5).unwrap();
    let before = r.clone();
    assert!(r.container_found("c1".into(), 6).is_err());
    assert_eq!(r, before);
}

#[test]
fn a_retry_takes_a_new_place_in_the_queue() {
    let mut r = rec(1);
    r.start(alloc(), 1).unwrap();
    assert!(r.requeued_at(7).is_err(), "starting: not in the queue");
    r.started("c".into(), 2).unwrap();
    r.exited(1, 3).unwrap();
    r.requeued_at(7).unwrap();
    assert_eq!(r.queue_seq, 7);
}

#[test]
fn dependencies_met_clears_what_it_waits_for() {
    let mut r = rec(0);
    r.spec.after = vec![TaskId::new("t0").unwrap()];
    r.dependencies_met();
    assert!(r.spec.after.is_empty());
}

#[test]
fn happy_path() {
    let mut r = rec(0);
    r.start(alloc(), 1).unwrap();
    r.started("c1".into(), 2).unwrap();
    r.exited(0, 3).unwrap();
    assert_eq!(r.state, TaskState::Succeeded);
    assert_eq!(r.attempt, 1);
    assert!(r.allocation.is_some(), "kept to show where it ran");
    assert!(r.kill(4).is_err());
}

#[test]
fn retries_with_backoff_then_fails() {
    let mut r = rec(1);
    r.start(alloc(), 1).unwrap();
    r.started("c1".into(), 2).unwrap();
    r.exited(3, 10).unwrap();
    assert_eq!(r.state, TaskState::Queued);
    assert_eq!(r.not_before_ms, 10 + BASE_BACKOFF_MS);
    r.start(alloc(), 2000).unwrap();
    assert_eq!(r.attempt, 2);
    r.started("c2".into(), 2001).unwrap();
    r.exited(3, 2002).unwrap();
    assert_eq!(r.state, TaskState::Failed);
    assert_eq!(r.exit_code, Some(3));
}

#[test]
fn unavailable_runtime_keeps_attempts() {
    let mut r = rec(0);
    r.start(alloc(), 1).unwrap();
    r.requeue_unavailable("docker down".into(), 2).unwrap();
    assert_eq!(r.state, TaskState::Queued);
    assert_eq!(r.attempt, 0);
    assert_eq!(r.starts, 1, "container names are never reused");
    r.start(alloc(), 3).unwrap();
    assert_eq!((r.attempt, r.starts), (1, 2));
    r.kill(4).unwrap();
    r.requeue_unavailable("docker down".into(), 5).unwrap();
    assert_eq!(
        r.state,
        TaskState::Killed,
        "a kill is not lost to an outage"
    );
}

#[test]
fn kill_paths() {
    let mut q = rec(3);
    assert_eq!(q.kill(5), Ok(true));
    assert_eq!(q.state, TaskState::Killed);
    let mut r = rec(3);
    r.start(alloc(), 1).unwrap();
    r.started("c".into(), 2).unwrap();
    assert_eq!(r.kill(3), Ok(false));
    r.exited(137, 4).unwrap();
    assert_eq!(r.state, TaskState::Killed);
}

#[test]
fn lost_retries_then_is_lost() {
    let mut r = rec(0);
    r.start(alloc(), 1).unwrap();
    r.started("c".into(), 2).unwrap();
    r.lost("container vanished".into(), 3).unwrap();
    assert_eq!(r.state, TaskState::Lost);
}

#[test]
fn backoff_grows_and_caps() {
    assert_eq!(backoff_ms(1), 1_000);
    assert_eq!(backoff_ms(2), 2_000);
    assert_eq!(backoff_ms(30), MAX_BACKOFF_MS);
}

#[test]
fn record_round_trips_on_the_wire() {
    let mut r = rec(2);
    r.start(alloc(), 1).unwrap();
    let bytes = crate::wire::encode(&r).unwrap();
    let back: TaskRecord = crate::wire::decode(&bytes).unwrap();
    assert_eq!(r, back);
    assert!(crate::wire::decode::<TaskRecord>(&bytes[..bytes.len() / 2]).is_err());
}

/// Records come from peers (offers, keeper copies) with any counts: the
/// transitions saturate instead of overflowing (which panicked in a debug
/// build).
#[test]
fn counts_from_a_peer_saturate() {
    let mut r = rec(MAX_RETRIES);
    r.attempt = u32::MAX;
    r.starts = u32::MAX;
    r.start(alloc(), 1).unwrap();
    assert_eq!((r.attempt, r.starts), (u32::MAX, u32::MAX));
    r.start_failed("bad image".into(), 2).unwrap();
    assert_eq!(r.state, TaskState::Failed, "no attempt left");
    let mut late = rec(1);
    late.start(alloc(), 1).unwrap();
    late.start_failed("bad image".into(), u64::MAX).unwrap();
    assert_eq!(late.state, TaskState::Queued);
    assert_eq!(late.not_before_ms, u64::MAX);
    let mut q = rec(0);
    q.start(alloc(), 1).unwrap();
    q.attempt = 0;
    q.requeue_unavailable("docker down".into(), 2).unwrap();
    assert_eq!(q.attempt, 0);
}
