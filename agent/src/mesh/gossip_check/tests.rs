//! Tests of `gossip_check`, with messages crafted byte by byte.

use std::net::SocketAddr;

use chitchat::{ChitchatId, ChitchatMessage, Deserializable};
use proptest::prelude::*;

use super::craft::{self, Ops};
use super::*;

fn id(name: &str) -> ChitchatId {
    let addr: SocketAddr = "10.0.0.1:7946".parse().unwrap();
    ChitchatId::new(name.to_owned(), 1, addr)
}

fn refusal(bytes: &[u8]) -> Refusal {
    match check(bytes) {
        Ok(c) => panic!("taken: {:?}", c.kind),
        Err(e) => e,
    }
}

/// What chitchat itself makes of the bytes.
fn chitchat_reads(bytes: &[u8]) -> Option<ChitchatMessage> {
    let mut rest = bytes;
    ChitchatMessage::deserialize(&mut rest).ok()
}

fn honest_ops() -> Ops {
    Ops::default()
        .node(&id("n1"), 0, 0)
        .key_value("load", "2,4;1;0;37", 3)
        .key_value("v", "3", 7)
        .node(&id("n2"), 0, 4)
        .max_version(9)
}

fn honest_digest() -> Vec<u8> {
    craft::digest(&[(id("n1"), 12, 0, 7), (id("n2"), 30, 0, 9)])
}

#[test]
fn honest_messages_are_taken_as_chitchat_reads_them() {
    let messages = [
        (craft::syn("c1", &honest_digest()), Kind::Syn),
        (
            craft::syn_ack(&honest_digest(), &honest_ops().plain()),
            Kind::SynAck,
        ),
        (craft::ack(&honest_ops().plain()), Kind::Ack),
        (craft::ack(&Ops::default().plain()), Kind::Ack),
    ];
    for (bytes, kind) in messages {
        let checked = check(&bytes).unwrap_or_else(|e| panic!("{kind:?} refused: {e}"));
        assert_eq!(checked.kind, kind);
        // In plain blocks, the re-framing is the message itself.
        assert_eq!(Some(checked.message), chitchat_reads(&bytes));
    }
    let bad_cluster = [MAGIC.to_le_bytes().as_slice(), &[0, 3]].concat();
    let checked = check(&bad_cluster).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(checked.message, ChitchatMessage::BadCluster);
}

#[test]
fn compressed_deltas_are_taken() {
    let bytes = craft::ack(&honest_ops().compressed());
    let checked = check(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(checked.kind, Kind::Ack);
    // Many blocks: every node's key-values past one block's 16 KiB.
    let mut ops = Ops::default();
    for n in 0..40 {
        ops = ops.node(&id(&format!("node-{n}")), 0, 0);
        for v in 1..=20 {
            ops = ops.key_value(&format!("svcdef.s{v}"), &"{\"image\":\"x\"}".repeat(4), v);
        }
    }
    let bytes = craft::ack(&ops.compressed());
    assert!(bytes.len() < crate::mesh::transport::MAX_GOSSIP_BYTES);
    assert!(check(&bytes).is_ok());
}

/// chitchat reads this delta and, applying it to a node whose max version
/// is below 5, sets key `k` at version 10 and then asserts that the delta's
/// max version (5) is at least the node's (10): it panics.
#[test]
fn a_max_version_below_a_key_value_is_refused() {
    let ops = Ops::default()
        .node(&id("n1"), 0, 0)
        .key_value("k", "v", 10)
        .max_version(5);
    for bytes in [
        craft::ack(&ops.plain()),
        craft::ack(&ops.compressed()),
        craft::syn_ack(&honest_digest(), &ops.plain()),
    ] {
        assert!(chitchat_reads(&bytes).is_some(), "chitchat takes it");
        assert_eq!(
            refusal(&bytes),
            Refusal::MaxVersionBelowKeyValue {
                node: "n1".into(),
                max_version: 5,
                version: 10
            }
        );
    }
    // Also when another node follows, and however low the max version.
    let ops = Ops::default()
        .node(&id("n1"), 0, 0)
        .key_value("k", "v", 10)
        .max_version(0)
        .node(&id("n2"), 0, 0);
    assert_eq!(
        refusal(&craft::ack(&ops.plain())).reason(),
        "max-version-below-key-value"
    );
    // A max version at or above the key-values is what chitchat applies.
    let ops = Ops::default()
        .node(&id("n1"), 0, 0)
        .key_value("k", "v", 10)
        .max_version(10);
    assert!(check(&craft::ack(&ops.plain())).is_ok());
}

#[test]
fn a_zstd_bomb_is_refused_before_it_is_held() {
    let blocks = MAX_DELTA_BYTES / MAX_BLOCK + 1;
    let bomb = craft::zstd_bomb(blocks);
    assert!(
        bomb.len() < 4096,
        "{} bytes on the wire decompress to {} MiB",
        bomb.len(),
        (blocks * MAX_BLOCK) >> 20
    );
    assert_eq!(refusal(&bomb), Refusal::TooLarge);
    // Within the bound, the zeros are read, and refused for what they are.
    let within = craft::zstd_bomb(blocks - 1);
    assert_eq!(refusal(&within), Refusal::NodeId(String::new()));
    // A message's worth of the smallest blocks stays refused.
    let max = craft::zstd_bomb(crate::mesh::transport::MAX_GOSSIP_BYTES / 20);
    assert_eq!(refusal(&max), Refusal::TooLarge);
}

#[test]
fn garbage_is_refused_with_its_reason() {
    let magic = MAGIC.to_le_bytes();
    let head = |t: u8| [magic.as_slice(), &[0, t]].concat();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "truncated"),
        (vec![1, 2, 3, 4, 5], "magic"),
        ([magic.as_slice(), &[1, 0]].concat(), "version"),
        (head(9), "type"),
        (head(0), "truncated"),
        ([head(2), vec![7]].concat(), "block"),
        ([head(2), vec![1, 3, 0, 1, 2, 3, 0]].concat(), "decompress"),
        ([head(2), vec![2, 9, 0, 1]].concat(), "truncated"),
        ([head(2), vec![0, 0]].concat(), "trailing"),
        (
            [head(2), Ops::default().max_version(1).plain()].concat(),
            "orphan",
        ),
        ([head(2), plain(&[9])].concat(), "op"),
        (
            craft::syn("c1", &craft::digest(&[(id("Not_A-Node!"), 1, 0, 0)])),
            "node-id",
        ),
        (craft::syn("c1", &[0x01, 0x04]), "too-many-nodes"),
    ];
    for (bytes, reason) in cases {
        let r = refusal(&bytes);
        assert_eq!(r.reason(), reason, "{bytes:?}: {r}");
    }
}

fn plain(ops: &[u8]) -> Vec<u8> {
    craft::plain_blocks(ops)
}

#[test]
fn what_chitchat_refuses_or_cannot_send_on_is_refused() {
    let dup = Ops::default().node(&id("n1"), 0, 0).node(&id("n1"), 0, 0);
    assert_eq!(
        refusal(&craft::ack(&dup.plain())),
        Refusal::DuplicateNode("n1".into())
    );
    let back = Ops::default()
        .node(&id("n1"), 0, 0)
        .key_value("a", "1", 4)
        .key_value("b", "1", 4);
    assert_eq!(
        refusal(&craft::ack(&back.plain())).reason(),
        "not-increasing"
    );
    let big =
        Ops::default()
            .node(&id("n1"), 0, 0)
            .key_value("k", &"x".repeat(MAX_KEY_VALUE_BYTES), 1);
    assert_eq!(
        refusal(&craft::ack(&big.compressed())).reason(),
        "key-value-too-large"
    );
    let mut many = Ops::default().node(&id("n1"), 0, 0);
    for v in 1..=MAX_KEY_VALUES as u64 + 1 {
        many = many.key_value("k", "", v);
    }
    assert_eq!(
        refusal(&craft::ack(&many.plain())),
        Refusal::TooManyKeyValues
    );
    let mut nodes = Ops::default();
    for n in 0..=MAX_NODES {
        nodes = nodes.node(&id(&format!("n{n}")), 0, 0);
    }
    assert_eq!(refusal(&craft::ack(&nodes.plain())), Refusal::TooManyNodes);
    let mut status = craft::ack(
        &Ops::default()
            .node(&id("n1"), 0, 0)
            .key_value("k", "v", 1)
            .plain(),
    );
    // The deletion status is the last byte before the end-of-blocks tag.
    let at = status.len() - 2;
    status[at] = 3;
    assert_eq!(refusal(&status), Refusal::Status(3));
}

proptest! {
    /// Whatever the bytes, a refusal or a message, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if check(&bytes).is_ok() {
            prop_assert!(chitchat_reads(&bytes).is_some());
        }
    }

    /// Honest messages with bytes changed: refused or taken, never a
    /// panic; and what is taken chitchat can read (the check is never
    /// looser than chitchat's own decoding).
    #[test]
    fn damaged_messages_never_panic(
        compressed in any::<bool>(),
        changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let delta = if compressed { honest_ops().compressed() } else { honest_ops().plain() };
        let mut bytes = craft::syn_ack(&honest_digest(), &delta);
        for (at, b) in changes {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if check(&bytes).is_ok() {
            prop_assert!(chitchat_reads(&bytes).is_some(), "taken, yet chitchat cannot read it");
        }
    }
}
