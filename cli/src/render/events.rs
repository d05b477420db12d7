//! One line per event: time (UTC), node, kind, subject, reason.

use mesh_protocol::events::Event;
use mesh_protocol::events::when::format_utc;

/// `2026-12-01T12:00:00.123Z  n1  task-replaced       t-42  why…`
pub fn event_line(e: &Event) -> String {
    format!(
        "{}  {:<8}  {:<18}  {}  {}\n",
        format_utc(e.time_ms),
        e.node.as_str(),
        e.kind.as_str(),
        e.subject,
        e.reason
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_protocol::NodeId;
    use mesh_protocol::events::EventKind;

    #[test]
    fn a_line_names_when_where_what_and_why() {
        let e = Event {
            time_ms: 1_764_590_400_123,
            node: NodeId::new("n1").unwrap(),
            seq: 9,
            kind: EventKind::TaskReplaced,
            subject: "t-42".into(),
            reason: "its node n2 died".into(),
        };
        assert_eq!(
            event_line(&e),
            "2025-12-01T12:00:00.123Z  n1        task-replaced       t-42  its node n2 died\n"
        );
    }
}
