//! Tests of `client`.

use super::*;
use mesh_protocol::TaskState;

const REQ: &str = "GET /v1/tasks/t1";

#[test]
fn error_body_becomes_the_message() {
    let e = agent_error(StatusCode::NOT_FOUND, REQ, br#"{"error":"no task t1"}"#);
    assert!(matches!(
        e,
        ClientError::Agent {
            status: StatusCode::NOT_FOUND,
            ..
        }
    ));
    assert_eq!(e.to_string(), "no task t1");
}

#[test]
fn other_bodies_show_status_and_text() {
    let e = agent_error(StatusCode::BAD_GATEWAY, REQ, b"  upstream down\n");
    assert_eq!(
        e.to_string(),
        "agent answered 502 Bad Gateway to GET /v1/tasks/t1: upstream down"
    );
    let e = agent_error(StatusCode::INTERNAL_SERVER_ERROR, REQ, b"");
    assert!(e.to_string().ends_with("(empty body)"));
    let long = "é".repeat(MAX_SHOWN_BODY + 10);
    let e = agent_error(StatusCode::INTERNAL_SERVER_ERROR, REQ, long.as_bytes());
    assert!(e.to_string().ends_with('…'));
}

#[test]
fn refusals_carry_their_status_and_nothing_else_does() {
    let refused = agent_error(StatusCode::CONFLICT, REQ, br#"{"error":"ended"}"#);
    assert_eq!(refused.status(), Some(StatusCode::CONFLICT));
    let raw = agent_error(StatusCode::BAD_GATEWAY, REQ, b"down");
    assert_eq!(raw.status(), Some(StatusCode::BAD_GATEWAY));
    let unreachable = ClientError::Unreachable {
        node: "http://n:1".into(),
        cause: "Connection refused".into(),
    };
    assert_eq!(unreachable.status(), None);
    let timeout = ClientError::WaitTimeout {
        id: TaskId::new("t1").unwrap(),
        limit: Duration::from_millis(300),
        last: Some(TaskState::Running),
    };
    assert_eq!(timeout.status(), None);
    assert_eq!(
        timeout.to_string(),
        "timed out after 300ms waiting for task t1 (state: running)"
    );
}

#[test]
fn describes_requests_with_query() {
    let url = Url::parse("http://n:1/v1/tasks/t1/logs?follow=true").unwrap();
    assert_eq!(
        describe(&Method::GET, &url),
        "GET /v1/tasks/t1/logs?follow=true"
    );
}
