use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

/// One digest entry, as chitchat 0.11 holds it.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) id: String,
    pub(super) generation: u64,
    pub(super) ip: IpAddr,
    pub(super) port: u16,
    pub(super) heartbeat: u64,
    pub(super) gc: u64,
    pub(super) max_version: u64,
}

/// chitchat 0.11's serialization (`serialize.rs`, `digest.rs`,
/// `message.rs`), written out by hand.
pub(super) fn digest(entries: &[Entry]) -> Vec<u8> {
    let mut sorted = entries.to_vec();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut b = (sorted.len() as u16).to_le_bytes().to_vec();
    for e in &sorted {
        b.extend((e.id.len() as u16).to_le_bytes());
        b.extend(e.id.as_bytes());
        b.extend(e.generation.to_le_bytes());
        match e.ip {
            IpAddr::V4(v4) => {
                b.push(4);
                b.extend(v4.octets());
            }
            IpAddr::V6(v6) => {
                b.push(6);
                b.extend(v6.octets());
            }
        }
        b.extend(e.port.to_le_bytes());
        b.extend(e.heartbeat.to_le_bytes());
        b.extend(e.gc.to_le_bytes());
        b.extend(e.max_version.to_le_bytes());
    }
    b
}

pub(super) fn header(kind: u8) -> Vec<u8> {
    let mut b = MAGIC.to_vec();
    b.extend([VERSION, kind]);
    b
}

pub(super) fn syn(entries: &[Entry], cluster: &str) -> Vec<u8> {
    let mut b = header(SYN);
    b.extend(digest(entries));
    b.extend((cluster.len() as u16).to_le_bytes());
    b.extend(cluster.as_bytes());
    b
}

pub(super) fn syn_ack(entries: &[Entry], delta: &[u8]) -> Vec<u8> {
    let mut b = header(SYN_ACK);
    b.extend(digest(entries));
    b.extend(delta);
    b
}

/// A mesh as the agents make it: `n0`..`nN` on one subnet, port 7946.
pub(super) fn mesh(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| Entry {
            id: format!("n{i}"),
            generation: 1_764_590_000_000 + i as u64 * 37,
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8 + 2)),
            port: 7946,
            heartbeat: 17_280 + i as u64,
            gc: 0,
            max_version: 90_000 + i as u64 * 3,
        })
        .collect()
}

const LIMIT: usize = 1 << 20;

#[test]
fn a_thousand_node_digest_shrinks_about_three_times_and_comes_back_whole() {
    let bytes = syn(&mesh(1000), "prod");
    let small = compact(&bytes).unwrap();
    assert_eq!(expand(&small, LIMIT).unwrap(), bytes);
    assert!(
        small.len() * 3 < bytes.len(),
        "{} compact bytes for {} of chitchat's",
        small.len(),
        bytes.len()
    );
}

#[test]
fn every_message_type_round_trips() {
    let entries = mesh(7);
    for bytes in [
        syn(&entries, "c"),
        syn(&[], ""),
        syn_ack(&entries, b"\x01\x02delta blocks as they are"),
        syn_ack(&[], b""),
        [header(ACK), b"\x00\x05hello".to_vec()].concat(),
        header(BAD_CLUSTER),
    ] {
        let small = compact(&bytes).unwrap();
        assert_eq!(expand(&small, LIMIT).unwrap(), bytes, "{bytes:?}");
    }
}

#[test]
fn what_is_not_chitchats_is_refused() {
    assert_eq!(compact(b""), Err(CodecError::Short("magic")));
    assert_eq!(compact(b"\x00\x00\x00\x00"), Err(CodecError::NotChitchat));
    assert_eq!(compact(&header(9)), Err(CodecError::Type(9)));
    let mut trailing = syn(&mesh(2), "c");
    trailing.push(0);
    assert!(compact(&trailing).is_err());
    let mut small = compact(&syn(&mesh(2), "c")).unwrap();
    small.push(0);
    assert!(expand(&small, LIMIT).is_err(), "bytes after a Syn");
    assert!(compact(&[header(BAD_CLUSTER), vec![0]].concat()).is_err());
    assert!(
        expand(&[BAD_CLUSTER, 0], LIMIT).is_err(),
        "bytes after a BadCluster"
    );
    assert_eq!(
        expand(&[SYN, 1, 0x80, 0, 0], LIMIT),
        Err(CodecError::Range("flags"))
    );
    // A port difference that would overflow an i64 (found in review).
    let flags = SAME_GENERATION | NO_GC;
    let mut huge = vec![SYN, 2, flags, 0, 0, 0, 2, 0, 0, flags, 0, 0, 0];
    huge.extend([
        0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0,
    ]);
    assert_eq!(expand(&huge, LIMIT), Err(CodecError::Range("port")));
    let mut cut = syn(&mesh(3), "c");
    cut.truncate(cut.len() - 10);
    assert!(compact(&cut).is_err());
}

#[test]
fn expanding_stops_at_the_limit() {
    let bytes = syn(&mesh(100), "c");
    let small = compact(&bytes).unwrap();
    assert_eq!(
        expand(&small, bytes.len() - 1),
        Err(CodecError::TooLarge(bytes.len() - 1))
    );
    assert_eq!(expand(&small, bytes.len()).unwrap(), bytes);
    // Each entry may repeat the whole id before it: a few bytes that would
    // expand without end stop at the limit.
    let mut bomb = vec![SYN];
    put_varint(&mut bomb, 65_535);
    let flags = SAME_GENERATION | SAME_PORT | NO_GC;
    bomb.extend([flags, 0]);
    put_varint(&mut bomb, 60_000);
    bomb.extend(vec![b'x'; 60_000]);
    // The address, the heartbeat and the max version.
    bomb.extend([0, 0, 0]);
    for _ in 1..65_535 {
        bomb.push(flags);
        put_varint(&mut bomb, 60_000);
        bomb.extend([0, 0, 0, 0]);
    }
    assert!(bomb.len() < 1 << 20);
    assert_eq!(expand(&bomb, LIMIT), Err(CodecError::TooLarge(LIMIT)));
}

pub(super) fn entry() -> impl Strategy<Value = Entry> {
    (
        "[a-z0-9.-]{0,12}",
        // Equal values (left out of the compact form) as well as any.
        prop_oneof![Just(1u64), any::<u64>()],
        prop_oneof![
            any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
            any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
        ],
        prop_oneof![Just(7946u16), any::<u16>()],
        any::<u64>(),
        prop_oneof![Just(0u64), any::<u64>()],
        any::<u64>(),
    )
        .prop_map(
            |(id, generation, ip, port, heartbeat, gc, max_version)| Entry {
                id,
                generation,
                ip,
                port,
                heartbeat,
                gc,
                max_version,
            },
        )
}

proptest! {
    #[test]
    fn any_digest_round_trips_byte_for_byte(
        entries in proptest::collection::vec(entry(), 0..40),
        cluster in "[a-z]{0,20}",
        delta in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        for bytes in [syn(&entries, &cluster), syn_ack(&entries, &delta)] {
            let small = compact(&bytes).unwrap();
            prop_assert_eq!(expand(&small, LIMIT).unwrap(), bytes);
        }
    }

    #[test]
    fn garbage_is_an_error_or_within_the_limit_never_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let _ = compact(&bytes);
        if let Ok(out) = expand(&bytes, 4096) {
            prop_assert!(out.len() <= 4096);
        }
    }
}
