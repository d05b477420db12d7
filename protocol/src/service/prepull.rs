//! Pre-pull of service images on one node, as a pure state machine: which
//! pulls to start (every live service's image, as soon as the node knows the
//! service: created here, learned by gossip, or read at start), which to
//! stop (its service went or names another image), when to try a failed
//! pull again (with a back-off), and which failures to log (once per new
//! reason). Time comes in as `now` (ms); the agent carries out the steps.

use std::collections::BTreeMap;

use super::image::{ImageStatus, NodeImage};
use crate::ids::ServiceName;
use crate::image::{PullPolicy, PullProgress};

/// The first wait before a failed pull is tried again; it doubles with each
/// failure in a row, up to `RETRY_MAX_MS`.
pub const RETRY_FIRST_MS: u64 = 5_000;
pub const RETRY_MAX_MS: u64 = 300_000;

/// The image a live service needs here, and its pull policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub image: String,
    pub policy: PullPolicy,
}

/// What the agent does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Make `image` present as `policy` says; report with `generation`.
    Pull {
        service: ServiceName,
        image: String,
        policy: PullPolicy,
        generation: u64,
    },
    /// Stop waiting for the service's pull (a pull shared with a container
    /// start goes on).
    Stop(ServiceName),
}

#[derive(Debug, Clone)]
struct Entry {
    wanted: Wanted,
    status: ImageStatus,
    /// The pull whose reports count; older ones' are ignored.
    generation: u64,
    /// Whether a pull is under way.
    pulling: bool,
    /// Failures in a row.
    failures: u32,
    retry_at_ms: Option<u64>,
    /// The last failure logged, so a reason is logged once.
    logged: Option<String>,
}

/// The pre-pulls of one node.
#[derive(Debug, Clone, Default)]
pub struct PrePulls {
    entries: BTreeMap<ServiceName, Entry>,
    generation: u64,
}

/// How long to wait after `failures` failed pulls in a row.
pub fn retry_delay_ms(failures: u32) -> u64 {
    let doublings = failures.saturating_sub(1).min(16);
    RETRY_FIRST_MS
        .saturating_mul(1 << doublings)
        .min(RETRY_MAX_MS)
}

impl PrePulls {
    /// The services this node serves now, with their images: pulls for the
    /// new ones (or those whose image changed), stops for the gone ones.
    pub fn want(&mut self, wanted: BTreeMap<ServiceName, Wanted>) -> Vec<Step> {
        let mut steps = Vec::new();
        let gone: Vec<ServiceName> = self
            .entries
            .keys()
            .filter(|n| !wanted.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            self.entries.remove(&name);
            steps.push(Step::Stop(name));
        }
        for (name, w) in wanted {
            if self.entries.get(&name).is_some_and(|e| e.wanted == w) {
                continue;
            }
            self.generation += 1;
            steps.push(Step::Pull {
                service: name.clone(),
                image: w.image.clone(),
                policy: w.policy,
                generation: self.generation,
            });
            self.entries.insert(
                name,
                Entry {
                    wanted: w,
                    status: ImageStatus::Pulling(PullProgress::default()),
                    generation: self.generation,
                    pulling: true,
                    failures: 0,
                    retry_at_ms: None,
                    logged: None,
                },
            );
        }
        steps
    }

    /// A pull moved. A retry of a failed pull keeps showing the failure
    /// until it succeeds (the node stays out of routing meanwhile).
    pub fn progress(&mut self, service: &ServiceName, generation: u64, progress: PullProgress) {
        if let Some(e) = self.current(service, generation)
            && matches!(e.status, ImageStatus::Pulling(_))
        {
            e.status = ImageStatus::Pulling(progress);
        }
    }

    /// A pull ended. Returns the reason to log when it failed for a reason
    /// not logged since the last success.
    pub fn finished(
        &mut self,
        service: &ServiceName,
        generation: u64,
        result: Result<(), String>,
        now_ms: u64,
    ) -> Option<String> {
        let e = self.current(service, generation)?;
        e.pulling = false;
        match result {
            Ok(()) => {
                e.status = ImageStatus::Present;
                e.failures = 0;
                e.retry_at_ms = None;
                e.logged = None;
                None
            }
            Err(why) => {
                e.failures = e.failures.saturating_add(1);
                e.retry_at_ms = Some(now_ms.saturating_add(retry_delay_ms(e.failures)));
                e.status = ImageStatus::Failed(why.clone());
                (e.logged.as_ref() != Some(&why)).then(|| {
                    e.logged = Some(why.clone());
                    why
                })
            }
        }
    }

    /// The failed pulls to try again now.
    pub fn due(&mut self, now_ms: u64) -> Vec<Step> {
        let mut steps = Vec::new();
        for (name, e) in &mut self.entries {
            if e.pulling || e.retry_at_ms.is_none_or(|at| at > now_ms) {
                continue;
            }
            self.generation += 1;
            e.generation = self.generation;
            e.pulling = true;
            e.retry_at_ms = None;
            steps.push(Step::Pull {
                service: name.clone(),
                image: e.wanted.image.clone(),
                policy: e.wanted.policy,
                generation: e.generation,
            });
        }
        steps
    }

    /// When the next retry is due, if any is waiting.
    pub fn next_due(&self) -> Option<u64> {
        self.entries
            .values()
            .filter(|e| !e.pulling)
            .filter_map(|e| e.retry_at_ms)
            .min()
    }

    /// Each service's image here.
    pub fn statuses(&self) -> BTreeMap<ServiceName, ImageStatus> {
        self.entries
            .iter()
            .map(|(n, e)| (n.clone(), e.status.clone()))
            .collect()
    }

    /// What this node gossips under `img`: the services whose image it does
    /// not have.
    pub fn gossip(&self) -> BTreeMap<String, NodeImage> {
        self.entries
            .iter()
            .filter_map(|(n, e)| Some((n.to_string(), e.status.gossip()?)))
            .collect()
    }

    fn current(&mut self, service: &ServiceName, generation: u64) -> Option<&mut Entry> {
        self.entries
            .get_mut(service)
            .filter(|e| e.generation == generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> ServiceName {
        ServiceName::new(n).unwrap()
    }

    fn wanted(pairs: &[(&str, &str)]) -> BTreeMap<ServiceName, Wanted> {
        pairs
            .iter()
            .map(|(n, i)| {
                (
                    name(n),
                    Wanted {
                        image: (*i).into(),
                        policy: PullPolicy::Missing,
                    },
                )
            })
            .collect()
    }

    fn generation_of(steps: &[Step], service: &str) -> u64 {
        steps
            .iter()
            .find_map(|s| match s {
                Step::Pull {
                    service: n,
                    generation,
                    ..
                } if n.as_str() == service => Some(*generation),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn a_new_service_is_pulled_once_and_shows_progress_then_present() {
        let mut p = PrePulls::default();
        let steps = p.want(wanted(&[("echo", "reg/echo:1")]));
        assert_eq!(steps.len(), 1);
        let g = generation_of(&steps, "echo");
        assert_eq!(p.gossip()["echo"], NodeImage::Pulling);
        // The same definitions again start nothing.
        assert!(p.want(wanted(&[("echo", "reg/echo:1")])).is_empty());
        let half = PullProgress {
            layers_done: 1,
            layers: 2,
            bytes_done: 50,
            bytes: 100,
        };
        p.progress(&name("echo"), g, half);
        assert_eq!(p.statuses()[&name("echo")].to_string(), "pulling 50%");
        assert_eq!(p.finished(&name("echo"), g, Ok(()), 10), None);
        assert_eq!(p.statuses()[&name("echo")], ImageStatus::Present);
        assert!(p.gossip().is_empty());
        assert_eq!(p.next_due(), None);
    }

    #[test]
    fn a_changed_image_is_pulled_again_and_the_old_pulls_reports_are_ignored() {
        let mut p = PrePulls::default();
        let old = generation_of(&p.want(wanted(&[("echo", "reg/echo:1")])), "echo");
        let steps = p.want(wanted(&[("echo", "reg/echo:2")]));
        let new = generation_of(&steps, "echo");
        assert_ne!(old, new);
        assert_eq!(p.finished(&name("echo"), old, Err("gone".into()), 0), None);
        assert_eq!(p.gossip()["echo"], NodeImage::Pulling);
        p.finished(&name("echo"), new, Ok(()), 0);
        assert_eq!(p.statuses()[&name("echo")], ImageStatus::Present);
        // A removed service's pull is stopped and forgotten.
        assert_eq!(p.want(BTreeMap::new()), vec![Step::Stop(name("echo"))]);
        assert!(p.statuses().is_empty());
    }

    #[test]
    fn a_failed_pull_is_retried_with_back_off_and_each_reason_logged_once() {
        let mut p = PrePulls::default();
        let mut g = generation_of(&p.want(wanted(&[("echo", "reg/echo:1")])), "echo");
        let down = "registry unreachable".to_string();
        assert_eq!(
            p.finished(&name("echo"), g, Err(down.clone()), 1_000),
            Some(down.clone())
        );
        assert_eq!(p.gossip()["echo"], NodeImage::Failed);
        assert_eq!(p.next_due(), Some(1_000 + RETRY_FIRST_MS));
        assert!(p.due(1_000 + RETRY_FIRST_MS - 1).is_empty());
        let steps = p.due(1_000 + RETRY_FIRST_MS);
        g = generation_of(&steps, "echo");
        // While the retry runs the node still shows (and gossips) the failure.
        p.progress(&name("echo"), g, PullProgress::default());
        assert_eq!(p.gossip()["echo"], NodeImage::Failed);
        assert_eq!(p.next_due(), None, "no retry while one runs");
        // The same reason again is not logged again; the wait doubles.
        assert_eq!(
            p.finished(&name("echo"), g, Err(down.clone()), 10_000),
            None
        );
        assert_eq!(p.next_due(), Some(10_000 + 2 * RETRY_FIRST_MS));
        g = generation_of(&p.due(u64::MAX), "echo");
        let other = "image not found".to_string();
        assert_eq!(
            p.finished(&name("echo"), g, Err(other.clone()), 20_000),
            Some(other)
        );
        g = generation_of(&p.due(u64::MAX), "echo");
        p.finished(&name("echo"), g, Ok(()), 30_000);
        assert_eq!(p.statuses()[&name("echo")], ImageStatus::Present);
        // After a success, a failure is news again.
        let g2 = generation_of(&p.want(wanted(&[("echo", "reg/echo:3")])), "echo");
        assert_eq!(
            p.finished(&name("echo"), g2, Err(down.clone()), 40_000),
            Some(down)
        );
    }

    #[test]
    fn the_back_off_doubles_up_to_its_cap() {
        assert_eq!(retry_delay_ms(1), RETRY_FIRST_MS);
        assert_eq!(retry_delay_ms(2), 2 * RETRY_FIRST_MS);
        assert_eq!(retry_delay_ms(7), RETRY_MAX_MS);
        assert_eq!(retry_delay_ms(u32::MAX), RETRY_MAX_MS);
    }
}
