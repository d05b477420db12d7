//! What a failed pull means: worth trying again later (the registry could
//! not be reached), or not (the image does not exist, or we may not have
//! it). Docker only gives us its message, so this reads the message, with
//! the wording of the distribution registry and of Docker 20.10+.

use serde::{Deserialize, Serialize};

/// A failed pull, with the registry's reason in its words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PullFailure {
    /// The registry has no such image or tag: retrying cannot help.
    #[error("image not found: {0}")]
    NotFound(String),
    /// The registry refused our credentials (or needs some): fix
    /// `--registry-auth`; retrying cannot help.
    #[error("registry refused the pull: {0}")]
    Unauthorized(String),
    /// The registry could not be reached or broke off: may succeed later.
    #[error("registry unreachable: {0}")]
    Unreachable(String),
}

impl PullFailure {
    /// Whether a later attempt may succeed, so the failure counts against
    /// `--retries` and the task is tried again.
    pub fn may_succeed_later(&self) -> bool {
        matches!(self, PullFailure::Unreachable(_))
    }
}

/// Reads Docker's message about a failed pull.
pub fn classify(message: &str) -> PullFailure {
    let m = message.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| m.contains(w));
    let reason = message.to_owned();
    if any(&[
        "unauthorized",
        "authentication required",
        "denied",
        "no basic auth credentials",
        "incorrect username or password",
    ]) {
        PullFailure::Unauthorized(reason)
    } else if any(&[
        "manifest unknown",
        "not found",
        "repository does not exist",
        "name unknown",
        "invalid reference format",
    ]) {
        PullFailure::NotFound(reason)
    } else {
        PullFailure::Unreachable(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_messages_are_read_as_users_expect() {
        let cases = [
            (
                "manifest for 127.0.0.1:5000/nosuch:1 not found: manifest unknown: manifest unknown",
                false,
                "not found",
            ),
            (
                "pull access denied for nosuch/image, repository does not exist or may require 'docker login'",
                false,
                "refused",
            ),
            (
                "Head \"http://127.0.0.1:5000/v2/app/manifests/1\": no basic auth credentials",
                false,
                "refused",
            ),
            (
                "Get \"http://127.0.0.1:5999/v2/\": dial tcp 127.0.0.1:5999: connect: connection refused",
                true,
                "unreachable",
            ),
            ("unexpected EOF", true, "unreachable"),
        ];
        for (message, later, kind) in cases {
            let f = classify(message);
            assert_eq!(f.may_succeed_later(), later, "{message}");
            assert!(f.to_string().contains(kind), "{f} for {message}");
            assert!(f.to_string().contains(message), "keeps the reason: {f}");
        }
    }
}
