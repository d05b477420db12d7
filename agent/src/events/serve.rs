//! What this node answers when a peer asks for its events: the batch the
//! query names, then, when following, new batches as they come.

use std::sync::Arc;

use futures_util::StreamExt;
use mesh_protocol::events::RingQuery;
use mesh_protocol::rpc::{ErrorKind, RemoteError, Request, Response, Topic};

use super::EventLog;
use crate::mesh::Mesh;
use crate::mesh::handlers::{Caller, Reply};

/// Serves `Events` calls from `log`.
pub fn register(mesh: &Mesh, log: EventLog) {
    mesh.handle_calls(
        Topic::Events,
        Arc::new(move |caller, request| {
            let log = log.clone();
            Box::pin(async move { answer(&log, caller, request) })
        }),
    );
}

fn failed(kind: ErrorKind, message: &str) -> Reply {
    Reply::One(Response::Failed(RemoteError::new(kind, message)))
}

/// The answer to one call: the first batch (possibly empty), then either
/// the end or the batches to come.
pub fn answer(log: &EventLog, caller: Caller, request: Request) -> Reply {
    let Request::Events {
        after,
        since_ms,
        limit,
        follow,
    } = request
    else {
        return failed(ErrorKind::Invalid, "not an events call");
    };
    if caller.is_none() {
        return failed(
            ErrorKind::Unauthenticated,
            "events are shown to mesh members only",
        );
    }
    let first = log.read(RingQuery {
        after,
        since_ms,
        limit: limit as usize,
    });
    // Follow from what was sent, or from now when nothing was.
    let cursor = first
        .last()
        .map(|e| e.seq)
        .or(after)
        .unwrap_or_else(|| log.latest());
    let head = futures_util::stream::iter([Response::Events(first)]);
    if follow {
        let rest = log.follow(cursor).map(Response::Events);
        Reply::Stream(head.chain(rest).boxed())
    } else {
        Reply::Stream(
            head.chain(futures_util::stream::iter([Response::LogEnd]))
                .boxed(),
        )
    }
}
