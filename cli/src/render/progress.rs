//! The one-line status `meshctl submit --wait` and `meshctl logs -f` show
//! while a task waits for its start: its state, and while its image is
//! pulled a bar with bytes and layers.

use mesh_protocol::TaskRecord;
use mesh_protocol::image::PullProgress;

/// Characters in the bar between its brackets.
const BAR_WIDTH: usize = 24;

/// `t1: pulling 127.0.0.1:5000/app:1 on n2 [##########..............] 43% 4.4/10.2 MB, 3/5 layers`,
/// or `t1: queued`, `t1: running on n2 (attempt 1)`.
pub fn progress_line(t: &TaskRecord) -> String {
    let state = t.shown_state();
    match &t.pull {
        // Before the registry (or a peer) has said what the image is made of.
        Some(p) if state == "pulling" && p.layers == 0 && p.bytes == 0 => format!(
            "{}: pulling {} on {} (starting)",
            t.id, t.spec.image, t.node
        ),
        Some(p) if state == "pulling" => format!(
            "{}: pulling {} on {} {} {}% {}, {}/{} layers",
            t.id,
            t.spec.image,
            t.node,
            bar(p),
            p.percent(),
            bytes(p),
            p.layers_done,
            p.layers
        ),
        _ if t.state.is_terminal() => format!("{}: {state}", t.id),
        _ if state == "queued" => match &t.message {
            Some(why) => format!("{}: queued ({why})", t.id),
            None => format!("{}: queued", t.id),
        },
        _ => format!("{}: {state} on {} (attempt {})", t.id, t.node, t.attempt),
    }
}

/// `[##########..............]`: done by bytes when sizes are known.
fn bar(p: &PullProgress) -> String {
    let filled = usize::from(p.percent()) * BAR_WIDTH / 100;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(BAR_WIDTH - filled))
}

/// `4.4/10.2 MB`, or `?` before any layer's size is known.
fn bytes(p: &PullProgress) -> String {
    if p.bytes == 0 {
        return "? MB".into();
    }
    let mb = |b: u64| b as f64 / 1e6;
    format!("{:.1}/{:.1} MB", mb(p.bytes_done), mb(p.bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_protocol::task::TaskSpec;
    use mesh_protocol::{NodeId, TaskId, TaskState};

    fn record(state: TaskState, pull: Option<PullProgress>) -> TaskRecord {
        let spec = TaskSpec::builder("127.0.0.1:5000/app:1").build().unwrap();
        let mut r = TaskRecord::new(
            TaskId::new("t1").unwrap(),
            spec,
            NodeId::new("n2").unwrap(),
            0,
            0,
        );
        r.state = state;
        r.attempt = 1;
        r.pull = pull;
        r
    }

    #[test]
    fn a_pull_shows_a_bar_bytes_and_layers() {
        let p = PullProgress {
            layers_done: 3,
            layers: 5,
            bytes_done: 4_400_000,
            bytes: 10_200_000,
        };
        assert_eq!(
            progress_line(&record(TaskState::Starting, Some(p))),
            "t1: pulling 127.0.0.1:5000/app:1 on n2 [##########..............] 43% 4.4/10.2 MB, 3/5 layers"
        );
        let unknown = PullProgress {
            layers: 2,
            ..PullProgress::default()
        };
        assert!(
            progress_line(&record(TaskState::Starting, Some(unknown)))
                .contains("[........................] 0% ? MB, 0/2 layers")
        );
        assert_eq!(
            progress_line(&record(TaskState::Starting, Some(PullProgress::default()))),
            "t1: pulling 127.0.0.1:5000/app:1 on n2 (starting)"
        );
    }

    #[test]
    fn other_states_say_where_it_is() {
        assert_eq!(
            progress_line(&record(TaskState::Queued, None)),
            "t1: queued"
        );
        assert_eq!(
            progress_line(&record(TaskState::Running, None)),
            "t1: running on n2 (attempt 1)"
        );
        assert_eq!(
            progress_line(&record(TaskState::Succeeded, None)),
            "t1: succeeded"
        );
        let mut waiting = record(TaskState::Queued, None);
        waiting.message = Some("no room: 0 of 4 cores free".into());
        assert_eq!(
            progress_line(&waiting),
            "t1: queued (no room: 0 of 4 cores free)"
        );
    }
}
