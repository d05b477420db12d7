//! A SYN-ACK coded against the SYN it answers.
//!
//! A SYN-ACK's digest tells the node that sent the SYN two things: which
//! nodes' state it should send back in its ACK (those where the answering
//! node is behind), and newer heartbeats for its failure detector. For
//! most entries the answering node's versions equal the SYN's, and the
//! initiator still holds that SYN, so each of the SYN's entries gets a
//! 2-bit code instead of ~13 bytes:
//!
//! - `ABSENT`: the answering node's digest lacks it (as in chitchat);
//! - `SAME`: same versions and a heartbeat no newer than the SYN's. It is
//!   given back with the SYN's heartbeat: the initiator already has that
//!   one, so its failure detector and its ACK see what they would have
//!   seen with the answering node's own, older or equal, heartbeat;
//! - `NEWER`: same versions and a newer heartbeat, sent as the difference
//!   (a varint, usually 1 byte);
//! - `LISTED`: other versions: the entry is in the list of full entries,
//!   with the answering node's entries the SYN did not have.
//!
//! The answer names its SYN by a hash of the SYN's chitchat bytes
//! ([`syn_hash`]): gossip messages travel on separate streams, so the
//! initiator keeps the SYNs it sent for a short while and picks the one
//! the answer names.
//!
//! Layout after the type byte: the SYN's hash (8 bytes), the SYN's entry
//! count (varint), the codes (4 to a byte), the heartbeat differences of
//! the `NEWER` entries in the SYN's order, the listed entries as a compact
//! digest, then the delta as chitchat wrote it.

use std::net::SocketAddr;

use super::{
    CodecError, MAGIC, Reader, SYN, SYN_ACK, VERSION, Writer, compact_digest, expand_digest,
    put_varint,
};

/// The compact form's type byte for an answer (chitchat's own are 0 to 3).
pub const ANSWER: u8 = 4;

const ABSENT: u8 = 0;
const SAME: u8 = 1;
const NEWER: u8 = 2;
const LISTED: u8 = 3;

/// One digest entry in chitchat's form: the node's id, generation and
/// address as they were written (`key`), and its three counters.
struct Entry<'a> {
    key: &'a [u8],
    heartbeat: u64,
    gc: u64,
    max_version: u64,
}

impl Entry<'_> {
    fn write(&self, heartbeat: u64, out: &mut Writer) -> Result<(), CodecError> {
        out.put(self.key)?;
        out.put(&heartbeat.to_le_bytes())?;
        out.put(&self.gc.to_le_bytes())?;
        out.put(&self.max_version.to_le_bytes())
    }
}

/// The FNV-1a hash of a SYN's chitchat bytes, by which an answer names it.
pub fn syn_hash(syn: &[u8]) -> u64 {
    syn.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The hash of the SYN a compact message answers, or None when it is not
/// an answer.
pub fn answered_syn(compact: &[u8]) -> Option<u64> {
    match compact {
        [ANSWER, hash @ ..] if hash.len() >= 8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(&hash[..8]);
            Some(u64::from_le_bytes(a))
        }
        _ => None,
    }
}

/// Which Syn a node's next SynAck answers, for its transport: chitchat
/// answers each message it receives before it takes the next, so it is
/// the last message received, when that was a Syn from the node the
/// SynAck goes to.
#[derive(Debug, Default)]
pub struct Answering(Option<(SocketAddr, Vec<u8>)>);

impl Answering {
    /// A message came from `from`: `syn` holds its chitchat bytes when it
    /// is a Syn.
    pub fn received(&mut self, from: SocketAddr, syn: Option<Vec<u8>>) {
        self.0 = syn.map(|s| (from, s));
    }

    /// A message to `to` (chitchat's bytes) in the compact form: a SynAck
    /// that answers the Syn just received from `to` is coded against it
    /// (returned too), anything else compacted alone.
    pub fn compact(
        &mut self,
        to: SocketAddr,
        plain: &[u8],
    ) -> Result<(Vec<u8>, Option<Vec<u8>>), CodecError> {
        let answered = match (self.0.take(), plain.get(3)) {
            (Some((from, syn)), Some(&SYN_ACK)) if from == to => Some(syn),
            _ => None,
        };
        let coded = match &answered {
            Some(syn) => compact_answer(plain, syn)?,
            None => super::compact(plain)?,
        };
        Ok((coded, answered))
    }
}

/// A SYN-ACK (chitchat's bytes) in the compact form, coded against the SYN
/// (chitchat's bytes) it answers.
pub fn compact_answer(syn_ack: &[u8], syn: &[u8]) -> Result<Vec<u8>, CodecError> {
    let base = syn_entries(syn)?;
    let mut r = header(syn_ack, SYN_ACK)?;
    let ours = entries(&mut r)?;
    let delta = r.0;

    let index: std::collections::HashMap<&[u8], usize> =
        base.iter().enumerate().map(|(i, e)| (e.key, i)).collect();
    let mut codes = vec![ABSENT; base.len()];
    let mut newer = vec![0u64; base.len()];
    let mut listed = Writer {
        buf: Vec::new(),
        limit: usize::MAX,
    };
    let mut listed_count: u16 = 0;
    for e in &ours {
        match index.get(e.key) {
            Some(&i) if e.gc == base[i].gc && e.max_version == base[i].max_version => {
                codes[i] = if e.heartbeat <= base[i].heartbeat {
                    SAME
                } else {
                    newer[i] = e.heartbeat - base[i].heartbeat;
                    NEWER
                };
            }
            found => {
                if let Some(&i) = found {
                    codes[i] = LISTED;
                }
                e.write(e.heartbeat, &mut listed)?;
                listed_count = listed_count
                    .checked_add(1)
                    .ok_or(CodecError::Range("digest length"))?;
            }
        }
    }

    let mut out = Vec::with_capacity(16 + base.len() / 4 + delta.len());
    out.push(ANSWER);
    out.extend_from_slice(&syn_hash(syn).to_le_bytes());
    put_varint(&mut out, base.len() as u64);
    for four in codes.chunks(4) {
        out.push(
            four.iter()
                .enumerate()
                .fold(0u8, |b, (j, c)| b | (c << (2 * j))),
        );
    }
    for (i, c) in codes.iter().enumerate() {
        if *c == NEWER {
            put_varint(&mut out, newer[i]);
        }
    }
    let mut plain = listed_count.to_le_bytes().to_vec();
    plain.extend_from_slice(&listed.buf);
    compact_digest(&mut Reader(&plain), &mut out)?;
    out.extend_from_slice(delta);
    Ok(out)
}

/// An answer back in chitchat's SYN-ACK bytes, given the SYN it names
/// (the caller finds it with [`answered_syn`]); refused beyond `limit`.
pub fn expand_answer(compact: &[u8], syn: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let mut r = Reader(compact);
    if r.u8("message type")? != ANSWER {
        return Err(CodecError::Range("not an answer"));
    }
    if u64::from_le_bytes(r.array("SYN hash")?) != syn_hash(syn) {
        return Err(CodecError::Range("answered SYN"));
    }
    let base = syn_entries(syn)?;
    if r.varint("entry count")? != base.len() as u64 {
        return Err(CodecError::Range("entry count"));
    }
    let packed = r.take(base.len().div_ceil(4), "codes")?;
    let code = |i: usize| (packed[i / 4] >> (2 * (i % 4))) & 3;

    let mut digest = Writer {
        buf: Vec::new(),
        limit,
    };
    let mut count: u16 = 0;
    for (i, e) in base.iter().enumerate() {
        let heartbeat = match code(i) {
            SAME => e.heartbeat,
            NEWER => e
                .heartbeat
                .checked_add(r.varint("heartbeat")?)
                .ok_or(CodecError::Range("heartbeat"))?,
            _ => continue,
        };
        e.write(heartbeat, &mut digest)?;
        count = count
            .checked_add(1)
            .ok_or(CodecError::Range("digest length"))?;
    }
    let mut listed = Writer {
        buf: Vec::new(),
        limit,
    };
    expand_digest(&mut r, &mut listed)?;
    let mut lr = Reader(&listed.buf);
    let listed_count = lr.u16("digest")?;
    count = count
        .checked_add(listed_count)
        .ok_or(CodecError::Range("digest length"))?;

    let mut out = Writer {
        buf: Vec::with_capacity(compact.len().saturating_mul(4).min(limit)),
        limit,
    };
    out.put(&MAGIC)?;
    out.put(&[VERSION, SYN_ACK])?;
    out.put(&count.to_le_bytes())?;
    out.put(&digest.buf)?;
    out.put(lr.0)?;
    out.put(r.0)?;
    Ok(out.buf)
}

/// Checks the magic, version and type of a message in chitchat's bytes.
fn header(plain: &[u8], kind: u8) -> Result<Reader<'_>, CodecError> {
    let mut r = Reader(plain);
    if r.take(2, "magic")? != MAGIC || r.u8("version")? != VERSION {
        return Err(CodecError::NotChitchat);
    }
    match r.u8("message type")? {
        k if k == kind => Ok(r),
        k => Err(CodecError::Type(k)),
    }
}

/// The digest entries of a SYN in chitchat's bytes.
fn syn_entries(syn: &[u8]) -> Result<Vec<Entry<'_>>, CodecError> {
    let mut r = header(syn, SYN)?;
    entries(&mut r)
}

/// A digest's entries in chitchat's bytes, leaving the reader after them.
fn entries<'a>(r: &mut Reader<'a>) -> Result<Vec<Entry<'a>>, CodecError> {
    let count = r.u16("digest")?;
    let mut out = Vec::with_capacity(count.into());
    for _ in 0..count {
        let start = r.0;
        let len = r.u16("node id")?;
        r.take(len.into(), "node id")?;
        r.u64("generation")?;
        match r.u8("address")? {
            4 => r.take(4, "address")?,
            6 => r.take(16, "address")?,
            f => return Err(CodecError::Family(f)),
        };
        r.u16("port")?;
        let key = &start[..start.len() - r.0.len()];
        out.push(Entry {
            key,
            heartbeat: r.u64("heartbeat")?,
            gc: r.u64("last GC version")?,
            max_version: r.u64("max version")?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
