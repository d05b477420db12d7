//! Validated identifiers: a node's name and a task's id.
//!
//! Both end up in container names and labels, so they are restricted to
//! characters Docker accepts in a container name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} {value:?} is longer than {max} characters")]
    TooLong {
        kind: &'static str,
        value: String,
        max: usize,
    },
    #[error(
        "{kind} {value:?} has character {bad:?}; use letters, digits, '-', '_' or '.', starting with a letter or digit"
    )]
    BadChar {
        kind: &'static str,
        value: String,
        bad: char,
    },
}

fn check(kind: &'static str, value: &str, max: usize) -> Result<(), IdError> {
    let Some(first) = value.chars().next() else {
        return Err(IdError::Empty { kind });
    };
    if value.len() > max {
        return Err(IdError::TooLong {
            kind,
            value: value.to_owned(),
            max,
        });
    }
    if !first.is_ascii_alphanumeric() {
        return Err(IdError::BadChar {
            kind,
            value: value.to_owned(),
            bad: first,
        });
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(IdError::BadChar {
            kind,
            value: value.to_owned(),
            bad,
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses and validates.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check($kind, &value, $max)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A node's name, unique in the mesh (default: the host name).
    NodeId,
    "node id",
    63
);
id_type!(
    /// A service's name, unique in the mesh (it names containers and labels).
    ServiceName,
    "service name",
    40
);
id_type!(
    /// A user of the control API, as a token or client certificate names
    /// it; tasks and services record the one that created them.
    UserName,
    "user name",
    64
);
id_type!(
    /// A task's id: unique in the mesh, stable across retries and re-placement.
    TaskId,
    "task id",
    64
);

impl TaskId {
    /// Builds a fresh id from a timestamp and random bits supplied by the
    /// caller (this crate has no clock and no RNG). Ids sort by creation time.
    pub fn generate(now_ms: u64, random: u64) -> Self {
        // 12 hex digits of milliseconds cover ~8900 years; 8 of randomness.
        Self(format!(
            "t{:012x}{:08x}",
            now_ms & 0xffff_ffff_ffff,
            random as u32
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        assert_eq!(NodeId::new("node-1.a_b").unwrap().as_str(), "node-1.a_b");
    }

    #[test]
    fn rejects_bad_names() {
        assert!(matches!(NodeId::new(""), Err(IdError::Empty { .. })));
        assert!(matches!(NodeId::new("-x"), Err(IdError::BadChar { .. })));
        assert!(matches!(
            TaskId::new("a b"),
            Err(IdError::BadChar { bad: ' ', .. })
        ));
        assert!(matches!(
            NodeId::new("x".repeat(64)),
            Err(IdError::TooLong { .. })
        ));
    }

    #[test]
    fn generated_ids_are_valid_and_sort_by_time() {
        let a = TaskId::generate(1_000, u64::MAX);
        let b = TaskId::generate(1_001, 0);
        assert!(TaskId::new(a.as_str()).is_ok());
        assert!(a < b);
    }

    #[test]
    fn serde_validates() {
        let bad: Result<NodeId, _> = serde_json::from_str("\"no spaces\"");
        assert!(bad.is_err());
        let good: NodeId = serde_json::from_str("\"n1\"").unwrap();
        assert_eq!(good.as_str(), "n1");
    }
}
