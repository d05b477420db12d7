//! Placement's offers between in-process agents on the in-memory runtime:
//! an offer whose answer is lost leaves the task in doubt, and it is never
//! offered to another node (or queued to run here) until the node offered
//! says whether it took it.

#![allow(clippy::unwrap_used)]

mod common;

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use mesh_agent::disk::{Disk, DiskFaults};
use mesh_agent::supervisor::SupervisorError;
use mesh_protocol::TaskState;

/// A disk whose next write, once armed, takes `delay` (a stuck fsync): the
/// agent's supervisor, which writes a task it takes before it answers,
/// answers late.
#[derive(Debug)]
struct SlowOnce {
    armed: AtomicBool,
    delay: Duration,
}

impl DiskFaults for SlowOnce {
    fn before_write(&self, _: &Path) -> io::Result<()> {
        if self.armed.swap(false, Ordering::SeqCst) {
            std::thread::sleep(self.delay);
        }
        Ok(())
    }

    fn after_read(&self, _: &Path, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

/// Regression (seed 7's chaos run: n2 offered a task to n1, which took it;
/// the answer and the check that followed were lost, and n2 offered it to
/// n3 too): the node offered answers later than the offer's and the
/// check's timeouts. The placing node must not run the task itself once
/// its core is free, nor offer it elsewhere; it learns that the node took
/// it and forgets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_whose_offer_went_unanswered_runs_once() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("mesh_agent=debug")
        .try_init();
    // Longer than the offer's timeout and the check's together (5 s each).
    let delay = Duration::from_secs(11);
    let slow: Vec<Arc<SlowOnce>> = (0..2)
        .map(|_| {
            Arc::new(SlowOnce {
                armed: AtomicBool::new(false),
                delay,
            })
        })
        .collect();
    let setup = Setup::memory("o").topology("numa:1 core:1 pu:1").phi(12.0);
    let first = setup
        .clone()
        .disk(Disk::with_faults(slow[0].clone()))
        .start(&[])
        .await;
    let second = setup
        .clone()
        .disk(Disk::with_faults(slow[1].clone()))
        .start(&[first.gossip()])
        .await;
    let nodes = [first, second];
    wait_formed(&nodes.iter().collect::<Vec<_>>()).await;

    // One node's only core is taken: the other is the only one with room.
    let busy = nodes[0].api.submit(&sleep_task(1, "600")).await;
    let busy = nodes[0]
        .api
        .wait_state(&busy.id, TaskState::Running, 10)
        .await;
    let placer = nodes.iter().position(|n| n.id == busy.node).unwrap();
    let other = 1 - placer;
    // Placement ranks from the placer's view: wait until it shows the
    // placer's own core taken.
    wait_until(
        "the placer's view shows its core taken",
        Duration::from_secs(10),
        || async {
            let peers = nodes[placer].api.peers().await;
            let full = peers.iter().any(|p| {
                p.is_self
                    && p.info
                        .as_ref()
                        .is_some_and(|i| i.load.free_per_numa.iter().all(|f| *f == 0))
            });
            if full { Ok(()) } else { Err(peers) }
        },
    )
    .await;

    slow[other].armed.store(true, Ordering::SeqCst);
    let task = nodes[placer].api.submit(&sleep_task(1, "600")).await;
    wait_until(
        "the other node runs the task",
        Duration::from_secs(30),
        || async {
            let local = nodes[other].api.local_tasks().await;
            let running = local
                .iter()
                .any(|t| t.id == task.id && t.state == TaskState::Running);
            if running { Ok(()) } else { Err(local) }
        },
    )
    .await;

    // The placer's core frees: it must not start the task as well.
    nodes[placer].api.kill(&busy.id).await;
    hold_for(
        "the placer does not run the task too",
        Duration::from_secs(6),
        || async {
            let started = nodes[placer].memory().started();
            if started == 1 { Ok(()) } else { Err(started) }
        },
    )
    .await;
    let local = nodes[placer].api.local_tasks().await;
    assert!(
        !local.iter().any(|t| t.id == task.id),
        "the placer forgot the task once the other node said it took it: {local:?}"
    );
    // The runner pushed to the keeper the offer named, the placer.
    wait_until(
        "the placer keeps a copy naming the runner",
        Duration::from_secs(10),
        || async {
            let copies = nodes[placer].running().supervisor.copies().await.unwrap();
            let kept = copies
                .iter()
                .any(|c| c.id == task.id && c.node == nodes[other].id);
            if kept { Ok(()) } else { Err(copies) }
        },
    )
    .await;
}

/// Regression (chaos seed 1: an offer's answer was lost when a healed
/// partition broke its connection; the question "do you hold it?" reached
/// the node 2 ms before the offer did, heard "not here", and the task was
/// offered elsewhere and ran on two nodes at once): a node that said it
/// does not hold a task refuses that task's offer when it comes after.
#[tokio::test]
async fn an_offer_that_arrives_after_its_task_was_disclaimed_is_refused() {
    use mesh_protocol::{TaskId, TaskRecord, TaskSpec};
    let node = Setup::memory("d")
        .topology("numa:1 core:4 pu:1")
        .start(&[])
        .await;
    let supervisor = node.running().supervisor.clone();
    let record = |n: u32| {
        let spec = TaskSpec::builder(IMAGE).build().unwrap();
        let id = TaskId::new(format!("t{n}")).unwrap();
        TaskRecord::new(id, spec, node.id.clone(), 0, 0)
    };
    // Once Docker (here, the in-memory runtime) is checked, offers are taken.
    wait_until("an offer is taken", Duration::from_secs(10), || async {
        supervisor.offer(record(0)).await.map_err(|e| e.to_string())
    })
    .await;

    // Asked first, then offered: refused.
    let asked = supervisor.disclaim(record(1).id).await;
    assert!(
        matches!(asked, Err(SupervisorError::NotFound(_))),
        "{asked:?}"
    );
    let late = supervisor.offer(record(1)).await;
    assert!(
        matches!(late, Err(SupervisorError::Conflict(_))),
        "{late:?}"
    );
    // Offered first, then asked: held, and the answer says so.
    supervisor.offer(record(2)).await.unwrap();
    assert_eq!(
        supervisor.disclaim(record(2).id).await.unwrap().id,
        record(2).id
    );
    // Another task is not affected.
    supervisor.offer(record(3)).await.unwrap();
    wait_until(
        "t0, t2 and t3 start, t1 never",
        Duration::from_secs(10),
        || async {
            let started = node.memory().started();
            if started == 3 { Ok(()) } else { Err(started) }
        },
    )
    .await;
    let local = node.api.local_tasks().await;
    assert!(!local.iter().any(|t| t.id.to_string() == "t1"), "{local:?}");
}
