//! The HTTP+JSON control API (see `mesh_protocol::api` for the contract).
//! Handlers parse input into protocol types, ask tasks (this node or the
//! mesh) or services, and map their answers and typed errors to status
//! codes (`error::status`), the same for a failure here or on a peer. No
//! state lives here.

pub mod auth;
mod cores;
pub mod dashboard;
mod error;
mod events;
pub mod serve;
mod services;
pub mod tokens;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Extension, FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use mesh_protocol::api::{MAX_BODY, NEXT_AFTER, Submission};
use mesh_protocol::auth::Caller;
use mesh_protocol::listing::{DEFAULT_LIMIT, MAX_LIMIT};
use mesh_protocol::{NodeId, TaskId};
use serde::Deserialize;
use tracing::Instrument;

pub use error::ApiError;
pub use serve::{BODY_TIMEOUT, HEADER_TIMEOUT, serve};

use crate::mesh::Mesh;
use crate::supervisor::SupervisorHandle;
use crate::tasks::{TaskError, Tasks};

/// What the handlers reach: tasks across the mesh, the mesh and services.
#[derive(Clone)]
pub struct ApiState {
    pub tasks: Tasks,
    pub services: crate::services::ServicesHandle,
    /// What callers must show.
    pub access: std::sync::Arc<auth::Access>,
    /// This host's image pulls, counted for /metrics.
    pub pulls: std::sync::Arc<crate::metrics::PullCounts>,
    /// This node's events, and through the mesh every node's.
    pub events: crate::events::EventLog,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
    }
}

impl FromRef<ApiState> for Tasks {
    fn from_ref(s: &ApiState) -> Self {
        s.tasks.clone()
    }
}

impl FromRef<ApiState> for SupervisorHandle {
    fn from_ref(s: &ApiState) -> Self {
        s.tasks.supervisor().clone()
    }
}

impl FromRef<ApiState> for Mesh {
    fn from_ref(s: &ApiState) -> Self {
        s.tasks.mesh().clone()
    }
}

pub fn router(state: ApiState) -> Router {
    let access = state.access.clone();
    let api = Router::new()
        .route("/v1/tasks", post(submit).get(list))
        .route("/v1/tasks/{id}", get(task))
        .route("/v1/tasks/{id}/copy", get(copy))
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
        .route("/v1/cores", get(cores::list))
        .route("/v1/events", get(events::events))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError::not_found(
                "no such endpoint; see /v1/tasks, /v1/services, /v1/node, /v1/peers, /v1/cores, /v1/events, /v1/health, /metrics, and the dashboard at /",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            access,
            auth::authenticate,
        ));
    // The dashboard's page holds no data: it is served to anyone, and
    // asks the routes above with the user's token.
    Router::new()
        .merge(dashboard::routes())
        .merge(api)
        // Bodies past MAX_BODY or slower than BODY_TIMEOUT are refused as
        // they arrive (413, 408), before any handler.
        .layer(axum::middleware::from_fn(serve::bounded_body))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct DrainQuery {
    /// Also stop the node's running tasks so they move now.
    #[serde(default)]
    migrate: bool,
}

async fn drain(
    State(tasks): State<Tasks>,
    Path(node): Path<String>,
    Query(q): Query<DrainQuery>,
) -> Result<Response, ApiError> {
    set_draining(tasks, node, true, q.migrate).await
}

async fn undrain(
    State(tasks): State<Tasks>,
    Path(node): Path<String>,
) -> Result<Response, ApiError> {
    set_draining(tasks, node, false, false).await
}

/// Drains (or undrains) `node`: here, or on the peer by a call.
async fn set_draining(
    tasks: Tasks,
    node: String,
    on: bool,
    migrate: bool,
) -> Result<Response, ApiError> {
    let node = NodeId::new(node.as_str())
        .map_err(|e| ApiError::not_found(format!("no node {node:?} ({e})")))?;
    tasks.node(&node).await?.drain(on, migrate).await?;
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
/// The caller owns it.
async fn submit(
    State(tasks): State<Tasks>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Submission { spec, array } = Submission::parse(&body)?;
    for dep in &spec.after {
        match tasks.find(dep).await {
            Ok(_) => {}
            Err(TaskError::NotFound(_)) => {
                // A node out of reach may hold it: not known not to exist.
                let away = tasks
                    .mesh()
                    .peers()
                    .await
                    .iter()
                    .filter(|p| !p.is_self && p.state != mesh_protocol::gossip::PeerState::Alive)
                    .count();
                return Err(if away > 0 {
                    ApiError::unavailable(format!(
                        "--after {dep}: not found on the nodes in reach; {away} node(s) out of reach may hold it; try again"
                    ))
                } else {
                    ApiError::bad_request(format!("--after {dep}: no such task in the mesh"))
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    let accepted = match array {
        None => tasks.submit(spec, &caller).await?,
        Some(n) => tasks.submit_array(spec, n, &caller).await?,
    };
    Ok((StatusCode::ACCEPTED, axum::Json(accepted)).into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    /// `local`: only this node's tasks; default: the whole mesh.
    scope: Option<String>,
    /// Most tasks in the answer (default `listing::DEFAULT_LIMIT`).
    limit: Option<u32>,
    /// Only tasks whose ids sort after this one (the previous page's last).
    after: Option<String>,
}

/// A page of tasks in id order; when more may follow, the header
/// `mesh-next-after` names the id to pass as `after` for the next page.
async fn list(
    State(tasks): State<Tasks>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = match q.limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => n,
        n => {
            return Err(ApiError::bad_request(format!(
                "limit {n}: a page holds 1 to {MAX_LIMIT} tasks"
            )));
        }
    };
    let after = q
        .after
        .map(|a| {
            TaskId::new(a.as_str()).map_err(|e| ApiError::bad_request(format!("after {a:?}: {e}")))
        })
        .transpose()?;
    let page = match q.scope.as_deref() {
        Some("local") => tasks.here().list(after, limit).await?,
        None | Some("mesh") => tasks.list_page(after, limit).await?,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "scope {other:?}: use local or mesh"
            )));
        }
    };
    let next = page
        .more
        .then(|| page.records.last().map(|r| r.id.to_string()))
        .flatten();
    let mut response = axum::Json(page.records).into_response();
    if let Some(next) = next
        && let Ok(value) = axum::http::HeaderValue::from_str(&next)
    {
        response.headers_mut().insert(NEXT_AFTER, value);
    }
    Ok(response)
}

async fn task(State(tasks): State<Tasks>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    Ok(axum::Json(tasks.view(&id).await?).into_response())
}

/// Whether the task's keeper holds its copy, asked of the keeper.
async fn copy(State(tasks): State<Tasks>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    Ok(axum::Json(tasks.copy_status(&id).await?).into_response())
}

/// Kills a task wherever it runs; an array's id kills every member. The
/// node that holds the record checks that the caller may (owner or admin).
async fn kill(
    State(tasks): State<Tasks>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    let span = tracing::info_span!("task", task_id = %id);
    async {
        match tasks.kill_anywhere(&id, &caller).await {
            Ok(record) => Ok(axum::Json(record).into_response()),
            Err(TaskError::NotFound(_)) => {
                Ok(axum::Json(tasks.kill_array(&id, &caller).await?).into_response())
            }
            Err(e) => Err(e.into()),
        }
    }
    .instrument(span)
    .await
}

async fn node(
    State(s): State<SupervisorHandle>,
    State(mesh): State<Mesh>,
) -> Result<Response, ApiError> {
    let mut view = s.node().await?;
    view.mesh = Some(mesh.summary().await);
    Ok(axum::Json(view).into_response())
}

/// This node's figures in the Prometheus text format (`crate::metrics`);
/// a GET like the others, so it needs the read role when the API asks for
/// credentials.
async fn metrics(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let snapshot = crate::metrics::gather(&s.tasks, &s.services, &s.pulls).await?;
    Ok((
        [("content-type", crate::metrics::CONTENT_TYPE)],
        crate::metrics::encode(&snapshot),
    )
        .into_response())
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
    State(tasks): State<Tasks>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    let stream = tasks.logs(&id, q.follow).await?;
    let body = Body::from_stream(stream.map(|chunk| chunk.map_err(std::io::Error::other)));
    Ok(([("content-type", "text/plain; charset=utf-8")], body).into_response())
}
