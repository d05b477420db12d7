//! What pulling an image takes and gives back: registry credentials (never
//! printed) and how a pull fails.

use mesh_protocol::image::PullFailure;

use super::RuntimeError;

/// Credentials for one registry, as Docker's `config.json` holds them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
    /// A registry's identity token, in place of a password.
    pub identity_token: Option<String>,
}

/// Never prints a secret: only which parts are set.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "identity_token",
                &self.identity_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A pull that did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullError {
    /// Docker itself could not be reached.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Docker reached the registry's answer, or could not reach the registry.
    #[error(transparent)]
    Failed(#[from] PullFailure),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_shows_no_secret() {
        let c = Credentials {
            username: Some("ci".into()),
            password: Some("hunter2".into()),
            identity_token: Some("tok-123".into()),
        };
        let shown = format!("{c:?}");
        assert!(
            shown.contains("ci") && shown.contains("redacted"),
            "{shown}"
        );
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok-123"),
            "{shown}"
        );
    }
}
