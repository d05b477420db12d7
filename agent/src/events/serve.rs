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

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_protocol::NodeId;
    use mesh_protocol::events::{EventKind, MAX_BATCH};

    fn log_of(n: usize) -> EventLog {
        let log = EventLog::new(NodeId::new("n1").unwrap(), crate::clock::Clock::System);
        for i in 0..n {
            log.emit(EventKind::TaskPlaced, format!("t{i}"), "r");
        }
        log
    }

    fn ask(limit: u32) -> Request {
        Request::Events {
            after: None,
            since_ms: None,
            limit,
            follow: false,
        }
    }

    async fn answers(reply: Reply) -> Vec<Response> {
        match reply {
            Reply::One(r) => vec![r],
            Reply::Stream(s) => s.collect().await,
        }
    }

    fn failed_kind(answers: &[Response]) -> Option<ErrorKind> {
        match answers {
            [Response::Failed(e)] => Some(e.kind),
            _ => None,
        }
    }

    #[tokio::test]
    async fn strangers_and_other_calls_are_refused_and_absurd_limits_bounded() {
        let log = log_of(MAX_BATCH + 10);
        let me = Some(NodeId::new("n2").unwrap());
        let stranger = answers(answer(&log, None, ask(10))).await;
        assert_eq!(failed_kind(&stranger), Some(ErrorKind::Unauthenticated));
        let other = answers(answer(&log, me.clone(), Request::ServiceReport)).await;
        assert_eq!(failed_kind(&other), Some(ErrorKind::Invalid));
        let huge = answers(answer(&log, me.clone(), ask(u32::MAX))).await;
        match huge.as_slice() {
            [Response::Events(batch), Response::LogEnd] => assert_eq!(batch.len(), MAX_BATCH),
            other => panic!("{other:?}"),
        }
        let zero = answers(answer(&log, me, ask(0))).await;
        assert!(matches!(zero.as_slice(), [Response::Events(b), Response::LogEnd] if b.len() == 1));
    }
}
