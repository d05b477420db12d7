//! The task calls the benchmarks make to one node, through meshctl's
//! client: submit, list, kill everything, and watch the mesh-wide list
//! until it shows what a benchmark waits for.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::stream::{self, FuturesUnordered, StreamExt, TryStreamExt};
use mesh_protocol::api::SubmitRequest;
use mesh_protocol::{TaskId, TaskRecord};
use meshctl::client::{Client, StatusCode};
use tokio::time::Instant;

use super::{BenchError, SETTLE_TIMEOUT, TASK_IMAGE};
use crate::Testnet;
use crate::error::StepError;

/// How long one list may take while watching before it is given up. A list
/// asks every live peer, so until n1 declares a killed peer dead, a list
/// waits for its call to that peer to time out (5 s); later ones are fast.
const POLL_TIMEOUT: Duration = Duration::from_secs(3);
/// Most list requests in flight at once while watching: enough that stuck
/// ones never hold back a fresh one at 50 ms intervals.
const MAX_POLLS: usize = 64;
/// How often [`Api::kill_all`] waits for the tasks to end are checked.
const POLL_ENDED: Duration = Duration::from_millis(200);

/// One node's task API, as a client of the mesh uses it.
#[derive(Debug, Clone)]
pub(super) struct Api {
    client: Client,
}

impl Api {
    /// The API of `node` of `net`.
    pub(super) fn new(net: &Testnet, node: &str) -> Result<Self, BenchError> {
        Ok(Self {
            client: net.client(node)?,
        })
    }

    /// Submits a one-core task of [`TASK_IMAGE`] running `command`.
    pub(super) async fn submit(&self, command: &[&str]) -> Result<TaskId, BenchError> {
        let req = SubmitRequest {
            image: TASK_IMAGE.into(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            cores: Some(1),
            ..Default::default()
        };
        Ok(self.client.submit(&req).await?.id)
    }

    /// Every task of the mesh.
    pub(super) async fn list(&self) -> Result<Vec<TaskRecord>, BenchError> {
        Ok(self.client.tasks().await?)
    }

    /// Kills every task of `ids` (8 requests in flight), then waits until
    /// all have ended.
    pub(super) async fn kill_all(&self, ids: &[TaskId]) -> Result<(), BenchError> {
        stream::iter(ids)
            .map(|id| async move {
                match self.client.kill(id).await {
                    Ok(_) => Ok(()),
                    // Already ended (409): nothing to kill.
                    Err(e) if e.status() == Some(StatusCode::CONFLICT) => Ok(()),
                    Err(e) => Err(BenchError::from(e)),
                }
            })
            .buffer_unordered(8)
            .try_collect::<Vec<_>>()
            .await?;
        self.watch(
            Instant::now(),
            "every task ended",
            SETTLE_TIMEOUT,
            POLL_ENDED,
            |l| count_of(l, ids, |t| t.state.is_terminal()),
        )
        .await?;
        Ok(())
    }

    /// Lists the mesh's tasks every `every` until an answer passes `done`;
    /// returns the time from `since` to that answer, and the answer. A new
    /// request goes out on time even while earlier ones wait (a list that
    /// asks a peer which just died waits for that call's timeout).
    pub(super) async fn watch(
        &self,
        since: Instant,
        what: &str,
        timeout: Duration,
        every: Duration,
        mut done: impl FnMut(&[TaskRecord]) -> Result<(), String>,
    ) -> Result<(Duration, Vec<TaskRecord>), BenchError> {
        let deadline = Instant::now() + timeout;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut polls = FuturesUnordered::new();
        let mut last = "no answer yet".to_owned();
        loop {
            tokio::select! {
                _ = tick.tick(), if polls.len() < MAX_POLLS => {
                    polls.push(tokio::time::timeout(POLL_TIMEOUT, self.list()));
                }
                Some(answer) = polls.next() => match answer {
                    Ok(Ok(list)) => match done(&list) {
                        Ok(()) => return Ok((since.elapsed(), list)),
                        Err(why) => last = why,
                    },
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = format!("a list took over {POLL_TIMEOUT:?}"),
                },
                () = tokio::time::sleep_until(deadline) => {
                    return Err(StepError::Timeout { what: what.to_owned(), timeout, last }.into());
                }
            }
        }
    }
}

/// `Ok` when every task of `ids` is listed and passes `ok`, else how many
/// do and the states of those listed.
pub(super) fn count_of(
    list: &[TaskRecord],
    ids: &[TaskId],
    ok: impl Fn(&TaskRecord) -> bool,
) -> Result<(), String> {
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    let mut passed = 0;
    for t in list.iter().filter(|t| ids.contains(&t.id)) {
        *states.entry(t.state.as_str()).or_default() += 1;
        passed += usize::from(ok(t));
    }
    if passed == ids.len() {
        Ok(())
    } else {
        Err(format!("{passed} of {} (states {states:?})", ids.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ids, record};
    use super::*;
    use mesh_protocol::TaskState;

    #[test]
    fn count_of_says_how_many_pass() {
        let list = vec![
            record("a", "n1", TaskState::Running),
            record("b", "n2", TaskState::Queued),
            record("x", "n2", TaskState::Queued),
        ];
        let running = |t: &TaskRecord| t.state == TaskState::Running;
        assert_eq!(count_of(&list, &ids(&["a"]), running), Ok(()));
        let why = count_of(&list, &ids(&["a", "b"]), running).unwrap_err();
        assert!(why.starts_with("1 of 2"), "{why}");
        // A task missing from the list does not pass.
        assert!(count_of(&list, &ids(&["a", "z"]), running).is_err());
    }
}
