//! `GET /v1/events`: the mesh's events (`crate::events::mesh`), as JSON
//! lines, or as server-sent events when the client accepts
//! `text/event-stream` (the dashboard). With `follow`, the answer stays open
//! and new events come as they happen.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{self, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use mesh_protocol::events::{Event, MAX_BATCH};
use serde::Deserialize;

use super::{ApiError, ApiState};
use crate::events::mesh::{self, Query as EventQuery};

/// How often an idle server-sent event stream says it is still there.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize)]
pub(super) struct EventsQuery {
    /// Keep the answer open for new events.
    #[serde(default)]
    follow: bool,
    /// Only events at or after this time, in ms since the Unix epoch.
    since: Option<u64>,
    /// At most this many of the latest events (default 100).
    limit: Option<usize>,
    /// `local`: only this node's; default: the whole mesh.
    scope: Option<String>,
}

/// Default number of past events shown.
const DEFAULT_LIMIT: usize = 100;

pub(super) async fn events(
    State(s): State<ApiState>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let limit = match q.limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_BATCH => n,
        n => {
            return Err(ApiError::bad_request(format!(
                "limit {n}: ask for 1 to {MAX_BATCH} events"
            )));
        }
    };
    let local = match q.scope.as_deref() {
        Some("local") => true,
        None | Some("mesh") => false,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "scope {other:?}: use local or mesh"
            )));
        }
    };
    let query = EventQuery {
        since_ms: q.since,
        limit,
        local,
    };
    let mesh_handle = s.tasks.mesh().clone();
    let stream = if q.follow {
        mesh::follow(s.events.clone(), mesh_handle, query)
    } else {
        let past = mesh::history(&s.events, &mesh_handle, query).await;
        futures_util::stream::iter(past).boxed()
    };
    let sse_wanted = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if sse_wanted {
        let events = stream.map(|e| Ok::<_, Infallible>(sse_event(&e)));
        return Ok(Sse::new(events)
            .keep_alive(sse::KeepAlive::new().interval(KEEP_ALIVE))
            .into_response());
    }
    let lines = stream.map(|e| Ok::<_, Infallible>(json_line(&e)));
    Ok((
        [("content-type", "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

fn json_line(e: &Event) -> Vec<u8> {
    // An event always serializes: plain fields.
    let mut line = serde_json::to_vec(e).unwrap_or_default();
    line.push(b'\n');
    line
}

fn sse_event(e: &Event) -> sse::Event {
    sse::Event::default()
        .id(format!("{}:{}", e.node, e.seq))
        .data(serde_json::to_string(e).unwrap_or_default())
}
