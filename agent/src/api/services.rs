//! `/v1/services` and `/v1/connections`: definitions go to this node's
//! services part (which spreads them through the gossip); figures and open
//! connections are gathered from every live node with `ServiceReport`
//! calls.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mesh_protocol::api::{ServiceReport, ServiceView, read_body};
use mesh_protocol::auth::Caller;
use mesh_protocol::rpc::{Request as RpcRequest, Response as RpcResponse};
use mesh_protocol::service::ServiceRequest;

use super::{ApiError, ApiState};
use crate::services::ServiceApiError;

/// How long a node may take to report.
const REPORT_TIMEOUT: Duration = Duration::from_secs(3);

impl From<ServiceApiError> for ApiError {
    fn from(e: ServiceApiError) -> Self {
        match e {
            ServiceApiError::Invalid(_) | ServiceApiError::PortNotAllowed { .. } => {
                ApiError::bad_request(e.to_string())
            }
            ServiceApiError::Conflict(_) => ApiError::conflict(e.to_string()),
            ServiceApiError::NotFound(_) => ApiError::not_found(e.to_string()),
            ServiceApiError::Store(_) => ApiError::internal(e.to_string()),
            // As a stopping supervisor answers: try another node or later.
            ServiceApiError::Stopping => ApiError::unavailable(e.to_string()),
            ServiceApiError::Forbidden(_) => ApiError::forbidden(e.to_string()),
        }
    }
}

/// The caller owns it.
pub async fn create(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: ServiceRequest = read_body("service definition", &body)?;
    let def = s.services.create(request, caller).await?;
    Ok((StatusCode::CREATED, axum::Json(def)).into_response())
}

/// Only its owner or an admin may.
pub async fn remove(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(s.services.remove(&name, caller).await?).into_response())
}

/// Every live node's report (this node's without a call), and the nodes
/// that did not answer.
async fn reports(s: &ApiState) -> (Vec<ServiceReport>, Vec<mesh_protocol::NodeId>) {
    let answers = s
        .tasks
        .mesh()
        .call_live(&RpcRequest::ServiceReport, REPORT_TIMEOUT);
    let (here, answers) = futures_util::join!(s.services.report(), answers);
    let mut out = vec![here];
    let mut unreachable = Vec::new();
    for (node, answer) in answers {
        match answer {
            Ok(RpcResponse::ServiceReport(r)) => out.push(*r),
            _ => unreachable.push(node),
        }
    }
    (out, unreachable)
}

async fn views(s: &ApiState) -> Vec<ServiceView> {
    let (reports, unreachable) = reports(s).await;
    s.services
        .defs()
        .into_iter()
        .map(|def| {
            let mut nodes: Vec<_> = reports
                .iter()
                .flat_map(|r| r.stats.iter())
                .filter(|st| &st.service == def.name())
                .cloned()
                .collect();
            nodes.sort_by(|a, b| a.node.cmp(&b.node));
            ServiceView {
                def,
                nodes,
                unreachable: unreachable.clone(),
            }
        })
        .collect()
}

pub async fn list(State(s): State<ApiState>) -> Response {
    axum::Json(views(&s).await).into_response()
}

pub async fn show(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    views(&s)
        .await
        .into_iter()
        .find(|v| v.def.name().as_str() == name)
        .map(|v| axum::Json(v).into_response())
        .ok_or_else(|| ApiError::not_found(format!("no service {name}")))
}

pub async fn connections(State(s): State<ApiState>) -> Response {
    let (reports, _) = reports(&s).await;
    let mut all: Vec<_> = reports.into_iter().flat_map(|r| r.connections).collect();
    all.sort_by(|a, b| (&a.service, &a.entry, a.id).cmp(&(&b.service, &b.entry, b.id)));
    axum::Json(all).into_response()
}
