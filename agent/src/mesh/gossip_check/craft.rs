//! chitchat's wire format written by hand: the plain framing this node
//! hands chitchat after its checks, and (for tests) messages that no honest
//! peer sends.

use chitchat::{ChitchatId, Serializable};

use super::{Kind, MAGIC, MAX_BLOCK};

/// A delta's operation stream framed in uncompressed blocks.
pub fn plain_blocks(ops: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ops.len() + 3 * ops.len().div_ceil(MAX_BLOCK) + 1);
    for chunk in ops.chunks(MAX_BLOCK) {
        out.push(2);
        // A chunk is at most MAX_BLOCK, which is u16::MAX.
        out.extend((chunk.len() as u16).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.push(0);
    out
}

/// A delta's operations, written one after the other, as a peer (honest
/// or not) would.
#[doc(hidden)]
#[derive(Debug, Default, Clone)]
pub struct Ops(Vec<u8>);

impl Ops {
    /// Starts the operations of node `id`.
    pub fn node(mut self, id: &ChitchatId, last_gc_version: u64, from_version: u64) -> Self {
        self.0.push(0);
        id.serialize(&mut self.0);
        last_gc_version.serialize(&mut self.0);
        from_version.serialize(&mut self.0);
        self
    }

    /// A key-value set at `version`.
    pub fn key_value(mut self, key: &str, value: &str, version: u64) -> Self {
        self.0.push(1);
        key.serialize(&mut self.0);
        value.serialize(&mut self.0);
        version.serialize(&mut self.0);
        self.0.push(0);
        self
    }

    /// Sets the node's max version.
    pub fn max_version(mut self, version: u64) -> Self {
        self.0.push(2);
        version.serialize(&mut self.0);
        self
    }

    /// The operations in one plain block.
    pub fn plain(&self) -> Vec<u8> {
        plain_blocks(&self.0)
    }

    /// The operations in zstd-compressed blocks of at most 16 KiB (as
    /// chitchat sends them).
    pub fn compressed(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in self.0.chunks(16_384) {
            out.extend(compressed_block(chunk));
        }
        out.push(0);
        out
    }
}

/// One zstd-compressed block of `data` (at most 64 KiB), framed.
#[doc(hidden)]
pub fn compressed_block(data: &[u8]) -> Vec<u8> {
    // Compressing a slice in memory fails only on a bad level.
    let z = zstd::bulk::compress(data, 19).unwrap_or_default();
    let mut out = vec![1];
    out.extend((z.len() as u16).to_le_bytes());
    out.extend(z);
    out
}

/// A message of type `kind` with `body` after the type byte.
fn message(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_le_bytes().to_vec();
    out.push(0);
    out.push(kind.code());
    out.extend_from_slice(body);
    out
}

/// A digest: per node, its heartbeat, last GC version and max version.
#[doc(hidden)]
pub fn digest(nodes: &[(ChitchatId, u64, u64, u64)]) -> Vec<u8> {
    let mut out = (nodes.len() as u16).to_le_bytes().to_vec();
    for (id, heartbeat, last_gc, max) in nodes {
        id.serialize(&mut out);
        for n in [heartbeat, last_gc, max] {
            n.serialize(&mut out);
        }
    }
    out
}

#[doc(hidden)]
pub fn syn(cluster: &str, digest: &[u8]) -> Vec<u8> {
    let mut body = digest.to_vec();
    cluster.serialize(&mut body);
    message(Kind::Syn, &body)
}

#[doc(hidden)]
pub fn syn_ack(digest: &[u8], delta: &[u8]) -> Vec<u8> {
    message(Kind::SynAck, &[digest, delta].concat())
}

#[doc(hidden)]
pub fn ack(delta: &[u8]) -> Vec<u8> {
    message(Kind::Ack, delta)
}

/// An Ack whose delta is `blocks` compressed blocks that each decompress to
/// 64 KiB of zeros: a few KiB on the wire.
#[doc(hidden)]
pub fn zstd_bomb(blocks: usize) -> Vec<u8> {
    let block = compressed_block(&vec![0; MAX_BLOCK]);
    let mut delta = block.repeat(blocks);
    delta.push(0);
    ack(&delta)
}
