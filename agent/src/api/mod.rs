//! The HTTP+JSON control API (see `mesh_protocol::api` for the contract).
//! Handlers parse input into protocol types, ask the supervisor, and map
//! its answers and errors to status codes. No state lives here.

mod error;
mod services;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use mesh_protocol::api::{MAX_ARRAY, SubmitRequest};
use mesh_protocol::{TaskId, TaskRecord, TaskSpec};
use serde::Deserialize;

pub use error::ApiError;

use crate::mesh::Mesh;
use crate::mesh::place::{self, Found};
use crate::supervisor::SupervisorError;
use crate::supervisor::SupervisorHandle;
use mesh_protocol::NodeId;
use mesh_protocol::rpc::{Request as RpcRequest, Response as RpcResponse};

/// What the handlers reach: the supervisor, the mesh and services.
#[derive(Clone)]
pub struct ApiState {
    pub supervisor: SupervisorHandle,
    pub mesh: Mesh,
    pub services: crate::services::ServicesHandle,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
    }
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
        .route("/v1/nodes/{node}/drain", post(drain))
        .route("/v1/nodes/{node}/undrain", post(undrain))
        .route("/v1/services", post(services::create).get(services::list))
        .route(
            "/v1/services/{name}",
            get(services::show).delete(services::remove),
        )
        .route("/v1/connections", get(services::connections))
        .fallback(|| async {
            ApiError::not_found(
                "no such endpoint; see /v1/tasks, /v1/services, /v1/node, /v1/peers, /v1/health",
            )
        })
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct DrainQuery {
    /// Also stop the node's running tasks so they move now.
    #[serde(default)]
    migrate: bool,
}

async fn drain(
    State(s): State<SupervisorHandle>,
    State(mesh): State<Mesh>,
    Path(node): Path<String>,
    Query(q): Query<DrainQuery>,
) -> Result<Response, ApiError> {
    set_draining(s, mesh, node, true, q.migrate).await
}

async fn undrain(
    State(s): State<SupervisorHandle>,
    State(mesh): State<Mesh>,
    Path(node): Path<String>,
) -> Result<Response, ApiError> {
    set_draining(s, mesh, node, false, false).await
}

/// Drains (or undrains) `node`: here, or on the peer by a call.
async fn set_draining(
    s: SupervisorHandle,
    mesh: Mesh,
    node: String,
    on: bool,
    migrate: bool,
) -> Result<Response, ApiError> {
    let node = NodeId::new(node.as_str())
        .map_err(|e| ApiError::not_found(format!("no node {node:?} ({e})")))?;
    if node == mesh.node() {
        crate::mesh::calls::drain(&s, Some(&mesh), on, migrate).await?;
    } else {
        let peers = mesh.live_peers().await;
        let Some((_, addr)) = peers.iter().find(|(n, _)| *n == node) else {
            return Err(ApiError::not_found(format!(
                "no live node {node} in the mesh (see meshctl peers)"
            )));
        };
        match mesh
            .call(
                *addr,
                &RpcRequest::Drain { on, migrate },
                place::CALL_TIMEOUT,
            )
            .await
        {
            Ok(RpcResponse::Accepted) => {}
            Ok(other) => {
                return Err(SupervisorError::Conflict(format!("{node} answered {other:?}")).into());
            }
            Err(e) => {
                return Err(SupervisorError::Busy(format!("{node} did not answer: {e}")).into());
            }
        }
    }
    let state = if on { "draining" } else { "accepting tasks" };
    Ok(axum::Json(serde_json::json!({ "node": node, "state": state })).into_response())
}

async fn peers(State(mesh): State<Mesh>) -> Response {
    axum::Json(mesh.peers().await).into_response()
}

fn task_id(raw: &str) -> Result<TaskId, ApiError> {
    TaskId::new(raw).map_err(|e| ApiError::not_found(format!("no task with id {raw:?} ({e})")))
}

/// Accepts a task for the mesh: it goes to the least-utilised node that
/// can start it now, or waits in this node's queue.
async fn submit(
    State(s): State<SupervisorHandle>,
    State(mesh): State<Mesh>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: SubmitRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("malformed task request: {e}")))?;
    let array = request.array;
    let after = request.after.clone();
    let mut spec = TaskSpec::try_from(request).map_err(|e| ApiError::bad_request(e.to_string()))?;
    for dep in &after {
        match place::find(&s, &mesh, dep).await {
            Ok(_) => {}
            Err(SupervisorError::NotFound(_)) => {
                return Err(ApiError::bad_request(format!(
                    "--after {dep}: no such task in the mesh"
                )));
            }
            Err(e) => return Err(e.into()),
        }
    }
    spec.after = after;
    let accepted = match array {
        None => place::submit(&s, &mesh, spec).await?,
        Some(n @ 1..=MAX_ARRAY) => place::submit_array(&s, &mesh, spec, n).await?,
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "array of {n}: an array has 1 to {MAX_ARRAY} members"
            )));
        }
    };
    Ok((StatusCode::ACCEPTED, axum::Json(accepted)).into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    /// `local`: only this node's tasks; default: the whole mesh.
    scope: Option<String>,
}

async fn list(
    State(s): State<SupervisorHandle>,
    State(mesh): State<Mesh>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let records = match q.scope.as_deref() {
        Some("local") => s.list().await?,
        None | Some("mesh") => place::list_all(&s, &mesh).await?,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "scope {other:?}: use local or mesh"
            )));
        }
    };
    Ok(axum::Json(records).into_response())
}

async fn task(
    State(s): State<SupervisorHandle>,
    State(mesh): State<Mesh>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    match place::find(&s, &mesh, &id).await? {
        Found::Here => Ok(axum::Json(s.get(id).await?).into_response()),
        Found::At(_, _, record) => Ok(axum::Json(record).into_response()),
    }
}

/// Kills a task wherever it runs; an array's id kills every member.
async fn kill(
    State(s): State<SupervisorHandle>,
    State(mesh): State<Mesh>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    match place::kill_anywhere(&s, &mesh, &id).await {
        Ok(record) => Ok(axum::Json(record).into_response()),
        Err(SupervisorError::NotFound(_)) => {
            let members: Vec<TaskRecord> = place::list_all(&s, &mesh)
                .await?
                .into_iter()
                .filter(|t| t.spec.parent.as_ref() == Some(&id))
                .collect();
            if members.is_empty() {
                return Err(SupervisorError::NotFound(id.to_string()).into());
            }
            let mut killed = Vec::with_capacity(members.len());
            for m in members {
                match place::kill_anywhere(&s, &mesh, &m.id).await {
                    Ok(r) => killed.push(r),
                    // Already ended: nothing to kill.
                    Err(SupervisorError::Conflict(_)) => killed.push(m),
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(axum::Json(killed).into_response())
        }
        Err(e) => Err(e.into()),
    }
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
    State(mesh): State<Mesh>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    let body = match place::find(&s, &mesh, &id).await? {
        Found::Here => {
            let stream = s.output(id, q.follow).await?;
            Body::from_stream(stream.map(|chunk| chunk.map_err(std::io::Error::other)))
        }
        Found::At(node, addr, _) => {
            let request = RpcRequest::Logs {
                id: id.clone(),
                follow: q.follow,
            };
            let stream = mesh.call_stream(addr, &request).await.map_err(|e| {
                SupervisorError::Busy(format!("task {id} is on {node}, which did not answer: {e}"))
            })?;
            Body::from_stream(stream.map(|answer| match answer {
                Ok(RpcResponse::LogChunk(bytes)) => Ok(axum::body::Bytes::from(bytes)),
                Ok(RpcResponse::NotFound) => Err(std::io::Error::other("task not found")),
                Ok(other) => Err(std::io::Error::other(format!("{other:?}"))),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            }))
        }
    };
    Ok(([("content-type", "text/plain; charset=utf-8")], body).into_response())
}
