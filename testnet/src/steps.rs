//! Scenario steps: ask agents what they see, wait until something holds,
//! check that something keeps holding. Tests read as a list of these.
//!
//! Checks return `Ok(())` when satisfied and `Err(why not)` otherwise; the
//! last "why not" is what a timeout reports, so a failing test says what it
//! saw, not only what it wanted.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use mesh_protocol::NodeId;
use mesh_protocol::api::Health;
use mesh_protocol::gossip::PeerView;
use tokio::time::Instant;

use crate::docker::Docker;
use crate::error::{StepError, TestnetError};
use crate::net::Testnet;

/// How often [`wait_until`] and [`hold_for`] check.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Checks every [`POLL_INTERVAL`] until `check` succeeds and returns how long
/// it took; fails with `what` and the last reason once `timeout` has passed.
/// A check that hangs (an agent that accepts but never answers) is cut off
/// at the deadline, so the step never outlasts its budget by more than one
/// [`POLL_INTERVAL`].
pub async fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<(), String>,
) -> Result<Duration, StepError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut last = String::new();
    loop {
        last = match bounded(deadline, check()).await {
            Ok(()) => return Ok(start.elapsed()),
            Err(Failed::Unanswered(waited)) if last.is_empty() => {
                format!("the check gave no answer within {waited:?}")
            }
            Err(Failed::Unanswered(waited)) => {
                format!("the check gave no answer within {waited:?}; the one before: {last}")
            }
            Err(Failed::Refused(why)) => why,
        };
        if Instant::now() >= deadline {
            return Err(StepError::Timeout {
                what: what.to_owned(),
                timeout,
                last,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Checks every [`POLL_INTERVAL`] for `duration` that `check` keeps
/// succeeding; fails at the first check that does not, or that gives no
/// answer by the end of the duration.
pub async fn hold_for(
    what: &str,
    duration: Duration,
    mut check: impl AsyncFnMut() -> Result<(), String>,
) -> Result<(), StepError> {
    let start = Instant::now();
    let end = start + duration;
    loop {
        let why = match bounded(end, check()).await {
            Ok(()) => None,
            Err(Failed::Refused(why)) => Some(why),
            Err(Failed::Unanswered(waited)) => {
                Some(format!("the check gave no answer within {waited:?}"))
            }
        };
        if let Some(why) = why {
            return Err(StepError::Violated {
                what: what.to_owned(),
                duration,
                after: start.elapsed(),
                why,
            });
        }
        if Instant::now() >= end {
            return Ok(());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The most one testnet scenario (one test) may take: ten times what the
/// slowest takes on a loaded 2-core machine, far less than a CI run.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(600);

/// Runs a whole scenario, `what`, for at most `limit`. Its steps have budgets
/// of their own, but a byte stream that stops moving or a Docker daemon that
/// stops answering can still hang one; this turns that into a failure that
/// says so (with whether Docker answers) instead of a test run that never
/// ends. Dropping the scenario drops its testnet, which tears it down.
pub async fn scenario<T, E: From<StepError>>(
    what: &str,
    limit: Duration,
    body: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    match tokio::time::timeout(limit, body).await {
        Ok(result) => result,
        Err(_) => {
            let info = Docker::new()
                .with_limit(Duration::from_secs(10))
                .run(&["info", "--format", "{{.ServerVersion}}"])
                .await;
            let docker = match info {
                Ok(version) => format!("answers (version {version})"),
                Err(e) => e.to_string(),
            };
            Err(StepError::Overran {
                what: what.to_owned(),
                limit,
                docker,
            }
            .into())
        }
    }
}

/// Why one check did not pass.
enum Failed {
    /// It answered no, and why.
    Refused(String),
    /// It gave no answer for this long.
    Unanswered(Duration),
}

/// Runs `check` until `deadline`, but for at least one [`POLL_INTERVAL`],
/// so the last check before a deadline still has time to answer.
async fn bounded(
    deadline: Instant,
    check: impl Future<Output = Result<(), String>>,
) -> Result<(), Failed> {
    let started = Instant::now();
    let limit = deadline.max(started + POLL_INTERVAL);
    match tokio::time::timeout_at(limit, check).await {
        Ok(result) => result.map_err(Failed::Refused),
        Err(_) => Err(Failed::Unanswered(limit - started)),
    }
}

impl Testnet {
    /// `GET /v1/peers` on `node`: every peer it knows, itself included.
    pub async fn peers(&self, node: &str) -> Result<Vec<PeerView>, TestnetError> {
        let answer = self.poll_client(node)?.peers().await;
        answer.map_err(TestnetError::api(node))
    }

    /// `GET /v1/health` on `node` (a 503 still carries the health report).
    pub async fn health(&self, node: &str) -> Result<Health, TestnetError> {
        let answer = self.poll_client(node)?.health().await;
        answer.map_err(TestnetError::api(node))
    }

    /// Every observer's peer list, by observer; an observer that cannot be
    /// asked maps to the error.
    pub async fn views(
        &self,
        observers: &[NodeId],
    ) -> BTreeMap<NodeId, Result<Vec<PeerView>, TestnetError>> {
        let views = join_all(observers.iter().map(|o| self.peers(o.as_str()))).await;
        observers.iter().cloned().zip(views).collect()
    }

    /// Whether every observer's peer list passes `expect`; the first that
    /// does not, and why, otherwise.
    pub async fn check_views(
        &self,
        observers: &[NodeId],
        expect: &impl Fn(&[PeerView]) -> Result<(), String>,
    ) -> Result<(), String> {
        for (observer, view) in self.views(observers).await {
            let peers = view.map_err(|e| format!("{observer}: {e}"))?;
            expect(&peers).map_err(|why| format!("{observer}: {why}"))?;
        }
        Ok(())
    }

    /// Waits until every observer's peer list passes `expect` (see
    /// [`crate::expect`]); returns how long that took.
    pub async fn wait_views(
        &self,
        what: &str,
        timeout: Duration,
        observers: &[NodeId],
        expect: impl Fn(&[PeerView]) -> Result<(), String>,
    ) -> Result<Duration, StepError> {
        wait_until(what, timeout, async || {
            self.check_views(observers, &expect).await
        })
        .await
    }

    /// Checks for `duration` that every observer's peer list keeps passing
    /// `expect`. An observer that stops answering fails the step too.
    pub async fn hold_views(
        &self,
        what: &str,
        duration: Duration,
        observers: &[NodeId],
        expect: impl Fn(&[PeerView]) -> Result<(), String>,
    ) -> Result<(), StepError> {
        hold_for(what, duration, async || {
            self.check_views(observers, &expect).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_scenario_that_hangs_fails_at_its_limit() {
        let done: Result<u8, StepError> =
            scenario("quick", Duration::from_secs(5), async { Ok(7) }).await;
        assert_eq!(done, Ok(7));
        let hung: Result<(), StepError> = scenario(
            "stuck stream",
            Duration::from_secs(5),
            std::future::pending(),
        )
        .await;
        let err = hung.unwrap_err();
        assert!(
            matches!(&err, StepError::Overran { what, .. } if what == "stuck stream"),
            "{err:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn wait_until_reports_time_and_last_reason() {
        let mut calls = 0;
        let took = wait_until("third call", Duration::from_secs(5), async || {
            calls += 1;
            if calls == 3 {
                Ok(())
            } else {
                Err(format!("call {calls}"))
            }
        })
        .await
        .unwrap();
        assert_eq!(took, 2 * POLL_INTERVAL);

        let err = wait_until("never", Duration::from_secs(1), async || {
            Err("nope".to_owned())
        })
        .await
        .unwrap_err();
        assert!(
            matches!(&err, StepError::Timeout { last, .. } if last == "nope"),
            "{err}"
        );
        assert!(err.to_string().contains("never"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn hold_for_fails_at_the_first_violation() {
        let mut calls = 0;
        let err = hold_for("fine", Duration::from_secs(10), async || {
            calls += 1;
            if calls < 4 {
                Ok(())
            } else {
                Err("broke".to_owned())
            }
        })
        .await
        .unwrap_err();
        assert!(
            matches!(&err, StepError::Violated { after, why, .. } if *after == 3 * POLL_INTERVAL && why == "broke"),
            "{err}"
        );
        hold_for("fine", Duration::from_secs(1), async || Ok(()))
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_that_hangs_ends_the_wait_at_its_budget() {
        let started = Instant::now();
        let mut calls = 0;
        let err = wait_until("an answer", Duration::from_secs(5), async || {
            calls += 1;
            if calls < 3 {
                return Err(format!("call {calls}"));
            }
            std::future::pending::<()>().await;
            Ok(())
        })
        .await
        .unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        let StepError::Timeout { last, .. } = &err else {
            panic!("{err}");
        };
        assert!(
            last.contains("no answer") && last.contains("the one before: call 2"),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_that_hangs_breaks_a_hold() {
        let mut calls = 0;
        let err = hold_for("answers", Duration::from_secs(5), async || {
            calls += 1;
            if calls > 1 {
                std::future::pending::<()>().await;
            }
            Ok(())
        })
        .await
        .unwrap_err();
        assert!(
            matches!(&err, StepError::Violated { after, why, .. }
                if *after == Duration::from_secs(5) && why.contains("no answer")),
            "{err}"
        );
    }
}
