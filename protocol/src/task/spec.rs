//! What a user asks a task to be: `TaskSpec`, built only through
//! `TaskSpecBuilder::build`, the one place where a request's fields are
//! checked.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::TaskId;
use crate::labels;
use crate::resources::{CoreCount, MemoryBytes, ResourceError};

/// Most retries a task may ask for.
pub const MAX_RETRIES: u32 = 100;

/// A validated task request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub image: String,
    /// Overrides the image's command when not empty.
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cores: CoreCount,
    pub memory: Option<MemoryBytes>,
    pub labels: BTreeMap<String, String>,
    pub retries: u32,
    pub name: Option<String>,
    pub priority: i32,
    /// Set for a member of an array: the array's id (kill it to kill all).
    pub parent: Option<TaskId>,
    /// Tasks that must succeed before this one starts (`--after`); emptied
    /// once they have.
    pub after: Vec<TaskId>,
}

/// Why a task request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("image is empty: name a local image, e.g. mesh-testsvc:latest")]
    EmptyImage,
    #[error("image {0:?} contains whitespace")]
    BadImage(String),
    #[error("env entry {0:?} is not KEY=VALUE with a non-empty KEY without '='")]
    BadEnv(String),
    #[error(transparent)]
    Resource(#[from] ResourceError),
    #[error("label {0:?} uses the reserved prefix 'mesh.'")]
    ReservedLabel(String),
    #[error("retries {0} is above the limit of {MAX_RETRIES}")]
    TooManyRetries(u32),
    #[error("name {0:?} must be 1 to 128 printable characters")]
    BadName(String),
    #[error("command argument {0} contains a NUL byte")]
    NulInCommand(usize),
}

impl TaskSpec {
    /// A request for `image` on one core, no retries, priority 0; the
    /// setters change that and `build` checks it.
    pub fn builder(image: impl Into<String>) -> TaskSpecBuilder {
        TaskSpecBuilder {
            image: image.into(),
            ..TaskSpecBuilder::default()
        }
    }
}

/// A task request as given, unchecked: `build` turns it into a `TaskSpec`
/// or says what is wrong with it. Unset fields take their defaults there.
#[derive(Debug, Clone, Default)]
pub struct TaskSpecBuilder {
    pub(crate) image: String,
    pub(crate) command: Vec<String>,
    /// `KEY=VALUE` entries.
    pub(crate) env: Vec<String>,
    pub(crate) cores: Option<u32>,
    /// Bytes or a size such as `512M`.
    pub(crate) memory: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) retries: Option<u32>,
    pub(crate) name: Option<String>,
    pub(crate) priority: Option<i32>,
}

impl TaskSpecBuilder {
    /// The command to run instead of the image's.
    pub fn command<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.command = args.into_iter().map(Into::into).collect();
        self
    }

    /// One `KEY=VALUE` environment entry.
    pub fn env(mut self, entry: impl Into<String>) -> Self {
        self.env.push(entry.into());
        self
    }

    pub fn cores(mut self, cores: u32) -> Self {
        self.cores = Some(cores);
        self
    }

    /// A memory limit: bytes or a size such as `512M`.
    pub fn memory(mut self, size: impl Into<String>) -> Self {
        self.memory = Some(size.into());
        self
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Checks every field; the only way to make a `TaskSpec` from input.
    pub fn build(self) -> Result<TaskSpec, SpecError> {
        let image = self.image.trim().to_owned();
        if image.is_empty() {
            return Err(SpecError::EmptyImage);
        }
        if image.chars().any(char::is_whitespace) {
            return Err(SpecError::BadImage(image));
        }
        if let Some(i) = self.command.iter().position(|a| a.contains('\0')) {
            return Err(SpecError::NulInCommand(i));
        }
        let env = self
            .env
            .into_iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
                    Ok((k.to_owned(), v.to_owned()))
                }
                _ => Err(SpecError::BadEnv(e)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cores = CoreCount::new(self.cores.unwrap_or(1))?;
        let memory = self
            .memory
            .as_deref()
            .map(str::parse::<MemoryBytes>)
            .transpose()?;
        if let Some(k) = self
            .labels
            .keys()
            .find(|k| k.starts_with(labels::RESERVED_PREFIX))
        {
            return Err(SpecError::ReservedLabel(k.clone()));
        }
        let retries = self.retries.unwrap_or(0);
        if retries > MAX_RETRIES {
            return Err(SpecError::TooManyRetries(retries));
        }
        if let Some(n) = &self.name
            && (n.is_empty() || n.len() > 128 || n.chars().any(char::is_control))
        {
            return Err(SpecError::BadName(n.clone()));
        }
        Ok(TaskSpec {
            image,
            command: self.command,
            env,
            cores,
            memory,
            labels: self.labels,
            retries,
            name: self.name,
            priority: self.priority.unwrap_or(0),
            parent: None,
            after: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_one_core_no_retries_priority_zero() {
        let s = TaskSpec::builder(" img ").build().unwrap();
        assert_eq!(s.image, "img");
        assert_eq!(s.cores.get(), 1);
        assert_eq!((s.retries, s.priority, s.memory), (0, 0, None));
        assert!(s.command.is_empty() && s.env.is_empty() && s.labels.is_empty());
    }

    #[test]
    fn every_field_is_checked() {
        let b = || TaskSpec::builder("i");
        assert_eq!(TaskSpec::builder("").build(), Err(SpecError::EmptyImage));
        let is = |got: Result<TaskSpec, SpecError>, want: fn(&SpecError) -> bool| {
            assert!(got.as_ref().is_err_and(want), "{got:?}");
        };
        is(TaskSpec::builder("a b").build(), |e| {
            matches!(e, SpecError::BadImage(_))
        });
        is(b().env("=1").build(), |e| matches!(e, SpecError::BadEnv(_)));
        is(b().env("A").build(), |e| matches!(e, SpecError::BadEnv(_)));
        is(b().label("mesh.x", "1").build(), |e| {
            matches!(e, SpecError::ReservedLabel(_))
        });
        is(b().retries(MAX_RETRIES + 1).build(), |e| {
            matches!(e, SpecError::TooManyRetries(_))
        });
        is(b().name("").build(), |e| matches!(e, SpecError::BadName(_)));
        is(b().name("a\nb").build(), |e| {
            matches!(e, SpecError::BadName(_))
        });
        is(b().command(["a", "b\0"]).build(), |e| {
            *e == SpecError::NulInCommand(1)
        });
        is(b().cores(0).build(), |e| {
            matches!(e, SpecError::Resource(_))
        });
        is(b().memory("lots").build(), |e| {
            matches!(e, SpecError::Resource(_))
        });
        let ok = b()
            .env("A=b=c")
            .label("team", "x")
            .cores(2)
            .memory("64M")
            .build()
            .unwrap();
        assert_eq!(ok.env, vec![("A".into(), "b=c".into())]);
        assert_eq!(ok.cores.get(), 2);
        assert_eq!(ok.memory, Some("64M".parse().unwrap()));
    }
}
