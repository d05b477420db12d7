//! A compact wire form of chitchat 0.11's gossip messages, for the agents'
//! QUIC transport (docs/scale.md, "Within chitchat 0.11.0").
//!
//! chitchat sends a digest of every node it knows in each SYN and SYN-ACK,
//! about 45 bytes a node: the id with a 2-byte length, an 8-byte
//! generation, the address (1 + 4 + 2 bytes for IPv4) and three 8-byte
//! counters. The entries come sorted by id, so here an id shares its
//! prefix with the one before; the generation and port are deltas from
//! the entry before, an IPv4 address is XORed with the one before (nodes
//! of a subnet differ in the low bytes), and every number is a varint.
//! A flags byte per entry says the address family and leaves out a
//! generation or port equal to the entry before's and a last GC version of
//! 0. A digest entry of a mesh of `n123`-style ids on one subnet takes
//! about 9 bytes. The rest of a message (the cluster id, the delta's
//! blocks) is kept as it is.
//!
//! [`compact`] takes chitchat's bytes and [`expand`] gives them back, byte
//! for byte. Both are total: bad input is an error, never a panic, and
//! `expand` never produces more than the limit it is given.
//!
//! A SYN-ACK can also be coded against the SYN it answers, which the
//! initiator still holds: [`compact_answer`] and [`expand_answer`] (the
//! `answer` module), a few bits for most entries.

mod answer;
pub use answer::{ANSWER, Answering, answered_syn, compact_answer, expand_answer, syn_hash};

/// The largest gossip message the agents read off a stream and the
/// largest they expand (chitchat keeps its messages under 65,507 bytes).
pub const MAX_MESSAGE: usize = 65_536 + 64;

/// chitchat's magic number and protocol version, first in its messages.
const MAGIC: [u8; 2] = 45_139u16.to_le_bytes();
const VERSION: u8 = 0;
const SYN: u8 = 0;
const SYN_ACK: u8 = 1;
const ACK: u8 = 2;
const BAD_CLUSTER: u8 = 3;

/// Why bytes could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("the message ends inside {0}")]
    Short(&'static str),
    #[error("not a chitchat 0.11 message (magic or version)")]
    NotChitchat,
    #[error("unknown message type {0}")]
    Type(u8),
    #[error("unknown address family {0}")]
    Family(u8),
    #[error("{0} out of range")]
    Range(&'static str),
    #[error("the message would expand beyond {0} bytes")]
    TooLarge(usize),
}

/// chitchat's bytes in the compact form.
pub fn compact(chitchat: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut r = Reader(chitchat);
    if r.take(2, "magic")? != MAGIC || r.u8("version")? != VERSION {
        return Err(CodecError::NotChitchat);
    }
    let kind = r.u8("message type")?;
    let mut out = Vec::with_capacity(chitchat.len() / 2);
    out.push(kind);
    match kind {
        SYN => {
            compact_digest(&mut r, &mut out)?;
            // The cluster id: a u16 length and the bytes.
            let len = r.u16("cluster id")?;
            put_varint(&mut out, u64::from(len));
            out.extend_from_slice(r.take(len.into(), "cluster id")?);
            r.end()?;
        }
        SYN_ACK => {
            compact_digest(&mut r, &mut out)?;
            out.extend_from_slice(r.0);
        }
        ACK => out.extend_from_slice(r.0),
        BAD_CLUSTER => r.end()?,
        t => return Err(CodecError::Type(t)),
    }
    Ok(out)
}

/// The compact form back in chitchat's bytes, refused beyond `limit`.
pub fn expand(compact: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let mut r = Reader(compact);
    let kind = r.u8("message type")?;
    let mut out = Writer {
        buf: Vec::with_capacity(compact.len().saturating_mul(3).min(limit)),
        limit,
    };
    out.put(&MAGIC)?;
    out.put(&[VERSION, kind])?;
    match kind {
        SYN => {
            expand_digest(&mut r, &mut out)?;
            let len = u16::try_from(r.varint("cluster id")?)
                .map_err(|_| CodecError::Range("cluster id length"))?;
            out.put(&len.to_le_bytes())?;
            out.put(r.take(len.into(), "cluster id")?)?;
            r.end()?;
        }
        SYN_ACK => {
            expand_digest(&mut r, &mut out)?;
            out.put(r.0)?;
        }
        ACK => out.put(r.0)?,
        BAD_CLUSTER => r.end()?,
        t => return Err(CodecError::Type(t)),
    }
    Ok(out.buf)
}

/// What an entry is coded against: the entry before it.
#[derive(Default)]
struct Previous {
    id: Vec<u8>,
    generation: u64,
    ipv4: u32,
    port: u16,
}

/// An entry's flags byte: its address family, and which fields are left
/// out because they equal the entry before's (generation, port) or zero
/// (last GC version, which chitchat leaves at 0 until it collects).
const IPV6: u8 = 1;
const SAME_GENERATION: u8 = 1 << 1;
const SAME_PORT: u8 = 1 << 2;
const NO_GC: u8 = 1 << 3;
const FLAGS: u8 = IPV6 | SAME_GENERATION | SAME_PORT | NO_GC;

fn compact_digest(r: &mut Reader<'_>, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let count = r.u16("digest")?;
    put_varint(out, u64::from(count));
    let mut prev = Previous::default();
    for _ in 0..count {
        let len = r.u16("node id")?;
        let id = r.take(len.into(), "node id")?;
        let generation = r.u64("generation")?;
        let family = r.u8("address")?;
        let ip = match family {
            4 => r.take(4, "address")?,
            6 => r.take(16, "address")?,
            f => return Err(CodecError::Family(f)),
        };
        let port = r.u16("port")?;
        let heartbeat = r.u64("heartbeat")?;
        let gc = r.u64("last GC version")?;
        let max_version = r.u64("max version")?;

        let mut flags = 0;
        if family == 6 {
            flags |= IPV6;
        }
        if generation == prev.generation {
            flags |= SAME_GENERATION;
        }
        if port == prev.port {
            flags |= SAME_PORT;
        }
        if gc == 0 {
            flags |= NO_GC;
        }
        out.push(flags);
        let shared = id.iter().zip(&prev.id).take_while(|(a, b)| a == b).count();
        put_varint(out, shared as u64);
        put_varint(out, (id.len() - shared) as u64);
        out.extend_from_slice(&id[shared..]);
        prev.id.clear();
        prev.id.extend_from_slice(id);
        if flags & SAME_GENERATION == 0 {
            put_varint(out, zigzag(generation.wrapping_sub(prev.generation) as i64));
            prev.generation = generation;
        }
        if family == 4 {
            let v4 = u32::from_be_bytes([ip[0], ip[1], ip[2], ip[3]]);
            put_varint(out, u64::from(v4 ^ prev.ipv4));
            prev.ipv4 = v4;
        } else {
            out.extend_from_slice(ip);
        }
        if flags & SAME_PORT == 0 {
            put_varint(out, zigzag(i64::from(port) - i64::from(prev.port)));
            prev.port = port;
        }
        put_varint(out, heartbeat);
        if flags & NO_GC == 0 {
            put_varint(out, gc);
        }
        put_varint(out, max_version);
    }
    Ok(())
}

fn expand_digest(r: &mut Reader<'_>, out: &mut Writer) -> Result<(), CodecError> {
    let count =
        u16::try_from(r.varint("digest")?).map_err(|_| CodecError::Range("digest length"))?;
    out.put(&count.to_le_bytes())?;
    let mut prev = Previous::default();
    for _ in 0..count {
        let flags = r.u8("flags")?;
        if flags & !FLAGS != 0 {
            return Err(CodecError::Range("flags"));
        }
        let shared = usize::try_from(r.varint("node id")?)
            .ok()
            .filter(|s| *s <= prev.id.len())
            .ok_or(CodecError::Range("shared prefix"))?;
        let rest = usize::try_from(r.varint("node id")?)
            .map_err(|_| CodecError::Range("node id length"))?;
        let suffix = r.take(rest, "node id")?;
        prev.id.truncate(shared);
        prev.id.extend_from_slice(suffix);
        let len = u16::try_from(prev.id.len()).map_err(|_| CodecError::Range("node id length"))?;
        out.put(&len.to_le_bytes())?;
        out.put(&prev.id)?;
        if flags & SAME_GENERATION == 0 {
            prev.generation = prev
                .generation
                .wrapping_add(unzigzag(r.varint("generation")?) as u64);
        }
        out.put(&prev.generation.to_le_bytes())?;
        if flags & IPV6 == 0 {
            let ip = u32::try_from(r.varint("address")?)
                .map_err(|_| CodecError::Range("address"))?
                ^ prev.ipv4;
            out.put(&[4])?;
            out.put(&ip.to_be_bytes())?;
            prev.ipv4 = ip;
        } else {
            out.put(&[6])?;
            out.put(r.take(16, "address")?)?;
        }
        if flags & SAME_PORT == 0 {
            prev.port = i64::from(prev.port)
                .checked_add(unzigzag(r.varint("port")?))
                .and_then(|p| u16::try_from(p).ok())
                .ok_or(CodecError::Range("port"))?;
        }
        out.put(&prev.port.to_le_bytes())?;
        out.put(&r.varint("heartbeat")?.to_le_bytes())?;
        let gc = if flags & NO_GC == 0 {
            r.varint("last GC version")?
        } else {
            0
        };
        out.put(&gc.to_le_bytes())?;
        out.put(&r.varint("max version")?.to_le_bytes())?;
    }
    Ok(())
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes out, up to a limit.
struct Writer {
    buf: Vec<u8>,
    limit: usize,
}

impl Writer {
    fn put(&mut self, bytes: &[u8]) -> Result<(), CodecError> {
        if self.buf.len() + bytes.len() > self.limit {
            return Err(CodecError::TooLarge(self.limit));
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// Nothing may follow a Syn's cluster id or a BadCluster (a SynAck's
    /// and an Ack's delta runs to the end, kept as it is).
    fn end(&self) -> Result<(), CodecError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Range("bytes after the message"))
        }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError::Short(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CodecError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if shift == 63 && b > 1 {
                    return Err(CodecError::Range(what));
                }
                return Ok(v);
            }
        }
        Err(CodecError::Range(what))
    }
}

#[cfg(test)]
mod tests;
