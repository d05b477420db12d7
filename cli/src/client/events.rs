//! `GET /v1/events`: the mesh's events, read as JSON lines as they come.

use futures_util::{Stream, StreamExt};
use mesh_protocol::events::Event;
use reqwest::Method;

use super::{Client, ClientError, causes, describe};

/// What `GET /v1/events` is asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventsAsk {
    /// Keep reading new events as they happen.
    pub follow: bool,
    /// Only events at or after this time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    /// At most this many of the latest past events.
    pub limit: Option<usize>,
    /// Only the events of the node asked.
    pub local: bool,
}

impl Client {
    /// The events `ask` names, oldest first, then (with `follow`) new
    /// ones as they come. Without a time limit, since following may take
    /// hours.
    pub async fn events(
        &self,
        ask: EventsAsk,
    ) -> Result<impl Stream<Item = Result<Event, ClientError>> + use<>, ClientError> {
        let mut url = self.node.endpoint(&["v1", "events"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("follow", if ask.follow { "true" } else { "false" });
            if let Some(since) = ask.since_ms {
                q.append_pair("since", &since.to_string());
            }
            if let Some(limit) = ask.limit {
                q.append_pair("limit", &limit.to_string());
            }
            if ask.local {
                q.append_pair("scope", "local");
            }
        }
        let request = describe(&Method::GET, &url);
        let response = self.send(self.http.get(url)).await?;
        let response = self.check(response, &request).await?;
        let node = self.node.to_string();
        let chunks = response.bytes_stream();
        // Lines may span chunks: keep the unfinished tail.
        let lines = futures_util::stream::unfold(
            (chunks, Vec::<u8>::new(), false),
            move |(mut chunks, mut buf, done)| {
                let node = node.clone();
                let request = request.clone();
                async move {
                    loop {
                        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
                            let line: Vec<u8> = buf.drain(..=end).collect();
                            return Some((Ok(line), (chunks, buf, done)));
                        }
                        if done {
                            return None;
                        }
                        match chunks.next().await {
                            Some(Ok(bytes)) => buf.extend_from_slice(&bytes),
                            Some(Err(e)) => {
                                let error = ClientError::Body {
                                    node,
                                    request,
                                    cause: causes(&e),
                                };
                                return Some((Err(error), (chunks, Vec::new(), true)));
                            }
                            None => {
                                // A last line without its newline still counts.
                                if buf.is_empty() {
                                    return None;
                                }
                                buf.push(b'\n');
                                return Some((
                                    Ok(std::mem::take(&mut buf)),
                                    (chunks, Vec::new(), true),
                                ));
                            }
                        }
                    }
                }
            },
        );
        Ok(lines.filter_map(|line| async move {
            match line {
                Err(e) => Some(Err(e)),
                Ok(line) if line.iter().all(u8::is_ascii_whitespace) => None,
                Ok(line) => {
                    Some(
                        serde_json::from_slice::<Event>(&line).map_err(|e| ClientError::Decode {
                            request: "GET /v1/events".into(),
                            cause: e.to_string(),
                        }),
                    )
                }
            }
        }))
    }
}
