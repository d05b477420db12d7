//! The mesh's events as one node shows them: its own and every live
//! peer's, merged. The latest are gathered once ([`history`]); a follower
//! ([`follow`]) then gets each node's new events as they come, keeps a
//! stream open to every live peer, and opens one to each peer that comes
//! alive meanwhile.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::stream::{BoxStream, StreamExt};
use mesh_protocol::NodeId;
use mesh_protocol::events::{self, Event, RingQuery};
use mesh_protocol::rpc::{Request, Response};
use tokio::sync::mpsc;
use tracing::debug;

use super::EventLog;
use crate::mesh::Mesh;

/// How long a peer may take to send its latest events.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a follower looks for peers it has no stream from.
const REFRESH: Duration = Duration::from_secs(2);

/// What a reader asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// Only events at or after this time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    /// At most this many of the latest (at most `events::MAX_BATCH`).
    pub limit: usize,
    /// Only this node's.
    pub local: bool,
}

/// The latest events the query names, oldest first, from this node and
/// (unless `local`) every live peer that answers in time; a peer that does
/// not is left out.
pub async fn history(log: &EventLog, mesh: &Mesh, q: Query) -> Vec<Event> {
    let limit = q.limit.clamp(1, events::MAX_BATCH);
    let mine = log.read(RingQuery {
        after: None,
        since_ms: q.since_ms,
        limit,
    });
    if q.local {
        return mine;
    }
    let asks = mesh.live_peers().await.into_iter().map(|(node, addr)| {
        let mesh = mesh.clone();
        async move {
            let request = Request::Events {
                after: None,
                since_ms: q.since_ms,
                limit: limit as u32,
                follow: false,
            };
            tokio::time::timeout(ASK_TIMEOUT, collect(&mesh, &node, addr, &request))
                .await
                .unwrap_or_else(|_| {
                    debug!(%node, "no events from a peer in time");
                    Vec::new()
                })
        }
    });
    let theirs = futures_util::future::join_all(asks).await;
    events::merge(std::iter::once(mine).chain(theirs), limit)
}

/// Every batch a non-following call to `node` answers.
async fn collect(mesh: &Mesh, node: &NodeId, addr: SocketAddr, request: &Request) -> Vec<Event> {
    let Ok(mut stream) = mesh.call_stream(node, addr, request).await else {
        return Vec::new();
    };
    let mut all = Vec::new();
    while let Some(Ok(Response::Events(batch))) = stream.next().await {
        all.extend(batch);
    }
    all
}

/// The latest events the query names, then every new one as it comes,
/// each node's in order, until the stream is dropped.
pub fn follow(log: EventLog, mesh: Mesh, q: Query) -> BoxStream<'static, Event> {
    let (tx, rx) = mpsc::channel::<Vec<Event>>(64);
    tokio::spawn(async move {
        let first = history(&log, &mesh, q).await;
        let mut cursors: HashMap<NodeId, u64> = HashMap::new();
        for e in &first {
            cursors.insert(e.node.clone(), e.seq);
        }
        if tx.send(first).await.is_err() {
            return;
        }
        let here = mesh.node();
        let mine = cursors.get(&here).copied().unwrap_or_else(|| log.latest());
        tokio::spawn(forward(log.follow(mine), tx.clone()));
        if q.local {
            return;
        }
        // From each peer, what follows what was shown of it; a peer with
        // nothing shown, what came since the follow began.
        let began = log_now(&log);
        let mut open: HashMap<NodeId, tokio::task::JoinHandle<()>> = HashMap::new();
        loop {
            open.retain(|_, task| !task.is_finished());
            for (node, addr) in mesh.live_peers().await {
                if open.contains_key(&node) {
                    continue;
                }
                let request = Request::Events {
                    after: cursors.get(&node).copied(),
                    since_ms: Some(began),
                    limit: events::MAX_BATCH as u32,
                    follow: true,
                };
                let task = tokio::spawn(from_peer(
                    mesh.clone(),
                    node.clone(),
                    addr,
                    request,
                    tx.clone(),
                ));
                open.insert(node, task);
            }
            tokio::select! {
                _ = tx.closed() => break,
                _ = tokio::time::sleep(REFRESH) => {}
            }
        }
        for task in open.into_values() {
            task.abort();
        }
    });
    // A node's events arrive in order, but a stream opened again to a
    // peer may repeat some: each node's are shown once, by number.
    let seen: HashMap<NodeId, u64> = HashMap::new();
    futures_util::stream::unfold((rx, seen), |(mut rx, mut seen)| async move {
        let batch = rx.recv().await?;
        let fresh: Vec<Event> = batch
            .into_iter()
            .filter(|e| {
                let last = seen.entry(e.node.clone()).or_insert(0);
                let new = e.seq > *last;
                *last = (*last).max(e.seq);
                new
            })
            .collect();
        Some((futures_util::stream::iter(fresh), (rx, seen)))
    })
    .flatten()
    .boxed()
}

fn log_now(log: &EventLog) -> u64 {
    log.inner.clock.now_ms()
}

/// Sends this node's batches to the reader until it leaves (noticed at
/// once, not at the next event).
async fn forward(mut batches: BoxStream<'static, Vec<Event>>, tx: mpsc::Sender<Vec<Event>>) {
    loop {
        let batch = tokio::select! {
            _ = tx.closed() => return,
            batch = batches.next() => batch,
        };
        let Some(batch) = batch else { return };
        if tx.send(batch).await.is_err() {
            return;
        }
    }
}

/// Follows one peer's events until its stream ends or the reader leaves.
async fn from_peer(
    mesh: Mesh,
    node: NodeId,
    addr: SocketAddr,
    request: Request,
    tx: mpsc::Sender<Vec<Event>>,
) {
    let mut stream = match mesh.call_stream(&node, addr, &request).await {
        Ok(s) => s,
        Err(e) => {
            debug!(%node, error = %e, "cannot follow a peer's events");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            answer = stream.next() => match answer {
                Some(Ok(Response::Events(batch))) => {
                    if !batch.is_empty() && tx.send(batch).await.is_err() {
                        return;
                    }
                }
                other => {
                    debug!(%node, answer = ?other.map(|a| a.map(|r| format!("{r:?}"))), "a peer's event stream ended");
                    return;
                }
            }
        }
    }
}
