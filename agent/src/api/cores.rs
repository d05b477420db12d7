//! `GET /v1/cores`: every live node's cores with what holds each (task,
//! serving service container, warm container, free), this node's without
//! a call and the others' by a `Cores` call, for the dashboard's picture
//! of the mesh. Dead nodes are left out: their holdings are not known.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use mesh_protocol::cores::MeshCores;
use mesh_protocol::rpc::{Request as RpcRequest, Response as RpcResponse};

use super::{ApiError, ApiState};

/// How long a node may take to answer.
const CORES_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn list(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let (here, answers) = futures_util::join!(
        crate::services::cores::here(s.tasks.supervisor(), s.services.as_ref()),
        s.tasks.mesh().call_live(&RpcRequest::Cores, CORES_TIMEOUT)
    );
    let mut out = MeshCores {
        nodes: vec![here?],
        unreachable: Vec::new(),
    };
    for (node, answer) in answers {
        match answer {
            Ok(RpcResponse::Cores(c)) => out.nodes.push(*c),
            _ => out.unreachable.push(node),
        }
    }
    out.nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(axum::Json(out).into_response())
}
