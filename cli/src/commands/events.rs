//! `meshctl events`: what happened in the mesh, and why, from any node.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use futures_util::StreamExt;
use mesh_protocol::events::Event;
use mesh_protocol::events::when::{BadTime, parse_since};

use crate::client::{Client, EventsAsk};
use crate::render;
use crate::run::Error;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep showing new events as they happen (until interrupted).
    #[arg(short, long)]
    follow: bool,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    /// Only events since then: a span back from now (90s, 10m, 2h, 1d) or a UTC time (2026-12-01T12:00:00Z).
    #[arg(long, value_name = "T", value_parser = since_now)]
    since: Option<u64>,
    /// At most this many past events (1 to 512; default 100).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Only the events of the node asked (--node), not the whole mesh.
    #[arg(long)]
    local: bool,
    /// Only events of this kind (task-replaced) or topic (task, peer, service).
    #[arg(long, value_name = "KIND")]
    kind: Option<String>,
    /// Only events about this task, node or service.
    #[arg(long, value_name = "NAME")]
    subject: Option<String>,
}

fn since_now(s: &str) -> Result<u64, BadTime> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    parse_since(s, now)
}

impl EventsArgs {
    fn wanted(&self, e: &Event) -> bool {
        let kind = self
            .kind
            .as_deref()
            .is_none_or(|k| e.kind.as_str() == k || e.kind.topic() == k);
        let subject = self.subject.as_deref().is_none_or(|s| e.subject == s);
        kind && subject
    }
}

/// Shows the events; with `--follow`, until the agent closes or the reader
/// goes away.
pub(crate) async fn run(client: &Client, args: EventsArgs) -> Result<(), Error> {
    let ask = EventsAsk {
        follow: args.follow,
        since_ms: args.since,
        limit: args.limit,
        local: args.local,
    };
    let mut events = std::pin::pin!(client.events(ask).await?);
    let mut out = io::stdout().lock();
    while let Some(event) = events.next().await {
        let event = event?;
        if !args.wanted(&event) {
            continue;
        }
        let mut line = if args.json {
            serde_json::to_string(&event)?
        } else {
            render::event_line(&event)
        };
        if args.json {
            line.push('\n');
        }
        let written = out.write_all(line.as_bytes()).and_then(|()| out.flush());
        match written {
            Ok(()) => {}
            // The reader went away (`meshctl events -f | head`): done.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
