//! What this node takes of a peer's gossip, checked before chitchat sees
//! it. chitchat 0.11 trusts its input: a delta whose max version is below
//! one of its key-values trips an `assert!` in its state (the gossip task
//! dies and the node goes dead to everyone), and its zstd blocks decompress
//! without a bound in total. One pass over a message's bytes decodes it,
//! decompressing at most [`MAX_DELTA_BYTES`], and refuses what chitchat
//! could not take or this node could not send on; what passes reaches
//! chitchat re-framed in plain (uncompressed) blocks, so chitchat's own
//! decompression never runs on a peer's bytes.
//!
//! The wire format is chitchat's (`message.rs`, `digest.rs`, `delta.rs`,
//! `serialize.rs` in chitchat 0.11): a magic number, a protocol version, a
//! message type, then a digest (a count, then per node its id, heartbeat,
//! last GC version and max version), a cluster id, or a delta: blocks
//! (compressed or not) that together hold a stream of operations (a node,
//! then its key-values, or its max version).

pub mod craft;

use std::collections::HashSet;

use chitchat::{ChitchatMessage, Deserializable};
use mesh_protocol::NodeId;

/// Largest delta taken, decompressed: 32 times the largest message.
pub const MAX_DELTA_BYTES: usize = 2 << 20;
/// Most nodes one message may name, in its digest or in its delta.
pub const MAX_NODES: usize = 1024;
/// Most key-values in one delta.
pub const MAX_KEY_VALUES: usize = 16_384;
/// Largest key-value (key and value together). chitchat sends a delta in
/// at most 64 KiB and never splits a key-value, so a larger one could
/// never be sent on: it would stall every delta that reaches it.
pub const MAX_KEY_VALUE_BYTES: usize = 60 * 1024;
/// chitchat's magic number, first on the wire.
pub(crate) const MAGIC: u16 = 45_139;
/// A block decompresses to at most this (chitchat's own limit).
pub(crate) const MAX_BLOCK: usize = u16::MAX as usize;

/// A gossip message's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Syn,
    SynAck,
    Ack,
    BadCluster,
}

impl Kind {
    /// The type byte on the wire.
    pub(crate) fn code(self) -> u8 {
        match self {
            Kind::Syn => 0,
            Kind::SynAck => 1,
            Kind::Ack => 2,
            Kind::BadCluster => 3,
        }
    }

    /// As the metrics name it.
    pub fn metric(self) -> crate::metrics::GossipKind {
        use crate::metrics::GossipKind as M;
        match self {
            Kind::Syn => M::Syn,
            Kind::SynAck => M::SynAck,
            Kind::Ack => M::Ack,
            Kind::BadCluster => M::BadCluster,
        }
    }

    pub fn of(message: &ChitchatMessage) -> Kind {
        match message {
            ChitchatMessage::Syn { .. } => Kind::Syn,
            ChitchatMessage::SynAck { .. } => Kind::SynAck,
            ChitchatMessage::Ack { .. } => Kind::Ack,
            ChitchatMessage::BadCluster => Kind::BadCluster,
        }
    }
}

/// A message that passed the checks.
#[derive(Debug)]
pub struct Checked {
    pub kind: Kind,
    pub message: ChitchatMessage,
}

/// Why a gossip message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The compact wire form did not expand (see `digest_codec`).
    #[error("{0}")]
    Codec(mesh_protocol::digest_codec::CodecError),
    #[error("truncated: the {0} is cut short")]
    Truncated(&'static str),
    #[error("not a chitchat message (bad magic number)")]
    Magic,
    #[error("chitchat protocol version {0} (this node speaks 0)")]
    Version(u8),
    #[error("unknown message type {0}")]
    Type(u8),
    #[error("unknown block type {0}")]
    Block(u8),
    #[error("a compressed block does not decompress within {MAX_BLOCK} bytes: {0}")]
    Decompress(String),
    #[error("the delta decompresses to more than {MAX_DELTA_BYTES} bytes")]
    TooLarge,
    #[error("more than {MAX_NODES} nodes in one message")]
    TooManyNodes,
    #[error("more than {MAX_KEY_VALUES} key-values in one delta")]
    TooManyKeyValues,
    #[error(
        "key-value {key:?} of node {node} takes {len} bytes (at most {MAX_KEY_VALUE_BYTES}, so that it can be sent on)"
    )]
    KeyValueTooLarge {
        node: String,
        key: String,
        len: usize,
    },
    #[error("invalid node id {0:?}")]
    NodeId(String),
    #[error("the {0} is not UTF-8")]
    Utf8(&'static str),
    #[error("unknown IP version {0}")]
    Ip(u8),
    #[error("unknown delta operation {0}")]
    Op(u8),
    #[error("unknown deletion status {0}")]
    Status(u8),
    #[error("node {0} appears twice in the delta")]
    DuplicateNode(String),
    #[error("a key-value or max version before any node in the delta")]
    Orphan,
    #[error("key-value {key:?} of node {node} has version {version}, not above {previous}")]
    NotIncreasing {
        node: String,
        key: String,
        version: u64,
        previous: u64,
    },
    #[error(
        "node {node}'s max version {max_version} is below its key-value at version {version} (chitchat would panic applying it)"
    )]
    MaxVersionBelowKeyValue {
        node: String,
        max_version: u64,
        version: u64,
    },
    #[error("{0} bytes after the message")]
    Trailing(usize),
    #[error("chitchat cannot read it: {0}")]
    Chitchat(String),
    #[error("a {0:?} that answers nothing this node sent that peer")]
    Unsolicited(Kind),
    #[error("a SYN-ACK coded against a SYN this node did not send lately")]
    UnknownSyn,
}

impl Refusal {
    /// A short name of the reason, the same for every instance (for
    /// counting and rate-limiting logs).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Codec(e) => {
                use mesh_protocol::digest_codec::CodecError;
                match e {
                    CodecError::Short(_) => "truncated",
                    CodecError::NotChitchat => "magic",
                    CodecError::Type(_) => "type",
                    CodecError::Family(_) => "ip",
                    CodecError::Range(_) => "range",
                    CodecError::TooLarge(_) => "too-large",
                }
            }
            Refusal::Truncated(_) => "truncated",
            Refusal::Magic => "magic",
            Refusal::Version(_) => "version",
            Refusal::Type(_) => "type",
            Refusal::Block(_) => "block",
            Refusal::Decompress(_) => "decompress",
            Refusal::TooLarge => "too-large",
            Refusal::TooManyNodes => "too-many-nodes",
            Refusal::TooManyKeyValues => "too-many-key-values",
            Refusal::KeyValueTooLarge { .. } => "key-value-too-large",
            Refusal::NodeId(_) => "node-id",
            Refusal::Utf8(_) => "utf8",
            Refusal::Ip(_) => "ip",
            Refusal::Op(_) => "op",
            Refusal::Status(_) => "status",
            Refusal::DuplicateNode(_) => "duplicate-node",
            Refusal::Orphan => "orphan",
            Refusal::NotIncreasing { .. } => "not-increasing",
            Refusal::MaxVersionBelowKeyValue { .. } => "max-version-below-key-value",
            Refusal::Trailing(_) => "trailing",
            Refusal::Chitchat(_) => "chitchat",
            Refusal::Unsolicited(_) => "unsolicited",
            Refusal::UnknownSyn => "unknown-syn",
        }
    }
}

/// Decodes and checks one message (chitchat's bytes, without our stream's
/// kind byte).
pub fn check(bytes: &[u8]) -> Result<Checked, Refusal> {
    let mut r = Reader(bytes);
    if r.u16("magic number")? != MAGIC {
        return Err(Refusal::Magic);
    }
    match r.u8("protocol version")? {
        0 => {}
        v => return Err(Refusal::Version(v)),
    }
    let code = r.u8("message type")?;
    let mut plain = bytes[..4].to_vec();
    let kind = match code {
        0 => {
            plain.extend_from_slice(r.spanned(Reader::digest)?);
            plain.extend_from_slice(r.spanned(|r| r.str("cluster id").map(drop))?);
            Kind::Syn
        }
        1 => {
            plain.extend_from_slice(r.spanned(Reader::digest)?);
            plain.extend(craft::plain_blocks(&r.delta()?));
            Kind::SynAck
        }
        2 => {
            plain.extend(craft::plain_blocks(&r.delta()?));
            Kind::Ack
        }
        3 => Kind::BadCluster,
        t => return Err(Refusal::Type(t)),
    };
    if !r.0.is_empty() {
        return Err(Refusal::Trailing(r.0.len()));
    }
    let mut rest = &plain[..];
    let message =
        ChitchatMessage::deserialize(&mut rest).map_err(|e| Refusal::Chitchat(e.to_string()))?;
    if !rest.is_empty() {
        return Err(Refusal::Chitchat(format!(
            "{} bytes left over after re-framing",
            rest.len()
        )));
    }
    Ok(Checked { kind, message })
}

/// A cursor over a message's bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Refusal> {
        if self.0.len() < n {
            return Err(Refusal::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Refusal> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Refusal> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Refusal> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, Refusal> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn str(&mut self, what: &'static str) -> Result<&'a str, Refusal> {
        let len = self.u16(what)? as usize;
        std::str::from_utf8(self.take(len, what)?).map_err(|_| Refusal::Utf8(what))
    }

    /// Runs `parse` and returns the bytes it consumed.
    fn spanned(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<(), Refusal>,
    ) -> Result<&'a [u8], Refusal> {
        let start = self.0;
        parse(self)?;
        Ok(&start[..start.len() - self.0.len()])
    }

    /// A node's id (its name, generation and gossip address); returns the
    /// name.
    fn node(&mut self) -> Result<&'a str, Refusal> {
        let name = self.str("node id")?;
        if NodeId::new(name).is_err() {
            return Err(Refusal::NodeId(name.to_owned()));
        }
        self.u64("generation")?;
        match self.u8("IP version")? {
            4 => self.take(4, "IPv4 address")?,
            6 => self.take(16, "IPv6 address")?,
            v => return Err(Refusal::Ip(v)),
        };
        self.u16("port")?;
        Ok(name)
    }

    fn digest(&mut self) -> Result<(), Refusal> {
        let n = self.u16("digest")? as usize;
        if n > MAX_NODES {
            return Err(Refusal::TooManyNodes);
        }
        for _ in 0..n {
            self.node()?;
            // Heartbeat, last GC version, max version.
            self.take(24, "digest")?;
        }
        Ok(())
    }

    /// A delta's blocks, decompressed (at most [`MAX_DELTA_BYTES`]) and
    /// checked: the operation stream.
    fn delta(&mut self) -> Result<Vec<u8>, Refusal> {
        let ops = self.inflate()?;
        check_ops(&ops)?;
        Ok(ops)
    }

    /// Concatenates a delta's blocks, decompressing each into a block-sized
    /// buffer and keeping it only while the total stays within the bound.
    fn inflate(&mut self) -> Result<Vec<u8>, Refusal> {
        let mut out = Vec::new();
        let mut block = Vec::new();
        let mut zstd = None;
        loop {
            let data: &[u8] = match self.u8("delta")? {
                0 => return Ok(out),
                1 => {
                    let len = self.u16("compressed block")? as usize;
                    let src = self.take(len, "compressed block")?;
                    let z = match &mut zstd {
                        Some(z) => z,
                        None => zstd.insert(
                            zstd::bulk::Decompressor::new()
                                .map_err(|e| Refusal::Decompress(e.to_string()))?,
                        ),
                    };
                    block.resize(MAX_BLOCK, 0);
                    let n = z
                        .decompress_to_buffer(src, &mut block[..])
                        .map_err(|e| Refusal::Decompress(e.to_string()))?;
                    &block[..n]
                }
                2 => {
                    let len = self.u16("block")? as usize;
                    self.take(len, "block")?
                }
                b => return Err(Refusal::Block(b)),
            };
            if out.len() + data.len() > MAX_DELTA_BYTES {
                return Err(Refusal::TooLarge);
            }
            out.extend_from_slice(data);
        }
    }
}

/// The node a delta is about, while its operations are read.
struct NodeOps<'a> {
    name: &'a str,
    /// chitchat's idea of the node's max version: the last key-value's, or
    /// the last one set.
    max_version: u64,
    /// The highest key-value version.
    top: u64,
}

impl NodeOps<'_> {
    /// chitchat asserts, after applying a node's key-values, that the
    /// delta's max version is at least every version it applied.
    fn finish(&self) -> Result<(), Refusal> {
        if self.max_version < self.top {
            return Err(Refusal::MaxVersionBelowKeyValue {
                node: self.name.to_owned(),
                max_version: self.max_version,
                version: self.top,
            });
        }
        Ok(())
    }
}

/// Checks a delta's operation stream: what chitchat's own decoding checks
/// (a node once, key-values after a node with rising versions), and what
/// it trusts (the max version) or does not bound.
fn check_ops(ops: &[u8]) -> Result<(), Refusal> {
    let mut r = Reader(ops);
    let mut seen: HashSet<&[u8]> = HashSet::new();
    let mut current: Option<NodeOps> = None;
    let mut key_values = 0usize;
    while !r.0.is_empty() {
        match r.u8("delta operation")? {
            0 => {
                let mut name = "";
                let id = r.spanned(|r| r.node().map(|n| name = n))?;
                r.u64("last GC version")?;
                r.u64("from version")?;
                if let Some(done) = current.take() {
                    done.finish()?;
                }
                if !seen.insert(id) {
                    return Err(Refusal::DuplicateNode(name.to_owned()));
                }
                if seen.len() > MAX_NODES {
                    return Err(Refusal::TooManyNodes);
                }
                current = Some(NodeOps {
                    name,
                    max_version: 0,
                    top: 0,
                });
            }
            1 => {
                let key = r.str("key")?;
                let value = r.str("value")?;
                let version = r.u64("version")?;
                let status = r.u8("deletion status")?;
                if status > 2 {
                    return Err(Refusal::Status(status));
                }
                let node = current.as_mut().ok_or(Refusal::Orphan)?;
                if version <= node.max_version {
                    return Err(Refusal::NotIncreasing {
                        node: node.name.to_owned(),
                        key: key.to_owned(),
                        version,
                        previous: node.max_version,
                    });
                }
                if key.len() + value.len() > MAX_KEY_VALUE_BYTES {
                    return Err(Refusal::KeyValueTooLarge {
                        node: node.name.to_owned(),
                        key: key.chars().take(64).collect(),
                        len: key.len() + value.len(),
                    });
                }
                key_values += 1;
                if key_values > MAX_KEY_VALUES {
                    return Err(Refusal::TooManyKeyValues);
                }
                node.max_version = version;
                node.top = version;
            }
            2 => {
                let version = r.u64("max version")?;
                current.as_mut().ok_or(Refusal::Orphan)?.max_version = version;
            }
            op => return Err(Refusal::Op(op)),
        }
    }
    match current {
        Some(last) => last.finish(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
