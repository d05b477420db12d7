//! Who this instance is: the hostname and the task identity the agent passes
//! in the environment. Read once at the edge and handed to the modes.

use std::env;
use std::fs;

/// Used when neither `/etc/hostname` nor `$HOSTNAME` names the host.
pub const UNKNOWN_HOST: &str = "unknown";

/// The instance's identity, as `http` and `count` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub hostname: String,
    /// `$MESH_TASK_ID`, empty if unset.
    pub task_id: String,
    /// `$MESH_TASK_INDEX`, empty if unset.
    pub task_index: String,
    /// `$MESH_TASK_ATTEMPT`, empty if unset.
    pub task_attempt: String,
    /// `$MESH_NODE` (the node whose agent started it), empty if unset.
    pub node: String,
    /// `$MESH_CPUS` (the cores it was given, in the node's topology), empty
    /// if unset.
    pub cpus: String,
}

impl Identity {
    /// Reads `/etc/hostname` (Docker mounts it into every container, even
    /// FROM-scratch ones), then `$HOSTNAME`, and the `MESH_TASK_*` variables.
    pub fn from_environment() -> Self {
        let from_file = fs::read_to_string("/etc/hostname").ok();
        let hostname = pick_hostname(from_file.as_deref(), env::var("HOSTNAME").ok().as_deref());
        Self {
            hostname,
            task_id: env::var("MESH_TASK_ID").unwrap_or_default(),
            task_index: env::var("MESH_TASK_INDEX").unwrap_or_default(),
            task_attempt: env::var("MESH_TASK_ATTEMPT").unwrap_or_default(),
            node: env::var("MESH_NODE").unwrap_or_default(),
            cpus: env::var("MESH_CPUS").unwrap_or_default(),
        }
    }

    /// The line `count` appends: `HOSTNAME TASK_ID TASK_INDEX\n`.
    pub fn count_line(&self) -> String {
        format!("{} {} {}\n", self.hostname, self.task_id, self.task_index)
    }
}

/// The first non-blank of the file's first line and the variable.
fn pick_hostname(file: Option<&str>, var: Option<&str>) -> String {
    [file.and_then(|text| text.lines().next()), var]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|name| !name.is_empty())
        .unwrap_or(UNKNOWN_HOST)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_prefers_file_then_variable() {
        assert_eq!(pick_hostname(Some("box1\n"), Some("box2")), "box1");
        assert_eq!(pick_hostname(Some("  \n"), Some("box2")), "box2");
        assert_eq!(pick_hostname(None, Some(" box2 ")), "box2");
        assert_eq!(pick_hostname(None, None), UNKNOWN_HOST);
        assert_eq!(pick_hostname(Some(""), Some("")), UNKNOWN_HOST);
    }

    #[test]
    fn count_line_keeps_empty_fields() {
        let id = Identity {
            hostname: "h".into(),
            task_id: String::new(),
            task_index: "3".into(),
            task_attempt: "1".into(),
            node: "n1".into(),
            cpus: "0-1".into(),
        };
        assert_eq!(id.count_line(), "h  3\n");
    }
}
