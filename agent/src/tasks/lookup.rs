//! Finding a task wherever it is, for `get`, `kill`, `logs`, the keeper's
//! copy and the mesh-wide list. A node that was away may still hold an older,
//! superseded attempt of a task: the highest attempt wins.

use mesh_protocol::api::CopyStatus;
use mesh_protocol::attempts::{self, TaskView};
use mesh_protocol::auth::Caller;
use mesh_protocol::listing::{self, Page, newer};
use mesh_protocol::rpc::ErrorKind;
use mesh_protocol::{NodeId, TaskId, TaskRecord};

use super::{Found, Node, Output, TaskError, Tasks};

impl Tasks {
    /// What its keeper holds of task `id`: asked of the keeper its current
    /// record names.
    pub async fn copy_status(&self, id: &TaskId) -> Result<CopyStatus, TaskError> {
        let record = self.find(id).await?.record;
        let Some(keeper) = record.keeper.clone() else {
            return Ok(CopyStatus::NoKeeper {
                reason: "no other node keeps a copy (the mesh had no other live node, or this attempt was superseded)".into(),
            });
        };
        let node = match self.node(&keeper).await {
            Ok(node) => node,
            Err(e) => {
                return Ok(CopyStatus::NotKept {
                    node: keeper,
                    reason: e.to_string(),
                });
            }
        };
        Ok(match node.copy(id).await {
            Ok(copy) => CopyStatus::Kept {
                node: keeper,
                current: (copy.attempt, copy.updated_ms) >= (record.attempt, record.updated_ms),
            },
            Err(e) => CopyStatus::NotKept {
                node: keeper,
                reason: e.to_string(),
            },
        })
    }

    /// Asks this node and every live peer for `id`; answers with the node
    /// that has its current attempt, and that record.
    pub async fn find(&self, id: &TaskId) -> Result<Found, TaskError> {
        self.find_all(id).await.map(|(found, _)| found)
    }

    /// The task as `meshctl task` shows it: its current attempt, and any
    /// other attempt a node still reports running.
    pub async fn view(&self, id: &TaskId) -> Result<TaskView, TaskError> {
        let (found, reports) = self.find_all(id).await?;
        let also_running =
            attempts::also_running(&found.record, reports.iter().map(|(node, r)| (node, r)));
        Ok(TaskView {
            record: found.record,
            also_running,
        })
    }

    /// [`Tasks::find`], with every node's report of the task.
    async fn find_all(&self, id: &TaskId) -> Result<(Found, Vec<(NodeId, TaskRecord)>), TaskError> {
        let nodes: Vec<Node> = std::iter::once(self.here())
            .chain(self.peers().await)
            .collect();
        let asks = nodes.into_iter().map(|node| async move {
            let answer = node.get(id).await;
            (node, answer)
        });
        let mut best: Option<Found> = None;
        let mut reports = Vec::new();
        for (node, answer) in futures_util::future::join_all(asks).await {
            match answer {
                Ok(record) => {
                    reports.push((node.id.clone(), record.clone()));
                    if best.as_ref().is_none_or(|b| newer(&record, &b.record)) {
                        best = Some(Found { node, record });
                    }
                }
                // This node failing (not "not found") is an answer to give.
                Err(e) if node.is_here() && e.kind() != ErrorKind::NotFound => {
                    return Err(e);
                }
                // A peer that does not know it, or does not answer.
                Err(_) => {}
            }
        }
        best.map(|found| (found, reports))
            .ok_or_else(|| TaskError::NotFound(id.clone()))
    }

    /// Kills a task wherever it runs, for `by` (see [`Node::kill`]).
    pub async fn kill_anywhere(&self, id: &TaskId, by: &Caller) -> Result<TaskRecord, TaskError> {
        let found = self.find(id).await?;
        found.node.kill(id, by).await
    }

    /// A task's output, from the node that runs its current attempt.
    pub async fn logs(&self, id: &TaskId, follow: bool) -> Result<Output, TaskError> {
        let found = self.find(id).await?;
        found.node.logs(id, follow).await
    }

    /// A page of the mesh's tasks: this node's and each live peer's, one
    /// record per task (its current attempt), ids after `after`, at most
    /// `limit`, in id order. A peer that does not answer is left out.
    pub async fn list_page(&self, after: Option<TaskId>, limit: u32) -> Result<Page, TaskError> {
        let limit = limit.clamp(1, listing::MAX_LIMIT);
        let mine = self.here().list(after.clone(), limit).await?;
        let peers = self.peers().await;
        let asks = peers.iter().map(|n| n.list(after.clone(), limit));
        let pages = std::iter::once(mine)
            .chain(
                futures_util::future::join_all(asks)
                    .await
                    .into_iter()
                    .flatten(),
            )
            .collect();
        Ok(listing::merge(pages, limit as usize))
    }

    /// Every task of the mesh, page after page.
    pub async fn list_all(&self) -> Result<Vec<TaskRecord>, TaskError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.list_page(after, listing::MAX_LIMIT).await?;
            after = page.records.last().map(|r| r.id.clone());
            all.extend(page.records);
            if !page.more {
                return Ok(all);
            }
        }
    }

    /// Kills every member of the array `parent` (members that already
    /// ended are reported as they are).
    pub async fn kill_array(
        &self,
        parent: &TaskId,
        by: &Caller,
    ) -> Result<Vec<TaskRecord>, TaskError> {
        let members: Vec<TaskRecord> = self
            .list_all()
            .await?
            .into_iter()
            .filter(|t| t.spec.parent.as_ref() == Some(parent))
            .collect();
        if members.is_empty() {
            return Err(TaskError::NotFound(parent.clone()));
        }
        let mut killed = Vec::with_capacity(members.len());
        for m in members {
            match self.kill_anywhere(&m.id, by).await {
                Ok(r) => killed.push(r),
                Err(e) if e.kind() == ErrorKind::Conflict => killed.push(m),
                Err(e) => return Err(e),
            }
        }
        Ok(killed)
    }
}
