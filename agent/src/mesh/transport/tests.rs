//! Tests of `transport`.

use super::*;

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
