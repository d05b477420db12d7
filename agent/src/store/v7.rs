//! Reading the records of a format-7 store, to migrate them: the layout
//! format 7 had (a spec without `pull`; a record without `pull` and
//! `owner`), frozen here. postcard writes fields in order with no names,
//! so only this exact layout reads those bytes.

use std::collections::BTreeMap;

use mesh_protocol::image::PullPolicy;
use mesh_protocol::{Allocation, CoreCount, MemoryBytes, NodeId, TaskId, TaskRecord, TaskSpec};
use mesh_protocol::{TaskState, wire};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct SpecV7 {
    image: String,
    command: Vec<String>,
    env: Vec<(String, String)>,
    cores: CoreCount,
    memory: Option<MemoryBytes>,
    labels: BTreeMap<String, String>,
    retries: u32,
    name: Option<String>,
    priority: i32,
    parent: Option<TaskId>,
    after: Vec<TaskId>,
}

#[derive(Serialize, Deserialize)]
struct RecordV7 {
    id: TaskId,
    spec: SpecV7,
    state: TaskState,
    node: NodeId,
    attempt: u32,
    starts: u32,
    queue_seq: u64,
    allocation: Option<Allocation>,
    container: Option<String>,
    exit_code: Option<i64>,
    message: Option<String>,
    kill_requested: bool,
    migrating: bool,
    created_ms: u64,
    updated_ms: u64,
    started_ms: Option<u64>,
    finished_ms: Option<u64>,
    not_before_ms: u64,
    offered_to: Option<NodeId>,
    keeper: Option<NodeId>,
}

/// A format-7 record as a current one: its image pulled when missing, owned
/// by `unknown` (only admins act on it). The spec is checked as any decoded
/// spec is.
pub(super) fn decode(bytes: &[u8]) -> Result<TaskRecord, String> {
    let old: RecordV7 = wire::decode(bytes).map_err(|e| e.to_string())?;
    let s = old.spec;
    let spec = TaskSpec {
        image: s.image,
        command: s.command,
        env: s.env,
        cores: s.cores,
        memory: s.memory,
        labels: s.labels,
        retries: s.retries,
        name: s.name,
        priority: s.priority,
        parent: s.parent,
        after: s.after,
        pull: PullPolicy::default(),
    };
    // Through the checked decoding, so a stored spec is as bounded as any.
    let spec: TaskSpec = wire::decode(&wire::encode(&spec).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let mut r = TaskRecord::new(old.id, spec, old.node, old.queue_seq, old.created_ms);
    r.state = old.state;
    r.attempt = old.attempt;
    r.starts = old.starts;
    r.allocation = old.allocation;
    r.container = old.container;
    r.exit_code = old.exit_code;
    r.message = old.message;
    r.kill_requested = old.kill_requested;
    r.migrating = old.migrating;
    r.updated_ms = old.updated_ms;
    r.started_ms = old.started_ms;
    r.finished_ms = old.finished_ms;
    r.not_before_ms = old.not_before_ms;
    r.offered_to = old.offered_to;
    r.keeper = old.keeper;
    Ok(r)
}

/// `r` as format 7 wrote it (for tests of the migration).
#[cfg(test)]
pub(super) fn encode(r: &TaskRecord) -> Vec<u8> {
    let s = &r.spec;
    wire::encode(&RecordV7 {
        id: r.id.clone(),
        spec: SpecV7 {
            image: s.image.clone(),
            command: s.command.clone(),
            env: s.env.clone(),
            cores: s.cores,
            memory: s.memory,
            labels: s.labels.clone(),
            retries: s.retries,
            name: s.name.clone(),
            priority: s.priority,
            parent: s.parent.clone(),
            after: s.after.clone(),
        },
        state: r.state,
        node: r.node.clone(),
        attempt: r.attempt,
        starts: r.starts,
        queue_seq: r.queue_seq,
        allocation: r.allocation.clone(),
        container: r.container.clone(),
        exit_code: r.exit_code,
        message: r.message.clone(),
        kill_requested: r.kill_requested,
        migrating: r.migrating,
        created_ms: r.created_ms,
        updated_ms: r.updated_ms,
        started_ms: r.started_ms,
        finished_ms: r.finished_ms,
        not_before_ms: r.not_before_ms,
        offered_to: r.offered_to.clone(),
        keeper: r.keeper.clone(),
    })
    .expect("a record encodes")
}
