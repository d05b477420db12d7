//! Agent-to-agent calls over the mesh's QUIC connections: one bidirectional
//! stream per call, opened with the kind byte [`KIND_RPC`], then frames of a
//! big-endian u32 length and a postcard body: one [`Request`], answered by
//! one [`Response`] (a log stream answers with several `LogChunk`s and a
//! `LogEnd`). The caller is known by its certificate, not by anything it
//! says.

use serde::{Deserialize, Serialize};

use crate::ids::TaskId;
use crate::task::TaskRecord;
use crate::wire::{self, WireError};

/// First byte of an RPC stream (gossip streams use 1).
pub const KIND_RPC: u8 = 2;
/// First byte of a service connection forwarded to a peer: then one framed
/// [`TunnelOpen`], one framed [`TunnelReply`], then the connection's raw
/// bytes both ways (each side finishes its send half when its reader ends).
pub const KIND_TUNNEL: u8 = 3;

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Run this task here if its cores are free now; refuse otherwise.
    Offer(Box<TaskRecord>),
    /// The records of the tasks this node runs or holds.
    List,
    Get(TaskId),
    Kill(TaskId),
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Accepted,
    /// Offer refused, with why (no room now, draining, ...).
    Refused(String),
    Record(Box<TaskRecord>),
    Records(Vec<TaskRecord>),
    NotFound,
    LogChunk(Vec<u8>),
    LogEnd,
    Error(String),
    /// Answer to `Replicate`: the copy is stored.
    Kept,
    /// Answer to `Replicate`: the task was re-placed; the caller's attempt
    /// is no longer current (the current one runs on `node`).
    Superseded {
        node: crate::ids::NodeId,
        attempt: u32,
    },
    ServiceReport(Box<crate::api::ServiceReport>),
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
}
