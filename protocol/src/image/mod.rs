//! Images on real hosts: which registry an image name points at
//! ([`ImageRef`]), when to pull ([`PullPolicy`]), how far a pull has got
//! ([`progress`]), what a failed pull means for retries ([`failure`]),
//! how peers share images ([`share`]; [`first`]: who goes to the registry
//! when many need one new image), which images a node holds as the
//! mesh sees it ([`held`], a [`bloom`] filter gossiped for placement), and
//! which images to remove to keep disk use under a bound ([`ledger`] of
//! what this agent pulled and used, [`gc`] the decision). Pure: the
//! agent's runtime does the pulling, the listing and the removing.

pub mod bloom;
pub mod failure;
pub mod first;
pub mod gc;
pub mod held;
pub mod ledger;
pub mod progress;
mod reference;
pub mod share;

pub use failure::{PullFailure, classify};
pub use gc::{Candidate, GcPolicy, Plan, Removal};
pub use held::{ImageSummary, ListedImage, Wanted};
pub use ledger::{HostImage, Ledger, canonical};
pub use progress::{PullProgress, PullTracker};
pub use reference::{ImageRef, ImageRefError};
pub use share::{ImageSource, LoadMismatch, Source};

use serde::{Deserialize, Serialize};

/// When the node that runs a task or a service instance pulls its image,
/// as Docker's and Kubernetes' users know it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// Pull only when the host does not have the image.
    #[default]
    Missing,
    /// Pull before every start, so a tag that moved is followed.
    Always,
    /// Never pull: the image must be on the host.
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Missing => "missing",
            PullPolicy::Always => "always",
            PullPolicy::Never => "never",
        }
    }

    /// Whether to pull, given whether the host has the image.
    pub fn must_pull(self, present: bool) -> bool {
        match self {
            PullPolicy::Missing => !present,
            PullPolicy::Always => true,
            PullPolicy::Never => false,
        }
    }
}

impl std::fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PullPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "missing" => Ok(PullPolicy::Missing),
            "always" => Ok(PullPolicy::Always),
            "never" => Ok(PullPolicy::Never),
            other => Err(format!(
                "pull policy {other:?} is not one of missing, always, never"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_decide_as_docker_does() {
        assert!(PullPolicy::Missing.must_pull(false));
        assert!(!PullPolicy::Missing.must_pull(true));
        assert!(PullPolicy::Always.must_pull(true));
        assert!(!PullPolicy::Never.must_pull(false));
    }

    #[test]
    fn policies_parse_and_print() {
        for p in [PullPolicy::Missing, PullPolicy::Always, PullPolicy::Never] {
            assert_eq!(p.as_str().parse::<PullPolicy>(), Ok(p));
        }
        let err = "sometimes".parse::<PullPolicy>().unwrap_err();
        assert!(err.contains("missing, always, never"), "{err}");
    }
}
