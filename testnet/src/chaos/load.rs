//! The steady load of a chaos run: submissions of tasks with arrays,
//! retries and dependencies, and what was accepted.

use super::*;

/// The steady load: one submission every [`SUBMIT_EVERY`] through a node
/// the run can reach.
pub(super) struct Load<'a> {
    pub(super) net: &'a Testnet,
    pub(super) witness: SocketAddr,
    pub(super) unreachable: Unreachable,
    pub(super) origin: Instant,
    /// The testnet's admin token.
    pub(super) token: Option<String>,
}

/// What the load submitted.
#[derive(Debug, Default)]
pub(super) struct Submitted {
    pub(super) counts: Submissions,
    /// Ids of accepted tasks (array members, not the array's id).
    pub(super) accepted: BTreeSet<String>,
    /// Refusals the mesh must not give to a well-formed submission from
    /// an admin (4xx: bad request, no credentials, ...), one per reason.
    pub(super) wrongly_refused: Vec<Violation>,
}

/// At most this many distinct wrong refusals are kept.
const MAX_WRONG_REFUSALS: usize = 5;

impl Load<'_> {
    pub(super) async fn run(&self, seed: u64, deadline: Instant) -> Submitted {
        let mut rng = StdRng::seed_from_u64(seed);
        let nodes = self.net.nodes();
        let mut out = Submitted::default();
        let mut last: Option<TaskId> = None;
        let mut tick = tokio::time::interval(SUBMIT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while Instant::now() < deadline {
            tick.tick().await;
            let plan = schedule::next_submission(&mut rng);
            let reachable = self.unreachable.reachable(nodes.len());
            let pick = rng.random_range(0..reachable.len().max(1));
            let Some(node) = reachable.get(pick).map(|&i| nodes[i].to_string()) else {
                continue;
            };
            let request = self.request(&plan, last.as_ref().filter(|_| plan.after_last));
            match self.submit(&node, &request).await {
                Ok(answer) => {
                    out.counts.accepted += 1;
                    if answer.members.is_empty() {
                        if plan.array.is_none() {
                            last = Some(answer.id.clone());
                        }
                        out.accepted.insert(answer.id.to_string());
                    } else {
                        out.accepted
                            .extend(answer.members.iter().map(|m| m.id.to_string()));
                    }
                }
                Err(e) if e.status().is_some() => {
                    out.counts.refused += 1;
                    log(self.origin, format_args!("{node} refused a task: {e}"));
                    // Busy (503) and storage (500, a full disk) are the
                    // mesh's to say under faults; a 4xx is a bug.
                    let status = e.status().map_or(0, |s| s.as_u16());
                    let why = e.to_string();
                    if (400..500).contains(&status)
                        && out.wrongly_refused.len() < MAX_WRONG_REFUSALS
                        && !out.wrongly_refused.iter().any(
                            |v| matches!(v, Violation::SubmitRefused { why: w, .. } if *w == why),
                        )
                    {
                        out.wrongly_refused.push(Violation::SubmitRefused {
                            node: node.clone(),
                            status,
                            why,
                        });
                    }
                }
                Err(e) => {
                    out.counts.unanswered += 1;
                    log(
                        self.origin,
                        format_args!("{node} did not answer a submit: {e}"),
                    );
                }
            }
        }
        out
    }

    fn request(&self, plan: &Submission, after: Option<&TaskId>) -> SubmitRequest {
        SubmitRequest {
            image: TASK_IMAGE.into(),
            command: vec![
                "witness".into(),
                self.witness.to_string(),
                format!("{:.3}", plan.work.as_secs_f64()),
                plan.fail_attempts.to_string(),
            ],
            cores: Some(plan.cores),
            retries: Some(plan.retries),
            array: plan.array,
            after: after.into_iter().cloned().collect(),
            labels: BTreeMap::from([(LABEL_RUN.to_owned(), self.net.name().to_string())]),
            ..Default::default()
        }
    }

    async fn submit(
        &self,
        node: &str,
        request: &SubmitRequest,
    ) -> Result<mesh_protocol::api::SubmitResponse, meshctl::client::ClientError> {
        let ip = self
            .net
            .state()
            .node(node)
            .map(|n| n.ip)
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST);
        let url = SocketAddr::from((ip, API_PORT)).into();
        let client = Client::with_timeouts(url, Duration::from_secs(2), Duration::from_secs(15))?
            .with_token(self.token.clone());
        client.submit(request).await
    }
}
