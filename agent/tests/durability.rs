//! What the agent does when its disk fails it, against the real Docker
//! engine: a store it cannot read stops its start (its tasks' containers
//! keep running), a record it cannot decode is set aside and its container
//! left alone, and a write that fails is an error to whoever asked. And,
//! between in-memory agents, a keeper whose disk fails: the submitter and
//! `GET /v1/tasks/{id}/copy` say the copy was not kept.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use mesh_agent::disk::{Disk, SimulatedFaults};
use mesh_agent::runtime::ContainerRuntime;
use mesh_protocol::TaskState;
use mesh_protocol::api::{CopyStatus, Health};

/// One agent on Docker; its supervisor checks containers every 300 ms.
async fn agent(tag: &str) -> TestAgent {
    Setup::docker(tag)
        .topology("numa:1 core:4 pu:1")
        .ping_interval(Duration::from_millis(300))
        .start(&[])
        .await
}

async fn running(container: &str) -> bool {
    docker()
        .inspect(container)
        .await
        .is_ok_and(|info| info.running)
}

/// Until now a store that could not be read as a whole was taken for an
/// empty one: the agent started with no tasks and removed their
/// containers as strays. It must refuse to start, naming what it could
/// not read and what to do, and leave the containers be.
#[tokio::test]
async fn an_unreadable_store_stops_the_start_and_the_tasks_keep_running() {
    let mut a = agent("unreadable").await;
    let t = a.api.submit(&sleep_task(1, "60")).await.id;
    let r = a.api.wait_state(&t, TaskState::Running, 20).await;
    let container = r.container.clone().unwrap();
    a.stop().await;

    // The set-aside records are part of the store: a path there that is a
    // file, not a directory, cannot be read (by root too).
    let aside = a.data_dir().join(mesh_agent::store::SET_ASIDE);
    std::fs::write(&aside, b"not a directory").unwrap();
    let e = a.try_restart(&[]).await.unwrap_err();
    assert!(
        e.contains(&aside.display().to_string()) && e.contains("does not start"),
        "the error names the path and says what to do: {e}"
    );
    assert!(running(&container).await, "the task's container runs on");

    std::fs::remove_file(&aside).unwrap();
    a.restart(&[]).await;
    let again = a.api.wait_state(&t, TaskState::Running, 20).await;
    assert_eq!(again.container, r.container, "adopted, not run again");
    a.api.kill(&t).await;
    a.api.wait_state(&t, TaskState::Killed, 20).await;
}

/// A record that does not decode is moved to `set-aside/`; the other
/// tasks load, and its container is left alone, at this start and the
/// next, when the record is no longer in the store.
#[tokio::test]
async fn a_record_that_does_not_decode_is_set_aside_and_its_container_left_alone() {
    let mut a = agent("setaside").await;
    let bad = a.api.submit(&sleep_task(1, "60")).await.id;
    let good = a.api.submit(&sleep_task(1, "60")).await.id;
    let bad_container = a
        .api
        .wait_state(&bad, TaskState::Running, 20)
        .await
        .container
        .unwrap();
    let good_container = a
        .api
        .wait_state(&good, TaskState::Running, 20)
        .await
        .container;
    a.stop().await;
    spoil_record(&a.data_dir().join("tasks.redb"), bad.as_str());

    for start in 1..=2 {
        a.restart(&[]).await;
        // Reconciled: the good task's container was adopted.
        let g = a.api.wait_state(&good, TaskState::Running, 20).await;
        assert_eq!(g.container, good_container, "start {start}");
        hold_for(
            "the set-aside task's container is left alone",
            Duration::from_secs(1),
            || async {
                if running(&bad_container).await {
                    Ok(())
                } else {
                    Err("removed")
                }
            },
        )
        .await;
        assert!(
            a.data_dir()
                .join("set-aside")
                .join(format!("task.{bad}.record"))
                .exists(),
            "start {start}"
        );
        a.stop().await;
    }
    docker().remove(&bad_container).await.unwrap();
}

/// Until now a write that failed was only logged: the agent went on as if
/// it had written, its health said ok, it kept accepting tasks it could
/// not store, and a restart found the state of before the failure. Now the
/// node says so, refuses new tasks with the reason and starts none, and
/// writes what it could not once the disk has room again.
#[tokio::test]
async fn a_full_disk_is_an_error_to_the_submitter_and_the_state_is_written_once_it_has_room() {
    let faults = SimulatedFaults::new("tasks.redb");
    let mut a = Setup::docker("fulldisk")
        .topology("numa:1 core:4 pu:1")
        .ping_interval(Duration::from_millis(300))
        .disk(Disk::with_faults(faults.clone()))
        .start(&[])
        .await;
    let t = a.api.submit(&sleep_task(1, "2")).await.id;
    a.api.wait_state(&t, TaskState::Running, 20).await;

    faults.set_full(true);
    // The task ends while the disk is full: its end cannot be written.
    a.api.wait_state(&t, TaskState::Succeeded, 20).await;
    let h = wait_health(&a, "the health says the store fails", |h| {
        h.store_error.is_some()
    })
    .await;
    assert!(!h.ok, "{h:?}");
    let e = h.store_error.unwrap();
    assert!(
        e.contains("tasks.redb") && e.contains("No space left"),
        "{e}"
    );

    let refused = a.api.submit_refused(&sleep_task(1, "1")).await;
    assert_eq!(refused.status, 500, "{refused:?}");
    assert!(
        refused.message.contains("cannot write its task store")
            && refused.message.contains("No space left"),
        "{refused:?}"
    );
    assert_eq!(a.api.tasks().await.len(), 1, "nothing was accepted");

    faults.set_full(false);
    wait_health(&a, "the store takes writes again", |h| h.ok).await;
    a.stop().await;
    a.restart(&[]).await;
    let after = a.api.task(&t).await;
    assert_eq!(
        (after.state, after.attempt),
        (TaskState::Succeeded, 1),
        "the end written late was kept"
    );
    let ok = a.api.submit(&task(1, &["exit", "0"])).await.id;
    a.api.wait_state(&ok, TaskState::Succeeded, 20).await;
}

/// Until now a keeper that could not write a copy answered `Kept` all the
/// same (to a push), or the placing node only logged it (to a placement):
/// the submitter heard "two copies" with one. Now the answer to the submit
/// says the copy was not kept and why, the copy's status says so until the
/// keeper has one, and a push the keeper cannot write leaves its copy
/// behind, shown as such, until it can.
#[tokio::test]
async fn a_keeper_that_cannot_write_its_copy_is_reported_to_the_submitter() {
    let faults = SimulatedFaults::new("tasks.redb");
    let base = Setup::memory("copy").topology("numa:1 core:2 pu:1");
    let runner = base.start(&[]).await;
    let keeper = base
        .clone()
        .disk(Disk::with_faults(faults.clone()))
        .start(&[runner.gossip()])
        .await;
    wait_formed(&[&runner, &keeper]).await;

    faults.set_full(true);
    let answer = runner.api.submit(&sleep_task(1, "600")).await;
    assert_eq!(answer.node.as_ref(), Some(&runner.id), "{answer:?}");
    match &answer.copy {
        Some(CopyStatus::NotKept { node, reason }) => {
            assert_eq!(node, &keeper.id);
            assert!(reason.contains("No space left"), "{reason}");
        }
        other => panic!("the answer says the copy was not kept: {other:?}"),
    }
    let t = answer.id;
    let copy = copy_status(&runner, &t).await;
    assert!(
        matches!(&copy, CopyStatus::NotKept { node, .. } if node == &keeper.id),
        "{copy:?}"
    );

    // Room again: the runner's next push is kept.
    faults.set_full(false);
    wait_copy(&runner, &t, "the keeper keeps the copy", |c| {
        matches!(c, CopyStatus::Kept { current: true, .. })
    })
    .await;

    // Full again while the task changes: the keeper answers the push with
    // an error and keeps the older state (not the new one, unwritten).
    faults.set_full(true);
    runner.api.kill(&t).await;
    runner.api.wait_state(&t, TaskState::Killed, 20).await;
    hold_for(
        "the keeper's copy stays behind",
        Duration::from_secs(1),
        || async {
            match copy_status(&runner, &t).await {
                CopyStatus::Kept { current: false, .. } => Ok(()),
                other => Err(other),
            }
        },
    )
    .await;
    faults.set_full(false);
    wait_copy(&runner, &t, "the keeper catches up", |c| {
        matches!(c, CopyStatus::Kept { current: true, .. })
    })
    .await;
}

/// A task about to start whose "starting" record cannot be written does
/// not start: until now its container was created all the same, on a
/// record that said "queued" on disk. Here the runtime comes back while
/// the disk is full: nothing starts until the disk has room.
#[tokio::test]
async fn nothing_starts_on_a_record_that_could_not_be_written() {
    let faults = SimulatedFaults::new("tasks.redb");
    let rt = std::sync::Arc::new(mesh_agent::runtime::memory::MemoryRuntime::new());
    rt.set_available(false);
    let a = Setup::memory("nostart")
        .topology("numa:1 core:2 pu:1")
        .ping_interval(Duration::from_millis(50))
        .disk(Disk::with_faults(faults.clone()))
        .start_on(rt.clone(), &[])
        .await;
    let t = a.api.submit(&sleep_task(1, "600")).await.id;
    assert_eq!(a.api.task(&t).await.state, TaskState::Queued);

    faults.set_full(true);
    rt.set_available(true);
    wait_health(&a, "the store fails", |h| {
        h.docker.reachable && h.store_error.is_some()
    })
    .await;
    hold_for(
        "nothing starts while the disk is full",
        Duration::from_millis(500),
        || async {
            let now = a.api.task(&t).await;
            if (now.state, now.attempt, rt.started()) == (TaskState::Queued, 0, 0) {
                Ok(())
            } else {
                Err((now, rt.started()))
            }
        },
    )
    .await;

    faults.set_full(false);
    let running = a.api.wait_state(&t, TaskState::Running, 10).await;
    assert_eq!((running.attempt, rt.started()), (1, 1), "started once");
}

async fn copy_status(a: &TestAgent, id: &mesh_protocol::TaskId) -> CopyStatus {
    a.api.client().task_copy(id).await.unwrap()
}

async fn wait_copy(
    a: &TestAgent,
    id: &mesh_protocol::TaskId,
    what: &str,
    want: impl Fn(&CopyStatus) -> bool,
) -> CopyStatus {
    wait_until(what, Duration::from_secs(20), || async {
        let c = copy_status(a, id).await;
        if want(&c) { Ok(c) } else { Err(c) }
    })
    .await
}

async fn wait_health(a: &TestAgent, what: &str, want: impl Fn(&Health) -> bool) -> Health {
    wait_until(what, Duration::from_secs(20), || async {
        let h = a.api.health().await;
        if want(&h) { Ok(h) } else { Err(h) }
    })
    .await
}

/// Overwrites a task's stored record with bytes that do not decode.
fn spoil_record(path: &std::path::Path, id: &str) {
    let tasks: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("tasks");
    let db = redb::Database::create(path).unwrap();
    let tx = db.begin_write().unwrap();
    tx.open_table(tasks)
        .unwrap()
        .insert(id, b"\xff\xff\xff not a record".as_slice())
        .unwrap();
    tx.commit().unwrap();
}
