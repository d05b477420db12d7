//! This node's cores with what holds each (`mesh_protocol::cores`): the
//! supervisor's holders, told apart by the services part's warm and
//! serving containers. Answers the `Cores` call and `GET /v1/cores` for
//! this node.

use mesh_protocol::cores::{NodeCores, classify};

use super::ServiceControl;
use crate::supervisor::{SupervisorError, SupervisorHandle};

/// This node's cores, each with its holder's kind.
pub async fn here(
    supervisor: &SupervisorHandle,
    services: &dyn ServiceControl,
) -> Result<NodeCores, SupervisorError> {
    // The services' holders first: a container that ends in between then
    // shows as a service still (or free), never as a task.
    let holders = services.holders();
    let view = supervisor.node().await?;
    Ok(NodeCores {
        node: view.node,
        cores: classify(&view.cores, &holders),
    })
}
