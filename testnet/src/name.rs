//! The testnet's name: it names the Docker network, prefixes the agent
//! containers, is the agents' cluster id and names the state directory, so it
//! is checked once, here, against what all four accept.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Longest name: agent containers are `<name>-<node>`, and short names keep
/// `docker ps` readable.
const MAX_LEN: usize = 40;

/// A valid testnet name: lowercase ASCII letters, digits, '-', '_' and '.',
/// starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TestnetName(String);

/// Why a testnet name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("testnet name is empty; use a name such as `ganger`")]
    Empty,
    #[error("testnet name {0:?} is longer than {MAX_LEN} characters")]
    TooLong(String),
    #[error(
        "testnet name {name:?} has character {bad:?}; use lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
    )]
    BadChar { name: String, bad: char },
}

impl TestnetName {
    /// The name the `mesh-testnet` command uses unless told otherwise.
    pub const DEFAULT: &'static str = "ganger";

    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        let Some(first) = name.chars().next() else {
            return Err(NameError::Empty);
        };
        if name.len() > MAX_LEN {
            return Err(NameError::TooLong(name));
        }
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        if !allowed(first) {
            return Err(NameError::BadChar { name, bad: first });
        }
        if let Some(bad) = name
            .chars()
            .find(|&c| !(allowed(c) || matches!(c, '-' | '_' | '.')))
        {
            return Err(NameError::BadChar { name, bad });
        }
        Ok(Self(name))
    }

    /// A name no other test run uses: `tn-<label>-<pid>-<4 hex digits>`, the
    /// label cut to what a name may hold. Tests running in parallel, in one
    /// process or several, and a user's `ganger` testnet never collide.
    pub fn unique(label: &str) -> Self {
        let label: String = label
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(16)
            .collect();
        // The clock only spreads names apart; uniqueness within a process
        // comes from the label, across processes from the pid.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("tn-{label}-{}-{:04x}", std::process::id(), nanos & 0xffff);
        // Every character is allowed and the length is at most
        // 3 + 16 + 1 + 10 + 1 + 4 = 35, so this cannot fail; fall back to a
        // fixed-form name anyway rather than panic.
        Self::new(name).unwrap_or_else(|_| Self(format!("tn-{}", std::process::id())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TestnetName {
    fn default() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

impl fmt::Display for TestnetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TestnetName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for TestnetName {
    type Error = NameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<TestnetName> for String {
    fn from(name: TestnetName) -> Self {
        name.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_docker_friendly_names_only() {
        assert!(TestnetName::new("ganger").is_ok());
        assert!(TestnetName::new("tn-peers-12.3_x").is_ok());
        assert_eq!(TestnetName::new(""), Err(NameError::Empty));
        assert!(matches!(
            TestnetName::new("Ganger"),
            Err(NameError::BadChar { bad: 'G', .. })
        ));
        assert!(matches!(
            TestnetName::new("-x"),
            Err(NameError::BadChar { bad: '-', .. })
        ));
        assert!(matches!(
            TestnetName::new("a/b"),
            Err(NameError::BadChar { bad: '/', .. })
        ));
        assert!(matches!(
            TestnetName::new("a".repeat(41)),
            Err(NameError::TooLong(_))
        ));
    }

    #[test]
    fn unique_names_are_valid_and_keep_the_label() {
        let name = TestnetName::unique("Kill & Restart, with a long label");
        assert!(name.as_str().starts_with("tn-kill---restart-"), "{name}");
        assert_eq!(TestnetName::new(name.as_str()), Ok(name.clone()));
        assert_ne!(TestnetName::unique("a"), TestnetName::unique("b"));
    }
}
