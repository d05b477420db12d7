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
    let mut buf = vec![KIND_GOSSIP];
    msg.serialize(&mut buf);
    assert_eq!(decode(&buf).unwrap().message, msg);
    buf.push(0);
    assert!(decode(&buf).is_err(), "trailing bytes");
}
