//! The HTTP+JSON control API (see `mesh_protocol::api` for the contract).
//! Handlers parse input into protocol types, ask the supervisor, and map
//! its answers and errors to status codes. No state lives here.

mod error;

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use mesh_protocol::api::SubmitRequest;
use mesh_protocol::{TaskId, TaskSpec};
use serde::Deserialize;

pub use error::ApiError;

use crate::mesh::Mesh;
use crate::supervisor::{Logs, SupervisorHandle};

/// How often a follower of a not-yet-started task checks again.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// What the handlers reach: the supervisor and the mesh.
#[derive(Clone, Debug)]
pub struct ApiState {
    pub supervisor: SupervisorHandle,
    pub mesh: Mesh,
}

impl FromRef<ApiState> for SupervisorHandle {
    fn from_ref(s: &ApiState) -> Self {
        s.supervisor.clone()
    }
}

impl FromRef<ApiState> for Mesh {
    fn from_ref(s: &ApiState) -> Self {
        s.mesh.clone()
    }
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/tasks", post(submit).get(list))
        .route("/v1/tasks/{id}", get(task))
        .route("/v1/tasks/{id}/kill", post(kill))
        .route("/v1/tasks/{id}/logs", get(logs))
        .route("/v1/node", get(node))
        .route("/v1/health", get(health))
        .route("/v1/peers", get(peers))
        .fallback(|| async {
            ApiError::not_found("no such endpoint; see /v1/tasks, /v1/node, /v1/peers, /v1/health")
        })
        .with_state(state)
}

async fn peers(State(mesh): State<Mesh>) -> Response {
    axum::Json(mesh.peers().await).into_response()
}

fn task_id(raw: &str) -> Result<TaskId, ApiError> {
    TaskId::new(raw).map_err(|e| ApiError::not_found(format!("no task with id {raw:?} ({e})")))
}

async fn submit(State(s): State<SupervisorHandle>, body: Bytes) -> Result<Response, ApiError> {
    let request: SubmitRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("malformed task request: {e}")))?;
    let spec = TaskSpec::try_from(request).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let accepted = s.submit(spec).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(accepted)).into_response())
}

async fn list(State(s): State<SupervisorHandle>) -> Result<Response, ApiError> {
    Ok(axum::Json(s.list().await?).into_response())
}

async fn task(
    State(s): State<SupervisorHandle>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(s.get(task_id(&id)?).await?).into_response())
}

async fn kill(
    State(s): State<SupervisorHandle>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(s.kill(task_id(&id)?).await?).into_response())
}

async fn node(
    State(s): State<SupervisorHandle>,
    State(mesh): State<Mesh>,
) -> Result<Response, ApiError> {
    let mut view = s.node().await?;
    view.mesh = Some(mesh.summary().await);
    Ok(axum::Json(view).into_response())
}

async fn health(State(s): State<SupervisorHandle>) -> Result<Response, ApiError> {
    let h = s.health().await?;
    let status = if h.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, axum::Json(h)).into_response())
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    #[serde(default)]
    follow: bool,
}

/// Streams a task's output. With `follow`, a task that has not started yet
/// is waited for, and the stream ends when its container does.
async fn logs(
    State(s): State<SupervisorHandle>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    let stream = loop {
        match s.logs(id.clone(), q.follow).await? {
            Logs::Stream(stream) => break stream,
            Logs::NotYet if q.follow => tokio::time::sleep(FOLLOW_POLL).await,
            Logs::NotYet => break futures_util::stream::empty().boxed(),
        }
    };
    let body = Body::from_stream(stream.map(|chunk| chunk.map_err(std::io::Error::other)));
    Ok(([("content-type", "text/plain; charset=utf-8")], body).into_response())
}
