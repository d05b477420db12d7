use super::*;

fn run(task: &str, host: &str, opened: u64, closed: Option<u64>, code: Option<u8>) -> Interval {
    Interval {
        task: task.into(),
        attempt: "1".into(),
        host: host.into(),
        node: format!("node-{host}"),
        cpus: "0".into(),
        opened_ms: opened,
        closed_ms: closed,
        code,
    }
}

fn on(mut interval: Interval, node: &str, cpus: &str) -> Interval {
    interval.node = node.into();
    interval.cpus = cpus.into();
    interval
}

fn ids(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn listed(tasks: &[(&str, TaskState)]) -> BTreeMap<String, TaskState> {
    tasks.iter().map(|(t, s)| (t.to_string(), *s)).collect()
}

#[test]
fn a_clean_run_has_no_violation() {
    let found = check_tasks(
        &ids(&["a", "b", "c"]),
        &listed(&[
            ("a", TaskState::Succeeded),
            ("b", TaskState::Failed),
            ("c", TaskState::Succeeded),
        ]),
        &[
            // A failed attempt, then a retry that succeeds.
            run("a", "h1", 0, Some(100), Some(1)),
            run("a", "h2", 100, Some(300), Some(0)),
            // Killed with its host: closed without an end line.
            run("b", "h3", 0, Some(50), None),
            run("c", "h4", 10, Some(20), Some(0)),
        ],
        &[],
    );
    assert_eq!(found, []);
}

#[test]
fn unfinished_and_missing_tasks_are_violations() {
    let found = check_tasks(
        &ids(&["a", "b"]),
        &listed(&[("a", TaskState::Running)]),
        &[],
        &[],
    );
    assert_eq!(
        found,
        [
            Violation::NotFinal {
                task: "a".into(),
                state: "running".into()
            },
            Violation::Missing { task: "b".into() }
        ]
    );
}

#[test]
fn two_containers_at_once_overlap_even_when_one_never_closed() {
    let found = check_tasks(
        &ids(&["a"]),
        &listed(&[("a", TaskState::Failed)]),
        &[
            run("a", "h1", 0, Some(100), None),
            run("a", "h2", 99, Some(300), Some(1)),
        ],
        &[],
    );
    assert!(
        matches!(&found[..], [Violation::Overlap { task, .. }] if task == "a"),
        "{found:?}"
    );
    let found = check_tasks(
        &ids(&["a"]),
        &listed(&[("a", TaskState::Failed)]),
        &[
            run("a", "h2", 500, Some(600), Some(1)),
            run("a", "h1", 0, None, None),
        ],
        &[],
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].to_string().contains("still open"), "{}", found[0]);
}

#[test]
fn two_successes_are_a_violation_and_an_unseen_success_too() {
    let found = check_tasks(
        &ids(&["a", "b"]),
        &listed(&[("a", TaskState::Succeeded), ("b", TaskState::Succeeded)]),
        &[
            run("a", "h1", 0, Some(100), Some(0)),
            run("a", "h2", 200, Some(300), Some(0)),
            run("b", "h3", 0, Some(100), Some(1)),
        ],
        &[],
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].rule(), "succeeded twice");
    assert!(!found[0].is_known_limit());
    assert_eq!(found[1], Violation::SucceededUnseen { task: "b".into() });
}

#[test]
fn panics_are_found_in_logs() {
    let log = "INFO started\nthread 'tokio-runtime-worker' panicked at src/x.rs:1:1:\nboom\n";
    assert_eq!(
        panics("n2", log),
        [Violation::Panic {
            node: "n2".into(),
            line: "thread 'tokio-runtime-worker' panicked at src/x.rs:1:1:".into()
        }]
    );
    assert_eq!(panics("n2", "all fine\n"), []);
}

#[test]
fn a_second_success_after_an_end_on_a_cut_off_node_is_the_known_limit() {
    let runs = [
        on(run("a", "h1", 0, Some(5_000), Some(0)), "n1", "0"),
        on(run("a", "h2", 20_000, Some(25_000), Some(0)), "n2", "0"),
    ];
    let accepted = ids(&["a"]);
    let listed = listed(&[("a", TaskState::Succeeded)]);
    let cut = |node: &str, from_ms, to_ms| Isolation {
        node: node.into(),
        from_ms,
        to_ms,
    };
    // n1 was cut off from 4 s (the end at 5 s went unheard), or killed
    // 1.5 s after it (the push may not have left yet).
    for window in [cut("n1", 4_000, 18_000), cut("n1", 6_500, 18_000)] {
        let found = check_tasks(&accepted, &listed, &runs, &[window]);
        assert!(matches!(&found[..], [v] if v.is_known_limit()), "{found:?}");
    }
    // Long before the cut, or another node cut: the keeper had heard.
    for window in [cut("n1", 9_000, 18_000), cut("n2", 4_000, 18_000)] {
        let found = check_tasks(&accepted, &listed, &runs, &[window]);
        assert!(
            matches!(&found[..], [v] if !v.is_known_limit()),
            "{found:?}"
        );
    }
}

#[test]
fn two_containers_of_one_node_on_one_core_at_once_is_a_violation() {
    let clean = [
        on(run("a", "h1", 0, Some(100), Some(0)), "n1", "0-1"),
        // Same node, other cores, same time.
        on(run("b", "h2", 50, Some(150), Some(0)), "n1", "2"),
        // Same cores, another node.
        on(run("c", "h3", 50, Some(150), Some(0)), "n2", "0-1"),
        // Same node and core, after the first.
        on(run("d", "h4", 100, Some(200), Some(0)), "n1", "1,3"),
    ];
    assert_eq!(check_cores(&clean), []);
    let mut clash = clean.to_vec();
    clash.push(on(run("e", "h5", 90, Some(95), None), "n1", "1"));
    let found = check_cores(&clash);
    assert!(
        matches!(&found[..], [Violation::CoreTwice { node, .. }] if node == "n1"),
        "{found:?}"
    );
}

#[test]
fn an_audit_log_with_a_core_given_twice_is_a_core_held_twice() {
    let line = |seq: u64, event: &str, holder: &str| {
        format!(
            r#"{{"seq":{seq},"time_ms":{seq},"event":"{event}","holder":"{holder}","kind":"task","cores":[2],"numa":[0]}}"#
        )
    };
    let clean = [
        line(0, "allocate", "a"),
        line(1, "release", "a"),
        line(2, "allocate", "b"),
    ]
    .join("\n");
    assert!(audit("n3", &mesh_protocol::audit::check(&clean)).is_empty());
    let twice = [line(0, "allocate", "a"), line(1, "allocate", "b")].join("\n");
    let found = audit("n3", &mesh_protocol::audit::check(&twice));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].rule(), "core held twice at once");
    assert!(found[0].to_string().contains("core 2"), "{}", found[0]);
}
