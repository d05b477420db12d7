//! Gossip as it arrives: each stream's message decoded and checked
//! ([`gossip_check`]), a reply taken only in answer to an exchange this node
//! started with that peer, and what passes handed to chitchat's inbox.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use quinn::Connection;
use tracing::warn;

use tokio::time::Instant;

use super::syns::RecentSyns;
use super::{KIND_GOSSIP, MAX_GOSSIP_BYTES, Shared};
use crate::mesh::gossip_check::{self, Checked, Refusal};
use crate::mesh::tls;

/// Who a peer is, for its gossip exchanges: the node its certificate names
/// (the same whichever connection a message takes), else its address.
pub(super) fn peer_key(conn: &Connection) -> String {
    tls::peer_node_name(conn).unwrap_or_else(|| conn.remote_address().to_string())
}

/// Reads gossip streams from one connection until it closes.
pub(super) async fn read_gossip(shared: Arc<Shared>, conn: Connection) {
    let from = conn.remote_address();
    let peer: Arc<str> = peer_key(&conn).into();
    while let Ok(mut stream) = conn.accept_uni().await {
        let (shared, peer) = (shared.clone(), peer.clone());
        tokio::spawn(async move {
            let bytes = match stream.read_to_end(MAX_GOSSIP_BYTES).await {
                Ok(b) => b,
                Err(e) => {
                    shared.refusals.messages.fetch_add(1, Ordering::Relaxed);
                    warn!(peer = %from, error = %e, "dropped unreadable gossip stream");
                    return;
                }
            };
            shared.gossip.read(bytes.len());
            let now = tokio::time::Instant::now();
            let checked = decode(&bytes, &shared.syns, now).and_then(|c| {
                let taken = shared
                    .exchanges
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take(&peer, c.kind, now);
                if taken {
                    Ok(c)
                } else {
                    Err(Refusal::Unsolicited(c.kind).into())
                }
            });
            match checked {
                Ok(c) => {
                    shared.gossip.received(c.kind.metric());
                    let inbox = shared
                        .inbox
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    if let Some(inbox) = inbox {
                        let _ = inbox.try_send((from, c.message));
                    }
                }
                Err(e) => {
                    let n = match &e {
                        GossipDecodeError::Refused(r) => shared.refusals.gossip_refused(r),
                        _ => shared.refusals.messages.fetch_add(1, Ordering::Relaxed) + 1,
                    };
                    // Logged, but not once per message of a hostile peer.
                    if n.is_power_of_two() {
                        warn!(peer = %from, node = %peer, error = %e, refused_so_far = n, "dropped gossip message");
                    }
                }
            }
        });
    }
}

/// Why a gossip stream's bytes were dropped.
#[derive(Debug, thiserror::Error)]
pub enum GossipDecodeError {
    #[error("empty stream")]
    Empty,
    #[error("unknown stream kind {0}")]
    Kind(u8),
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// Parses and checks one stream's bytes: the kind byte, then a chitchat
/// message in the compact form (`mesh_protocol::digest_codec`), expanded
/// to chitchat's (at most [`MAX_GOSSIP_BYTES`]) and checked. A SYN-ACK
/// coded against the SYN it answers is expanded against this node's copy
/// of that SYN, from `syns`.
pub fn decode(bytes: &[u8], syns: &RecentSyns, now: Instant) -> Result<Checked, GossipDecodeError> {
    use mesh_protocol::digest_codec::{answered_syn, expand, expand_answer};
    match bytes.split_first() {
        Some((&KIND_GOSSIP, rest)) => {
            let plain = match answered_syn(rest) {
                Some(hash) => {
                    let syn = syns.get(hash, now).ok_or(Refusal::UnknownSyn)?;
                    expand_answer(rest, &syn, MAX_GOSSIP_BYTES)
                }
                None => expand(rest, MAX_GOSSIP_BYTES),
            }
            .map_err(Refusal::Codec)?;
            Ok(gossip_check::check(&plain)?)
        }
        Some((kind, _)) => Err(GossipDecodeError::Kind(*kind)),
        None => Err(GossipDecodeError::Empty),
    }
}
