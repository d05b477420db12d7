//! Tests of `transport`.

use super::*;
use crate::mesh::gossip_check::Refusal;

#[test]
fn the_stream_limit_doubles_at_three_quarters_up_to_the_maximum() {
    let first = tls::INITIAL_BIDI_STREAMS;
    assert_eq!(raise_stream_limit(1, first), None);
    let at = (first as usize * 3).div_ceil(4);
    assert_eq!(raise_stream_limit(at - 1, first), None);
    assert_eq!(raise_stream_limit(at, first), Some(first * 2));
    let max = tls::MAX_BIDI_STREAMS;
    assert_eq!(raise_stream_limit(max as usize, max), None);
    assert_eq!(raise_stream_limit(max as usize, max / 2 + 1), Some(max));
}

fn decode(bytes: &[u8]) -> Result<crate::mesh::gossip_check::Checked, GossipDecodeError> {
    super::decode(bytes, &RecentSyns::default(), tokio::time::Instant::now())
}

#[test]
fn decode_refuses_garbage() {
    assert!(decode(&[]).is_err());
    assert!(decode(&[9, 1, 2]).is_err());
    assert!(decode(&[KIND_GOSSIP, 0xff, 0xff, 0xff]).is_err());
    let msg = ChitchatMessage::BadCluster;
    let mut plain = Vec::new();
    msg.serialize(&mut plain);
    let mut buf = vec![KIND_GOSSIP];
    buf.extend(mesh_protocol::digest_codec::compact(&plain).unwrap());
    assert_eq!(decode(&buf).unwrap().message, msg);
    buf.push(0);
    assert!(decode(&buf).is_err(), "trailing bytes");
    // chitchat's own form is not the wire form.
    let mut raw = vec![KIND_GOSSIP];
    raw.extend(plain);
    assert!(decode(&raw).is_err());
}

/// chitchat 0.11's bytes for a SYN or SYN-ACK whose digest holds nodes
/// `n0`.. with these heartbeats (an empty delta after a SYN-ACK's).
fn gossip(kind: u8, heartbeats: &[u64]) -> Vec<u8> {
    let mut b = 45_139u16.to_le_bytes().to_vec();
    b.extend([0, kind]);
    b.extend((heartbeats.len() as u16).to_le_bytes());
    for (i, hb) in heartbeats.iter().enumerate() {
        let id = format!("n{i}");
        b.extend((id.len() as u16).to_le_bytes());
        b.extend(id.as_bytes());
        b.extend(1_764_000_000_000u64.to_le_bytes());
        b.extend([4, 10, 0, 0, i as u8 + 2]);
        b.extend(7946u16.to_le_bytes());
        b.extend(hb.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(5u64.to_le_bytes());
    }
    match kind {
        0 => b.extend([4, 0, b'm', b'e', b's', b'h']),
        _ => b.push(0),
    }
    b
}

#[test]
fn an_answer_is_read_against_the_syn_it_names_and_refused_without_it() {
    use chitchat::Deserializable;
    let syn = gossip(0, &[10, 20, 30]);
    let syn_ack = gossip(1, &[11, 20, 29]);
    let mut buf = vec![KIND_GOSSIP];
    buf.extend(mesh_protocol::digest_codec::compact_answer(&syn_ack, &syn).unwrap());
    let now = tokio::time::Instant::now();
    let syns = RecentSyns::default();
    assert!(matches!(
        super::decode(&buf, &syns, now),
        Err(GossipDecodeError::Refused(Refusal::UnknownSyn))
    ));
    syns.sent(Bytes::from(syn), now);
    let checked = super::decode(&buf, &syns, now).unwrap();
    assert_eq!(checked.kind, Kind::SynAck);
    // n2's older heartbeat comes back as the SYN's, which the initiator had.
    let expected = ChitchatMessage::deserialize(&mut &gossip(1, &[11, 20, 30])[..]).unwrap();
    assert_eq!(checked.message, expected);
}
