//! What a user asks a task to be: `TaskSpec`, built only through
//! `TaskSpecBuilder::build`, the one place where a request's fields are
//! checked.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::TaskId;
use crate::image::PullPolicy;
use crate::labels;
use crate::resources::{CoreCount, MemoryBytes, ResourceError};

/// Most retries a task may ask for.
pub const MAX_RETRIES: u32 = 100;

/// Bounds on a spec's size, so that every record fits an RPC frame and a
/// page of the list holds many: checked when a request is built and
/// whenever a spec is decoded (peer calls, the store, JSON).
pub const MAX_IMAGE_BYTES: usize = 1024;
pub const MAX_NAME_BYTES: usize = 128;
pub const MAX_COMMAND_ARGS: usize = 1024;
/// The command's arguments together.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
pub const MAX_ENV_ENTRIES: usize = 1024;
/// Keys and values together.
pub const MAX_ENV_BYTES: usize = 64 * 1024;
pub const MAX_LABELS: usize = 128;
/// Keys and values together.
pub const MAX_LABELS_BYTES: usize = 16 * 1024;
/// Tasks one task may wait for (`--after`).
pub const MAX_AFTER: usize = 256;
/// What the agent may add to a user's environment (an array member's
/// index and count): a decoded spec may exceed the env bounds by this.
const AGENT_ENV_ENTRIES: usize = 8;
const AGENT_ENV_BYTES: usize = 1024;

/// A validated task request. Decoding checks it as building does (see
/// `TaskSpec::check`), so a spec from a peer, the store or a client is as
/// bounded as one built here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Unchecked")]
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
    /// When the running node pulls the image (`--pull`).
    #[serde(default)]
    pub pull: PullPolicy,
}

/// Why a task request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("image is empty: name a local image, e.g. mesh-testsvc:latest")]
    EmptyImage,
    #[error(transparent)]
    BadImage(#[from] crate::image::ImageRefError),
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
    #[error("{what} is too large: {size} {unit}, the limit is {limit}")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
        unit: &'static str,
    },
}

/// `TaskSpec` as it is encoded, before the checks.
#[derive(Deserialize)]
struct Unchecked {
    image: String,
    command: Vec<String>,
    env: Vec<(String, String)>,
    cores: CoreCount,
    memory: Option<MemoryBytes>,
    labels: BTreeMap<String, String>,
    retries: u32,
    name: Option<String>,
    priority: i32,
    parent: Option<TaskId>,
    after: Vec<TaskId>,
    #[serde(default)]
    pull: PullPolicy,
}

impl TryFrom<Unchecked> for TaskSpec {
    type Error = SpecError;

    fn try_from(u: Unchecked) -> Result<Self, Self::Error> {
        let spec = TaskSpec {
            image: u.image,
            command: u.command,
            env: u.env,
            cores: u.cores,
            memory: u.memory,
            labels: u.labels,
            retries: u.retries,
            name: u.name,
            priority: u.priority,
            parent: u.parent,
            after: u.after,
            pull: u.pull,
        };
        spec.check(AGENT_ENV_ENTRIES, AGENT_ENV_BYTES)?;
        Ok(spec)
    }
}

fn bound(
    what: &'static str,
    size: usize,
    limit: usize,
    unit: &'static str,
) -> Result<(), SpecError> {
    if size > limit {
        return Err(SpecError::TooLarge {
            what,
            size,
            limit,
            unit,
        });
    }
    Ok(())
}

impl TaskSpec {
    /// Every rule a spec keeps, whether built or decoded; the environment
    /// may exceed its bounds by `extra_env` entries and `extra_env_bytes`
    /// (what the agent adds).
    fn check(&self, extra_env: usize, extra_env_bytes: usize) -> Result<(), SpecError> {
        if self.image.is_empty() {
            return Err(SpecError::EmptyImage);
        }
        bound("image", self.image.len(), MAX_IMAGE_BYTES, "bytes")?;
        crate::image::ImageRef::parse(&self.image)?;
        if let Some(i) = self.command.iter().position(|a| a.contains('\0')) {
            return Err(SpecError::NulInCommand(i));
        }
        bound("command", self.command.len(), MAX_COMMAND_ARGS, "arguments")?;
        let command_bytes = self.command.iter().map(String::len).sum();
        bound("command", command_bytes, MAX_COMMAND_BYTES, "bytes")?;
        if let Some((k, v)) = self
            .env
            .iter()
            .find(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0'))
        {
            return Err(SpecError::BadEnv(format!("{k}={v}")));
        }
        bound(
            "env",
            self.env.len(),
            MAX_ENV_ENTRIES + extra_env,
            "entries",
        )?;
        let env_bytes = self.env.iter().map(|(k, v)| k.len() + v.len() + 1).sum();
        bound("env", env_bytes, MAX_ENV_BYTES + extra_env_bytes, "bytes")?;
        if let Some(k) = self
            .labels
            .keys()
            .find(|k| k.starts_with(labels::RESERVED_PREFIX))
        {
            return Err(SpecError::ReservedLabel(k.clone()));
        }
        bound("labels", self.labels.len(), MAX_LABELS, "labels")?;
        let label_bytes = self.labels.iter().map(|(k, v)| k.len() + v.len()).sum();
        bound("labels", label_bytes, MAX_LABELS_BYTES, "bytes")?;
        if self.retries > MAX_RETRIES {
            return Err(SpecError::TooManyRetries(self.retries));
        }
        if let Some(n) = &self.name
            && (n.is_empty() || n.len() > MAX_NAME_BYTES || n.chars().any(char::is_control))
        {
            return Err(SpecError::BadName(n.clone()));
        }
        bound("--after", self.after.len(), MAX_AFTER, "tasks")?;
        Ok(())
    }

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
    pub(crate) pull: Option<PullPolicy>,
    pub(crate) after: Vec<TaskId>,
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

    /// When the running node pulls the image (default: when missing).
    pub fn pull(mut self, policy: PullPolicy) -> Self {
        self.pull = Some(policy);
        self
    }

    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Tasks that must succeed first.
    pub fn after(mut self, tasks: impl IntoIterator<Item = TaskId>) -> Self {
        self.after = tasks.into_iter().collect();
        self
    }

    /// Checks every field; the only way to make a `TaskSpec` from input.
    pub fn build(self) -> Result<TaskSpec, SpecError> {
        let image = self.image.trim().to_owned();
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
        let spec = TaskSpec {
            image,
            command: self.command,
            env,
            cores,
            memory,
            labels: self.labels,
            retries: self.retries.unwrap_or(0),
            name: self.name,
            priority: self.priority.unwrap_or(0),
            parent: None,
            after: self.after,
            pull: self.pull.unwrap_or_default(),
        };
        spec.check(0, 0)?;
        Ok(spec)
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
        is(TaskSpec::builder("Nosuch/image:1").build(), |e| {
            e.to_string().contains("lowercase")
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

    #[test]
    fn sizes_are_bounded_when_built() {
        let too_large = |b: TaskSpecBuilder, what: &str| {
            let e = b.build().unwrap_err();
            assert!(
                matches!(&e, SpecError::TooLarge { what: w, .. } if *w == what),
                "{e}"
            );
            assert!(e.to_string().contains("the limit is"), "{e}");
        };
        let b = || TaskSpec::builder("i");
        too_large(TaskSpec::builder("i".repeat(MAX_IMAGE_BYTES + 1)), "image");
        too_large(b().command(vec!["a"; MAX_COMMAND_ARGS + 1]), "command");
        too_large(b().command(["a".repeat(MAX_COMMAND_BYTES + 1)]), "command");
        let mut many = b();
        for i in 0..=MAX_ENV_ENTRIES {
            many = many.env(format!("K{i}=v"));
        }
        too_large(many, "env");
        too_large(b().env(format!("K={}", "v".repeat(MAX_ENV_BYTES))), "env");
        let mut labels = b();
        for i in 0..=MAX_LABELS {
            labels = labels.label(format!("l{i}"), "v");
        }
        too_large(labels, "labels");
        too_large(b().label("l", "v".repeat(MAX_LABELS_BYTES)), "labels");
        let ids = (0..=MAX_AFTER).map(|i| TaskId::new(format!("t{i}")).unwrap());
        too_large(b().after(ids), "--after");
        assert!(matches!(
            b().name("n".repeat(MAX_NAME_BYTES + 1)).build(),
            Err(SpecError::BadName(_))
        ));
        // At the limits: fine.
        b().env(format!("K={}", "v".repeat(MAX_ENV_BYTES - 2)))
            .command(["a".repeat(MAX_COMMAND_BYTES)])
            .build()
            .unwrap();
    }

    #[test]
    fn decoding_checks_what_building_does() {
        let ok = TaskSpec::builder("img").env("A=1").build().unwrap();
        let bytes = crate::wire::encode(&ok).unwrap();
        assert_eq!(crate::wire::decode::<TaskSpec>(&bytes).unwrap(), ok);
        // What the agent adds to an array member still decodes.
        let mut member = ok.clone();
        member.env.push(("MESH_TASK_INDEX".into(), "9999".into()));
        member.env.push(("MESH_TASK_COUNT".into(), "10000".into()));
        let bytes = crate::wire::encode(&member).unwrap();
        assert_eq!(crate::wire::decode::<TaskSpec>(&bytes).unwrap(), member);
        // Specs no client could have built are refused, on the wire and in JSON.
        let mut big = ok.clone();
        big.env = (0..MAX_ENV_ENTRIES + AGENT_ENV_ENTRIES + 1)
            .map(|i| (format!("K{i}"), String::new()))
            .collect();
        assert!(crate::wire::decode::<TaskSpec>(&crate::wire::encode(&big).unwrap()).is_err());
        let mut reserved = ok.clone();
        reserved.labels.insert("mesh.node".into(), "x".into());
        let json = serde_json::to_string(&reserved).unwrap();
        let e = serde_json::from_str::<TaskSpec>(&json).unwrap_err();
        assert!(e.to_string().contains("reserved"), "{e}");
        let mut empty = ok;
        empty.image.clear();
        assert!(crate::wire::decode::<TaskSpec>(&crate::wire::encode(&empty).unwrap()).is_err());
    }
}
