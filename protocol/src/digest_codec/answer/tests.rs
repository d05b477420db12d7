use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use super::super::tests::{Entry as Node, entry, mesh, syn, syn_ack};
use super::super::{compact, expand};
use super::*;

const LIMIT: usize = super::super::MAX_MESSAGE;

/// A SYN-ACK in chitchat's bytes as the initiator reads it: each node's
/// key and counters, and the delta.
type Read = (BTreeMap<Vec<u8>, (u64, u64, u64)>, Vec<u8>);

fn read(syn_ack: &[u8]) -> Read {
    let mut r = header(syn_ack, SYN_ACK).unwrap();
    let map = entries(&mut r)
        .unwrap()
        .into_iter()
        .map(|e| (e.key.to_vec(), (e.heartbeat, e.gc, e.max_version)))
        .collect();
    (map, r.0.to_vec())
}

/// What the answer promises: the answering node's digest, except that an
/// entry with the SYN's versions and a heartbeat no newer than the SYN's
/// comes back with the SYN's heartbeat.
fn promised(answer: &[u8], syn: &[u8]) -> Read {
    let (mut ours, delta) = read(answer);
    let base = syn_entries(syn).unwrap();
    for e in base {
        if let Some(v) = ours.get_mut(e.key)
            && v.1 == e.gc
            && v.2 == e.max_version
            && v.0 <= e.heartbeat
        {
            v.0 = e.heartbeat;
        }
    }
    (ours, delta)
}

fn round_trip(answer: &[u8], syn: &[u8]) -> Vec<u8> {
    let compact = compact_answer(answer, syn).unwrap();
    assert_eq!(answered_syn(&compact), Some(syn_hash(syn)));
    expand_answer(&compact, syn, LIMIT).unwrap()
}

/// A thousand-node mesh as a node answering a SYN sees it: most heartbeats
/// a little older or newer, a few nodes with newer state, one it lacks and
/// one the SYN did not have.
#[test]
fn a_thousand_node_answer_takes_a_few_bits_an_entry_and_keeps_its_meaning() {
    let theirs = mesh(1000);
    let mut ours = theirs.clone();
    for (i, e) in ours.iter_mut().enumerate() {
        match i % 10 {
            0..=4 => e.heartbeat -= 3,
            5..=8 => e.heartbeat += 2,
            _ => e.max_version += 1,
        }
    }
    ours.remove(500);
    ours.push(Node {
        id: "n999x".into(),
        generation: 1,
        ip: IpAddr::V4(Ipv4Addr::new(10, 0, 9, 9)),
        port: 7946,
        heartbeat: 4,
        gc: 0,
        max_version: 9,
    });
    let syn = syn(&theirs, "mesh");
    let answer = syn_ack(&ours, b"delta blocks");
    let coded = compact_answer(&answer, &syn).unwrap();
    let plain = compact(&answer).unwrap();
    // ~100 listed entries of ~9 bytes, 400 heartbeat differences of 1
    // byte, 250 bytes of codes: under a third of the plain compact form.
    assert!(
        coded.len() * 3 < plain.len(),
        "{} vs {}",
        coded.len(),
        plain.len()
    );
    let back = expand_answer(&coded, &syn, LIMIT).unwrap();
    assert_eq!(read(&back), promised(&answer, &syn));
    // What chitchat reads back differs from the answer only in the
    // heartbeats it already knew.
    let (got, _) = read(&back);
    let (sent, _) = read(&answer);
    assert_eq!(got.len(), sent.len());
    assert!(
        got.iter()
            .all(|(k, v)| sent[k].0 <= v.0 && sent[k].1 == v.1)
    );
}

#[test]
fn an_answer_is_refused_against_another_syn_and_plain_expand_refuses_it() {
    let theirs = mesh(5);
    let syn1 = syn(&theirs, "mesh");
    let syn2 = syn(&theirs[..4], "mesh");
    let coded = compact_answer(&syn_ack(&theirs, b""), &syn1).unwrap();
    assert_eq!(
        expand_answer(&coded, &syn2, LIMIT),
        Err(CodecError::Range("answered SYN"))
    );
    assert_eq!(expand(&coded, LIMIT), Err(CodecError::Type(ANSWER)));
    assert_eq!(answered_syn(&[ANSWER, 1, 2]), None);
    assert_eq!(answered_syn(&compact(&syn1).unwrap()), None);
    // Not a SYN, not a SYN-ACK: refused, not coded.
    assert!(compact_answer(&syn1, &syn1).is_err());
    assert!(compact_answer(&syn_ack(&theirs, b""), &syn_ack(&theirs, b"")).is_err());
}

#[test]
fn an_empty_mesh_and_a_stranger_round_trip() {
    let syn0 = syn(&[], "mesh");
    let answer = syn_ack(&mesh(3), b"d");
    assert_eq!(read(&round_trip(&answer, &syn0)), read(&answer));
    let answer = syn_ack(&[], b"");
    assert_eq!(
        read(&round_trip(&answer, &syn(&mesh(3), "m"))),
        read(&answer)
    );
}

#[test]
fn a_syn_ack_is_coded_only_against_the_syn_just_received_from_its_peer() {
    let (a, b): (std::net::SocketAddr, std::net::SocketAddr) = (
        "10.0.0.1:7946".parse().unwrap(),
        "10.0.0.2:7946".parse().unwrap(),
    );
    let syn = syn(&mesh(5), "c");
    let answer = syn_ack(&mesh(5), b"");
    let mut answering = Answering::default();
    answering.received(a, Some(syn.clone()));
    // To another peer: compacted alone (and the Syn counts as answered).
    let (other, against) = answering.compact(b, &answer).unwrap();
    assert_eq!((other[0], against), (SYN_ACK, None));
    answering.received(a, Some(syn.clone()));
    let (coded, against) = answering.compact(a, &answer).unwrap();
    assert_eq!(coded[0], ANSWER);
    assert_eq!(against.as_deref(), Some(&syn[..]));
    // Used once.
    assert_eq!(answering.compact(a, &answer).unwrap().0[0], SYN_ACK);
    // A message received in between (not a Syn) ends it.
    answering.received(a, Some(syn));
    answering.received(a, None);
    assert_eq!(answering.compact(a, &answer).unwrap().0[0], SYN_ACK);
}

/// An answering node's digest made from the SYN's: entries dropped,
/// heartbeats and versions moved, strangers added.
fn answer_to(theirs: Vec<Node>) -> impl Strategy<Value = (Vec<Node>, Vec<Node>)> {
    let n = theirs.len();
    (
        proptest::collection::vec((0u8..4, -3i64..3), n),
        proptest::collection::vec(entry(), 0..4),
    )
        .prop_map(move |(changes, strangers)| {
            let mut ours: Vec<Node> = theirs
                .iter()
                .zip(changes)
                .filter(|(_, (what, _))| *what != 0)
                .map(|(e, (what, by))| {
                    let mut e = e.clone();
                    match what {
                        1 => e.heartbeat = e.heartbeat.saturating_add_signed(by),
                        2 => e.max_version = e.max_version.saturating_add_signed(by),
                        _ => e.gc = e.gc.saturating_add_signed(by),
                    }
                    e
                })
                .collect();
            ours.extend(strangers);
            (theirs.clone(), ours)
        })
}

proptest! {
    #[test]
    fn any_answer_keeps_its_meaning(
        (theirs, ours) in proptest::collection::vec(entry(), 0..30).prop_flat_map(answer_to),
        delta in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let syn = syn(&theirs, "c");
        let answer = syn_ack(&ours, &delta);
        prop_assert_eq!(read(&round_trip(&answer, &syn)), promised(&answer, &syn));
    }

    #[test]
    fn garbage_answers_are_errors_or_within_the_limit(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let syn = syn(&mesh(20), "c");
        let mut named = vec![ANSWER];
        named.extend(syn_hash(&syn).to_le_bytes());
        named.extend(&bytes);
        for candidate in [bytes, named] {
            if let Ok(out) = expand_answer(&candidate, &syn, 4096) {
                prop_assert!(out.len() <= 4096);
            }
        }
    }
}
