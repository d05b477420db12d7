//! Agent-to-agent calls over the mesh's QUIC connections: one bidirectional
//! stream per call, opened with the kind byte [`KIND_RPC`], then frames of a
//! big-endian u32 length and a postcard body: one [`Request`], answered by
//! one [`Response`] (a log stream answers with several `LogChunk`s and a
//! `LogEnd`). The caller is known by its certificate, not by anything it
//! says. A call that fails is answered with a [`RemoteError`]: a typed
//! [`ErrorKind`] and a message, so the caller decides on the kind (a remote
//! "not found" stays "not found") and shows the message.
//!
//! The format has a version, [`VERSION`]; the TLS handshake negotiates it as
//! the ALPN protocol [`alpn`], so two builds that cannot talk refuse each
//! other at the handshake instead of misreading each other's frames.

use serde::{Deserialize, Serialize};

use crate::auth::Caller;

use crate::ids::TaskId;
use crate::task::TaskRecord;
use crate::wire::{self, WireError};

/// The version of this format. Raise it with any change to [`Request`],
/// [`Response`] or the framing.
pub const VERSION: u32 = 11;

/// The ALPN protocol name of an RPC version: `ganger/<version>`.
pub fn alpn(version: u32) -> Vec<u8> {
    format!("ganger/{version}").into_bytes()
}

/// First byte of an RPC stream (gossip streams use 1).
pub const KIND_RPC: u8 = 2;
/// First byte of a service connection forwarded to a peer: then one framed
/// [`TunnelOpen`], one framed [`TunnelReply`], then the connection's raw
/// bytes both ways (each side finishes its send half when its reader ends).
pub const KIND_TUNNEL: u8 = 3;

/// First byte of an image fetched from a peer: then one framed
/// [`ImageAsk`], one framed [`ImageReply`], then, after `Ready`, the bytes
/// of `docker save` of that image until the called node finishes its send
/// half (a reset means the export failed).
pub const KIND_IMAGE: u8 = 4;

/// Asks the called node for the `docker save` of one image it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageAsk {
    /// The image's id (`sha256:` and 64 hex digits), as `HasImage` gave it.
    pub id: String,
}

/// The called node's answer before any byte of the image flows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageReply {
    /// The image's bytes follow; `size` is the image's size as its engine
    /// reports it (the tarball is about as large), for progress.
    Ready { size: u64 },
    /// Too many exports under way here now: ask another node, or later.
    Busy(String),
    /// Not held here, or not a valid id.
    Refused(String),
}

/// An image a node holds, as it answers `HasImage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldImage {
    /// The image's id (`sha256:...`).
    pub id: String,
    /// Its size in bytes as its engine reports it.
    pub size: u64,
}

/// Opens a forwarded service connection on the called node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelOpen {
    pub service: crate::ids::ServiceName,
    /// The client's address, for the called node's records.
    pub client: std::net::SocketAddr,
}

/// The called node's answer before any byte flows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TunnelReply {
    /// Connected to this container; bytes follow.
    Ready { container: String },
    /// No room now (try another node or wait).
    Full(String),
    /// The service is unknown or removed here, or its containers fail.
    Failed(String),
}
/// Largest frame either side accepts.
pub const MAX_FRAME: usize = wire::MAX_MESSAGE;

/// What part of an agent answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Task placement, lookups, failover and draining.
    Tasks,
    /// Service figures and connections.
    Services,
    /// Images held here, for peers that lack them.
    Images,
    /// This node's events.
    Events,
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Topic::Tasks => "task",
            Topic::Services => "service",
            Topic::Images => "image",
            Topic::Events => "event",
        })
    }
}

/// Why a call failed on the called node, as the caller decides on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// No such task (or other named thing) there.
    NotFound,
    /// The request is malformed or names something invalid.
    Invalid,
    /// It can never be satisfied there (asks more than the node has).
    Impossible,
    /// Valid, but in conflict with the current state (already ended, ...).
    Conflict,
    /// Refused for now (no room, queue full, draining); may work later.
    Busy,
    /// The node cannot answer this now (shutting down, not serving it yet).
    Unavailable,
    /// The caller's certificate does not name a node.
    Unauthenticated,
    /// The API user the call was made for may not do it (a kill of
    /// another user's task).
    Forbidden,
    /// The node could not write what the call asked it to keep (its disk
    /// failed); nothing was kept.
    Storage,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Impossible => "impossible",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Busy => "busy",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Storage => "storage",
        })
    }
}

/// A failed call's answer: what kind of failure, and the called node's
/// message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    pub kind: ErrorKind,
    pub message: String,
}

impl RemoteError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Run this task here if its cores are free now; refuse otherwise.
    Offer(Box<TaskRecord>),
    /// A page of the records of the tasks this node runs or holds: those
    /// whose ids sort after `after`, at most `limit`, answered with a
    /// `Page` that fits a frame.
    List {
        after: Option<TaskId>,
        limit: u32,
    },
    Get(TaskId),
    /// Kill a task for the API user `by`: the called node, which holds the
    /// record, decides whether they may (its owner or an admin).
    Kill {
        id: TaskId,
        by: Caller,
    },
    Logs {
        id: TaskId,
        follow: bool,
    },
    /// Start (true) or stop (false) draining the called node.
    Drain {
        on: bool,
        migrate: bool,
    },
    /// Keep (or refresh) a durable copy of a task the caller runs, and
    /// re-place it if the caller dies.
    Replicate(Box<TaskRecord>),
    /// From the node that placed (or moved) a task: hold this copy as the
    /// task's keeper (the record names its runner).
    Hold(Box<TaskRecord>),
    /// This node's figures for every service, and its open connections.
    ServiceReport,
    /// The copy this node keeps of a task, as its keeper: answered with
    /// `Record`, or `Failed(NotFound)` when it holds none.
    Copy(TaskId),
    /// What this node holds of each task, as runner or keeper: answered
    /// with `Stamps` (at most [`crate::confirm::MAX_IDS`] ids). A keeper
    /// asks before it re-places a dead runner's task.
    Stamps(Vec<TaskId>),
    /// Whether the called node holds this image (a name, at most
    /// [`MAX_IMAGE_NAME`] bytes, or an id): answered with `HasImage`.
    HasImage(String),
    /// Who holds each of the called node's cores: answered with `Cores`.
    Cores,
    /// This node's events (`crate::events::Ring::read` of these fields):
    /// answered with `Events` batches, then, unless `follow`, `LogEnd`;
    /// with `follow`, new events keep coming until the caller closes.
    Events {
        after: Option<u64>,
        since_ms: Option<u64>,
        limit: u32,
        follow: bool,
    },
    /// After an offer of this task went unanswered: whether the called
    /// node holds it (answered with `Record`); when it does not
    /// (`Failed(NotFound)`), it disclaims it and refuses that offer should
    /// it still arrive ([`crate::disclaim`]), so the task may be offered
    /// elsewhere.
    Disclaim(TaskId),
}

/// Longest image name a `HasImage` may carry.
pub const MAX_IMAGE_NAME: usize = 512;

impl Request {
    /// The part of the called agent that answers it.
    pub fn topic(&self) -> Topic {
        match self {
            Request::ServiceReport | Request::Cores => Topic::Services,
            Request::HasImage(_) => Topic::Images,
            Request::Events { .. } => Topic::Events,
            Request::Offer(_)
            | Request::List { .. }
            | Request::Get(_)
            | Request::Kill { .. }
            | Request::Logs { .. }
            | Request::Drain { .. }
            | Request::Replicate(_)
            | Request::Hold(_)
            | Request::Copy(_)
            | Request::Stamps(_)
            | Request::Disclaim(_) => Topic::Tasks,
        }
    }

    /// A short name for logs and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Offer(_) => "offer",
            Request::List { .. } => "list",
            Request::Get(_) => "get",
            Request::Kill { .. } => "kill",
            Request::Logs { .. } => "logs",
            Request::Drain { .. } => "drain",
            Request::Replicate(_) => "replicate",
            Request::Hold(_) => "hold",
            Request::ServiceReport => "service report",
            Request::Copy(_) => "copy",
            Request::Stamps(_) => "stamps",
            Request::HasImage(_) => "has image",
            Request::Cores => "cores",
            Request::Events { .. } => "events",
            Request::Disclaim(_) => "disclaim",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Accepted,
    Record(Box<TaskRecord>),
    /// Answer to `List`.
    Page(crate::listing::Page),
    LogChunk(Vec<u8>),
    /// Ends a streamed answer (logs, events).
    LogEnd,
    /// Answer to `Events`: a batch, oldest first (at most
    /// [`crate::events::MAX_BATCH`]).
    Events(Vec<crate::events::Event>),
    /// The call failed there (an offer refused, an unknown id, ...).
    Failed(RemoteError),
    /// Answer to `Replicate`: the copy is stored.
    Kept,
    /// Answer to `Replicate`: the task was re-placed; the caller's attempt
    /// is no longer current (the current one runs on `node`).
    Superseded {
        node: crate::ids::NodeId,
        attempt: u32,
    },
    ServiceReport(Box<crate::api::ServiceReport>),
    /// Answer to `Stamps`: none, one or two per id asked (as runner and
    /// as keeper).
    Stamps(Vec<crate::confirm::Stamp>),
    /// Answer to `HasImage`: the image, if held.
    HasImage(Option<HeldImage>),
    /// Answer to `HasImage` from a node that does not hold the image but
    /// is getting it now: `downloading` when its bytes are coming (from a
    /// registry or a peer), not when it waits for a peer itself.
    ImagePulling {
        downloading: bool,
    },
    /// Answer to `Cores`.
    Cores(Box<crate::cores::NodeCores>),
}

/// Frames a message: length, then body.
pub fn frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, WireError> {
    let body = wire::encode(msg)?;
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads a frame's length prefix, refusing oversized frames before reading
/// their bodies.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bound_their_size() {
        let req = Request::Logs {
            id: TaskId::new("t1").unwrap(),
            follow: true,
        };
        let bytes = frame(&req).unwrap();
        let len = frame_len(bytes[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, bytes.len() - 4);
        let back: Request = wire::decode(&bytes[4..]).unwrap();
        assert_eq!(back, req);
        assert!(frame_len((MAX_FRAME as u32 + 1).to_be_bytes()).is_err());
        assert!(wire::decode::<Request>(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn failures_keep_their_kind_on_the_wire() {
        let answer = Response::Failed(RemoteError::new(ErrorKind::NotFound, "no task t1"));
        let bytes = frame(&answer).unwrap();
        let back: Response = wire::decode(&bytes[4..]).unwrap();
        assert_eq!(back, answer);
    }

    #[test]
    fn the_alpn_names_the_version() {
        assert_eq!(alpn(VERSION), format!("ganger/{VERSION}").into_bytes());
        assert_ne!(alpn(VERSION), alpn(VERSION - 1));
    }
}
