//! Tasks: the `meshctl tasks` table and the `meshctl task` detail view.

use mesh_protocol::TaskRecord;
use mesh_protocol::api::CopyStatus;
use mesh_protocol::attempts::TaskView;

use super::{age, key_values, or_dash, table};

const COLUMNS: [&str; 12] = [
    "ID", "NAME", "OWNER", "STATE", "NODE", "CORES", "CPUS", "NUMA", "ATTEMPT", "EXIT", "AGE",
    "IMAGE",
];

/// One row per task, in the order given; just the header when there are none.
pub fn tasks_table(tasks: &[TaskRecord], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let alloc = t.allocation.as_ref();
            vec![
                t.id.to_string(),
                or_dash(t.spec.name.as_deref()),
                t.owner.to_string(),
                state_of(t),
                t.node.to_string(),
                t.spec.cores.to_string(),
                or_dash(alloc.map(|a| &a.cpus)),
                or_dash(alloc.map(|a| &a.mems)),
                t.attempt.to_string(),
                or_dash(t.exit_code),
                age(now_ms, t.created_ms),
                t.spec.image.clone(),
            ]
        })
        .collect();
    table(&COLUMNS, &rows)
}

/// Its state as shown: `pulling 43% (3/5 layers)` while its image comes.
fn state_of(t: &TaskRecord) -> String {
    match &t.pull {
        Some(p) if t.shown_state() == "pulling" => format!("pulling {p}"),
        _ => t.shown_state().to_owned(),
    }
}

/// Everything about one task, a `key: value` line each; `copy` is what
/// its keeper holds (or why that is not known).
pub fn task(t: &TaskRecord, copy: Result<&CopyStatus, &str>, now_ms: u64) -> String {
    key_values(&task_rows(t, copy, now_ms))
}

/// The lines of [`task`].
fn task_rows(
    t: &TaskRecord,
    copy: Result<&CopyStatus, &str>,
    now_ms: u64,
) -> Vec<(&'static str, String)> {
    let alloc = t.allocation.as_ref();
    let ago = |ms: Option<u64>| or_dash(ms.map(|ms| format!("{} ago", age(now_ms, ms))));
    let state = if t.kill_requested && !t.state.is_terminal() {
        format!("{} (kill requested)", state_of(t))
    } else {
        state_of(t)
    };
    let command = if t.spec.command.is_empty() {
        "(the image's own)".to_owned()
    } else {
        shell_words(&t.spec.command)
    };
    let labels = if t.spec.labels.is_empty() {
        "-".to_owned()
    } else {
        let pairs: Vec<String> = t
            .spec
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.join(", ")
    };
    vec![
        ("id", t.id.to_string()),
        ("name", or_dash(t.spec.name.as_deref())),
        ("owner", t.owner.to_string()),
        ("state", state),
        ("node", t.node.to_string()),
        ("image", t.spec.image.clone()),
        ("command", command),
        ("cores asked", t.spec.cores.to_string()),
        ("cpus", or_dash(alloc.map(|a| &a.cpus))),
        ("numa", or_dash(alloc.map(|a| &a.mems))),
        (
            "memory",
            t.spec
                .memory
                .map_or_else(|| "no limit".to_owned(), |m| m.to_string()),
        ),
        ("priority", t.spec.priority.to_string()),
        ("labels", labels),
        (
            "attempt/retries",
            format!("{}/{}", t.attempt, t.spec.retries),
        ),
        ("keeper", or_dash(t.keeper.as_ref())),
        (
            "copy",
            match copy {
                Ok(c) => c.to_string(),
                Err(why) => format!("unknown: {why}"),
            },
        ),
        ("container", or_dash(t.container.as_deref())),
        ("exit code", or_dash(t.exit_code)),
        ("message", or_dash(t.message.as_deref())),
        ("created", ago(Some(t.created_ms))),
        ("started", ago(t.started_ms)),
        ("finished", ago(t.finished_ms)),
    ]
}

/// [`task`], then the other attempts still running somewhere, if any: an
/// attempt the task was re-placed from while its node was away, until that
/// node hears it was superseded and stops it.
pub fn task_view(v: &TaskView, copy: Result<&CopyStatus, &str>, now_ms: u64) -> String {
    let mut rows = task_rows(&v.record, copy, now_ms);
    if !v.also_running.is_empty() {
        let others: Vec<String> = v
            .also_running
            .iter()
            .map(|a| format!("attempt {} on {} ({})", a.attempt, a.node, a.state))
            .collect();
        rows.push((
            "also running",
            format!(
                "{} (superseded; stopped once its node hears)",
                others.join(", ")
            ),
        ));
    }
    key_values(&rows)
}

/// A command line as one would type it: arguments with blanks or shell
/// characters in single quotes.
fn shell_words(args: &[String]) -> String {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect();
    quoted.join(" ")
}

#[cfg(test)]
mod tests {

    use mesh_protocol::attempts::OtherAttempt;
    use mesh_protocol::{Allocation, CpuSet, NodeId, TaskId, TaskSpec, TaskState};

    use super::*;

    fn record(id: &str, state: TaskState) -> TaskRecord {
        let spec = TaskSpec::builder("mesh-testsvc:latest")
            .command(["sh", "-c", "echo 'hi'"])
            .cores(4)
            .memory("512M")
            .label("team", "ml")
            .retries(2)
            .name("train")
            .build()
            .unwrap();
        let mut r = TaskRecord::new(
            TaskId::new(id).unwrap(),
            spec,
            NodeId::new("n1").unwrap(),
            0,
            1_000,
        );
        r.state = state;
        r
    }

    fn running() -> TaskRecord {
        let mut r = record("t1", TaskState::Running)
            .owned_by(mesh_protocol::UserName::new("alice").unwrap());
        r.attempt = 1;
        r.allocation = Some(Allocation {
            cores: vec![0, 1],
            cpus: CpuSet::from_iter(0..4),
            mems: CpuSet::from_iter([0]),
        });
        r.container = Some("mesh-t1-1".into());
        r.started_ms = Some(2_000);
        r
    }

    #[test]
    fn empty_list_shows_the_header() {
        assert_eq!(
            tasks_table(&[], 0),
            "ID  NAME  OWNER  STATE  NODE  CORES  CPUS  NUMA  ATTEMPT  EXIT  AGE  IMAGE\n"
        );
    }

    #[test]
    fn table_shows_allocation_and_age() {
        let mut done = record("t2", TaskState::Failed);
        done.spec.name = None;
        done.exit_code = Some(3);
        let text = tasks_table(&[running(), done], 181_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let cells = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
        assert_eq!(
            cells(1),
            [
                "t1",
                "train",
                "alice",
                "running",
                "n1",
                "4",
                "0-3",
                "0",
                "1",
                "-",
                "3m",
                "mesh-testsvc:latest"
            ]
        );
        assert_eq!(
            cells(2),
            [
                "t2",
                "-",
                "unknown",
                "failed",
                "n1",
                "4",
                "-",
                "-",
                "0",
                "3",
                "3m",
                "mesh-testsvc:latest"
            ]
        );
    }

    #[test]
    fn detail_lists_every_field() {
        let mut r = running();
        r.kill_requested = true;
        let copy = CopyStatus::Kept {
            node: NodeId::new("n2").unwrap(),
            current: true,
        };
        let text = task(&r, Ok(&copy), 7_000);
        for line in [
            "id:              t1",
            "owner:           alice",
            "state:           running (kill requested)",
            "command:         sh -c 'echo '\\''hi'\\'''",
            "cpus:            0-3",
            "numa:            0",
            "memory:          512M",
            "labels:          team=ml",
            "attempt/retries: 1/2",
            "copy:            kept on n2",
            "container:       mesh-t1-1",
            "exit code:       -",
            "created:         6s ago",
            "started:         5s ago",
            "finished:        -",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn a_pull_under_way_shows_as_the_state() {
        let mut r = record("t4", TaskState::Starting);
        r.pull = Some(mesh_protocol::image::PullProgress {
            layers_done: 3,
            layers: 5,
            bytes_done: 43,
            bytes: 100,
        });
        let text = task(&r, Err("-"), 0);
        assert!(
            text.contains("state:           pulling 43% (3/5 layers)\n"),
            "{text}"
        );
        assert!(tasks_table(&[r], 0).contains("pulling 43% (3/5 layers)"));
    }

    #[test]
    fn a_copy_not_kept_says_where_and_why() {
        let r = running();
        let copy = CopyStatus::NotKept {
            node: NodeId::new("n2").unwrap(),
            reason: "n2: cannot write the task store: No space left on device".into(),
        };
        let text = task(&r, Ok(&copy), 7_000);
        assert!(
            text.contains(
                "copy:            NOT KEPT on n2: n2: cannot write the task store: No space left on device\n"
            ),
            "{text}"
        );
        let text = task(&r, Err("the agent is older"), 7_000);
        assert!(
            text.contains("copy:            unknown: the agent is older\n"),
            "{text}"
        );
    }

    #[test]
    fn image_command_when_none_given() {
        let mut r = record("t3", TaskState::Queued);
        r.spec.command.clear();
        assert!(task(&r, Err("-"), 0).contains("command:         (the image's own)\n"));
    }

    #[test]
    fn detail_names_the_other_attempts_still_running() {
        let view = TaskView {
            record: running(),
            also_running: vec![OtherAttempt {
                node: NodeId::new("n3").unwrap(),
                attempt: 1,
                state: TaskState::Running,
            }],
        };
        let text = task_view(&view, Err("-"), 7_000);
        assert!(
            text.lines().any(|l| l
                == "also running:    attempt 1 on n3 (running) (superseded; stopped once its node hears)"),
            "{text}"
        );
        let alone = TaskView {
            record: running(),
            also_running: Vec::new(),
        };
        assert_eq!(
            task_view(&alone, Err("-"), 7_000),
            task(&running(), Err("-"), 7_000)
        );
    }
}
