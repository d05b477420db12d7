//! `GET /v1/events` and `meshctl`'s client for it: a task's life told in
//! order on real Docker, a mesh-wide follower that sees another node's
//! events as they happen, server-sent events for browsers, a peer's death
//! with its reason, and clear refusals of bad asks.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use mesh_protocol::TaskState;
use mesh_protocol::events::{Event, EventKind};
use meshctl::client::EventsAsk;

/// Every event `api`'s node shows now (the whole mesh's).
async fn events(api: &Api) -> Vec<Event> {
    let stream = api.client().events(EventsAsk::default()).await.unwrap();
    stream.map(|e| e.unwrap()).collect().await
}

fn kinds_of(events: &[Event], subject: &str) -> Vec<EventKind> {
    events
        .iter()
        .filter(|e| e.subject == subject)
        .map(|e| e.kind)
        .collect()
}

#[tokio::test]
async fn a_task_life_is_told_in_order_on_docker() {
    let agent = Setup::docker("events")
        .topology("numa:1 core:2 pu:1")
        .start(&[])
        .await;
    let mut fails = task(1, &["exit", "3"]);
    fails.retries = Some(1);
    let t = agent.api.submit(&fails).await.id;
    agent.api.wait_state(&t, TaskState::Failed, 60).await;
    let told = wait_until(
        "the task's end is told",
        Duration::from_secs(10),
        || async {
            let all = events(&agent.api).await;
            let kinds = kinds_of(&all, t.as_str());
            if kinds.last() == Some(&EventKind::TaskExited) {
                Ok(all)
            } else {
                Err(kinds)
            }
        },
    )
    .await;
    use EventKind::*;
    assert_eq!(
        kinds_of(&told, t.as_str()),
        [
            TaskAccepted,
            TaskPlaced,
            TaskStarted,
            TaskRetried,
            TaskStarted,
            TaskExited
        ],
        "{told:#?}"
    );
    let ended = told.iter().rfind(|e| e.subject == t.as_str()).unwrap();
    assert_eq!(ended.reason, "failed: exited with code 3", "{ended:?}");
    let retried = told.iter().find(|e| e.kind == TaskRetried).unwrap();
    assert!(retried.reason.contains("retry 1 of 1"), "{retried:?}");
    // Numbers grow with time on one node.
    assert!(told.windows(2).all(|w| w[0].seq < w[1].seq), "{told:#?}");
}

#[tokio::test]
async fn a_follower_on_one_node_sees_another_nodes_events_and_a_death() {
    let mut agents = Setup::memory("eventsfollow")
        .topology("numa:1 core:1 pu:1")
        .cluster(2)
        .await;
    let (a, b) = (&agents[0], &agents[1]);
    let ask = EventsAsk {
        follow: true,
        ..Default::default()
    };
    let mut follow = Box::pin(b.api.client().events(ask).await.unwrap());
    // Submitted through a, killed while queued there.
    let t1 = a.api.submit(&sleep_task(1, "60")).await.id;
    let t2 = a.api.submit(&sleep_task(1, "60")).await.id;
    let waits = a.api.submit(&sleep_task(1, "60")).await.id;
    a.api.kill(&waits).await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !seen
        .iter()
        .any(|e: &Event| e.kind == EventKind::TaskKilled && e.subject == waits.as_str())
    {
        let next = tokio::time::timeout_at(deadline, follow.next()).await;
        let Ok(Some(event)) = next else {
            panic!("the kill was not followed; seen: {seen:#?}");
        };
        seen.push(event.unwrap());
    }
    // b follows a through one stream, which ends when the reader leaves,
    // at once: not at a's next event (none comes).
    let a_events = a.running().tasks.events().clone();
    assert_eq!(a_events.followers(), 1);
    drop(follow);
    wait_until(
        "a's stream for b's follower ends",
        Duration::from_secs(10),
        || async { a_events.followers() == 0 },
    )
    .await;
    let killed = seen
        .iter()
        .find(|e| e.kind == EventKind::TaskKilled)
        .unwrap();
    assert_eq!(killed.node.as_str(), a.mesh().node().as_str(), "{killed:?}");
    assert!(killed.reason.contains("killed on request"), "{killed:?}");
    for t in [&t1, &t2] {
        assert!(
            seen.iter()
                .any(|e| e.kind == EventKind::TaskAccepted && e.subject == t.as_str()),
            "{t} accepted: {seen:#?}"
        );
    }

    // a stops: b's failure detector declares it dead, and b tells why.
    let a_id = a.mesh().node().to_string();
    agents[0].stop().await;
    let b = &agents[1];
    let dead = wait_until("b tells that a died", Duration::from_secs(30), || async {
        let all = events(&b.api).await;
        all.into_iter()
            .find(|e| e.kind == EventKind::PeerDead && e.subject == a_id)
            .ok_or(())
    })
    .await;
    assert!(dead.reason.contains("failure detector"), "{dead:?}");
}

#[tokio::test]
async fn browsers_get_server_sent_events_and_bad_asks_are_refused() {
    let agent = Setup::memory("eventssse").start(&[]).await;
    let addr = agent.running().api_addr;
    let t = agent.api.submit(&sleep_task(1, "60")).await.id;
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/v1/events?follow=true"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let kind = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    let mut body = r.bytes_stream();
    let mut text = String::new();
    while !text.contains("task-placed") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .unwrap_or_else(|_| panic!("no placement in the stream: {text}"))
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Event>(d).unwrap())
        .find(|e| e.kind == EventKind::TaskPlaced)
        .unwrap();
    assert_eq!(data.subject, t.as_str());

    for (path, says) in [
        ("/v1/events?limit=0", "1 to 512"),
        ("/v1/events?limit=100000", "1 to 512"),
        ("/v1/events?scope=planet", "use local or mesh"),
        ("/v1/events?since=yesterday", "since"),
    ] {
        let (status, _, body) = agent.api.get_raw(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
    }
}
