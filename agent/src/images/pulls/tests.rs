use std::sync::atomic::AtomicUsize;

use mesh_protocol::NodeId;
use mesh_protocol::image::first::{self, Getting};

use super::*;
use crate::images::peers::Asked;
use crate::images::{FetchError, Holder, ImagePeers};
use crate::runtime::memory::{MemoryRuntime, TEST_REGISTRY};

fn pulls(rt: &MemoryRuntime) -> Pulls<MemoryRuntime> {
    Pulls::new(Arc::new(rt.clone()), RegistryAuth::default())
}

#[tokio::test]
async fn a_missing_image_is_pulled_once_for_concurrent_asks() {
    let rt = MemoryRuntime::new();
    let p = pulls(&rt);
    let image = format!("{TEST_REGISTRY}/app:1");
    let asks = (0..5).map(|_| {
        let p = p.clone();
        let image = image.clone();
        async move { p.ensure(&image, PullPolicy::Missing, |_| {}).await }
    });
    for r in futures_util::future::join_all(asks).await {
        r.unwrap();
    }
    assert_eq!(rt.pulls(), 1);
    // Present now: no second pull, unless the policy is always.
    p.ensure(&image, PullPolicy::Missing, |_| {}).await.unwrap();
    assert_eq!(rt.pulls(), 1);
    let mut seen = Vec::new();
    p.ensure(&image, PullPolicy::Always, |pr| seen.push(pr))
        .await
        .unwrap();
    assert_eq!(rt.pulls(), 2);
    assert!(!seen.is_empty());
}

#[tokio::test]
async fn never_refuses_an_absent_image_and_failures_say_if_they_may_pass() {
    let rt = MemoryRuntime::new();
    let p = pulls(&rt);
    let absent = format!("{TEST_REGISTRY}/app:2");
    let never = p
        .ensure(&absent, PullPolicy::Never, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(never, EnsureError::NeverPull(_)), "{never}");
    assert!(!never.may_succeed_later());
    assert_eq!(rt.pulls(), 0);
    // An image already on the host is fine with never.
    p.ensure("mesh-testsvc:latest", PullPolicy::Never, |_| {})
        .await
        .unwrap();

    let nosuch = format!("{TEST_REGISTRY}/nosuch:1");
    let err = p
        .ensure(&nosuch, PullPolicy::Missing, |_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&nosuch), "{err}");
    assert!(!err.may_succeed_later());

    rt.set_available(false);
    let down = p
        .ensure(&absent, PullPolicy::Missing, |_| {})
        .await
        .unwrap_err();
    assert!(down.may_succeed_later(), "{down}");
}

/// Peers that hold every image as the in-memory runtime `held` does, and
/// send what `send` makes of the asked id. With `getting`, the peer says
/// for its first `getting_for` asks that it is getting the image
/// (`downloading` as given) instead of holding it.
struct FakePeers {
    held: MemoryRuntime,
    send: fn(&str) -> Vec<u8>,
    me: NodeId,
    peer: NodeId,
    getting: Option<bool>,
    getting_for: usize,
    asks: Arc<AtomicUsize>,
}

impl FakePeers {
    fn new(held: MemoryRuntime, send: fn(&str) -> Vec<u8>) -> Self {
        Self {
            held,
            send,
            me: NodeId::new("me").unwrap(),
            peer: NodeId::new("peer").unwrap(),
            getting: None,
            getting_for: 0,
            asks: Arc::default(),
        }
    }
}

impl ImagePeers for FakePeers {
    fn me(&self) -> NodeId {
        self.me.clone()
    }

    fn ask<'a>(&'a self, image: &'a str) -> futures_util::future::BoxFuture<'a, Asked> {
        Box::pin(async move {
            let n = self.asks.fetch_add(1, Ordering::SeqCst);
            if let Some(downloading) = self.getting
                && n < self.getting_for
            {
                let getting = vec![Getting {
                    node: self.peer.clone(),
                    downloading,
                }];
                return Asked {
                    holders: Vec::new(),
                    getting,
                };
            }
            let image = self.held.image_id(image).await.unwrap();
            let holders = image
                .into_iter()
                .map(|image| Holder {
                    node: self.peer.clone(),
                    addr: "127.0.0.1:1".parse().unwrap(),
                    image,
                })
                .collect();
            Asked {
                holders,
                getting: Vec::new(),
            }
        })
    }

    fn fetch<'a>(
        &'a self,
        holder: &'a Holder,
    ) -> futures_util::future::BoxFuture<'a, Result<(u64, crate::runtime::TarStream), FetchError>>
    {
        use futures_util::StreamExt;
        let bytes = (self.send)(&holder.image.id);
        Box::pin(async move {
            let tar = futures_util::stream::iter([Ok(bytes::Bytes::from(bytes))]).boxed();
            Ok((1024, tar))
        })
    }
}

/// A peer that holds what the registry would give.
fn peer_holding_all() -> MemoryRuntime {
    let peer = MemoryRuntime::new();
    peer.set_pulled_for_tests(&format!("{TEST_REGISTRY}/app:1"));
    peer.set_pulled_for_tests(&format!("{TEST_REGISTRY}/nosuch:1"));
    peer
}

fn sharing(rt: &MemoryRuntime, send: fn(&str) -> Vec<u8>) -> Pulls<MemoryRuntime> {
    let p = pulls(rt).with_source(ImageSource::PeersFirst);
    p.share_through(Arc::new(FakePeers::new(peer_holding_all(), send)));
    p
}

fn memimage(id: &str) -> Vec<u8> {
    format!("MEMIMAGE {id}").into_bytes()
}

/// Peers-first pulls through `peers`, which it also returns the asks of.
fn sharing_with(rt: &MemoryRuntime, peers: FakePeers) -> (Pulls<MemoryRuntime>, Arc<AtomicUsize>) {
    let p = pulls(rt).with_source(ImageSource::PeersFirst);
    let asks = peers.asks.clone();
    p.share_through(Arc::new(peers));
    (p, asks)
}

#[tokio::test(start_paused = true)]
async fn a_peer_downloading_the_image_is_waited_for_and_fetched_from() {
    let rt = MemoryRuntime::new();
    let mut peers = FakePeers::new(peer_holding_all(), memimage);
    peers.getting = Some(true);
    peers.getting_for = 3;
    let (p, asks) = sharing_with(&rt, peers);
    let image = format!("{TEST_REGISTRY}/app:1");
    let waiting = {
        let p = p.clone();
        let image = image.clone();
        tokio::spawn(async move { p.ensure(&image, PullPolicy::Missing, |_| {}).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    assert_eq!(p.getting(&image), Some(false), "waiting, not downloading");
    waiting.await.unwrap().unwrap();
    assert_eq!(
        (rt.pulls(), rt.loads()),
        (0, 1),
        "from the peer, not the registry"
    );
    assert_eq!(asks.load(Ordering::SeqCst), 4, "asked until it held it");
    assert_eq!(p.getting(&image), None);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_peer_is_waited_for_only_when_it_outranks_this_node() {
    let image = format!("{TEST_REGISTRY}/app:1");
    let key = ImageRef::parse(&image).unwrap().to_string();
    let (a, b) = (NodeId::new("me").unwrap(), NodeId::new("peer").unwrap());
    let (high, low) = if first::rank(&key, &a) > first::rank(&key, &b) {
        (a, b)
    } else {
        (b, a)
    };
    // This node ranks first: it goes to the registry at once.
    let rt = MemoryRuntime::new();
    let mut peers = FakePeers::new(peer_holding_all(), memimage);
    (peers.me, peers.peer) = (high.clone(), low.clone());
    (peers.getting, peers.getting_for) = (Some(false), usize::MAX);
    let (p, asks) = sharing_with(&rt, peers);
    p.ensure(&image, PullPolicy::Missing, |_| {}).await.unwrap();
    assert_eq!((rt.pulls(), asks.load(Ordering::SeqCst)), (1, 1));
    // The peer ranks first: this node waits for it, then fetches.
    let rt = MemoryRuntime::new();
    let mut peers = FakePeers::new(peer_holding_all(), memimage);
    (peers.me, peers.peer) = (low, high);
    (peers.getting, peers.getting_for) = (Some(false), 2);
    let (p, asks) = sharing_with(&rt, peers);
    p.ensure(&image, PullPolicy::Missing, |_| {}).await.unwrap();
    assert_eq!(
        (rt.pulls(), rt.loads(), asks.load(Ordering::SeqCst)),
        (0, 1, 3)
    );
}

#[tokio::test(start_paused = true)]
async fn no_wait_for_peers_outlasts_the_bound() {
    let rt = MemoryRuntime::new();
    let mut peers = FakePeers::new(peer_holding_all(), memimage);
    (peers.getting, peers.getting_for) = (Some(true), usize::MAX);
    let (p, _) = sharing_with(&rt, peers);
    let image = format!("{TEST_REGISTRY}/app:1");
    let began = tokio::time::Instant::now();
    p.ensure(&image, PullPolicy::Missing, |_| {}).await.unwrap();
    assert_eq!(rt.pulls(), 1, "the registry in the end");
    assert!(began.elapsed() >= std::time::Duration::from_millis(first::MAX_WAIT_MS));
}

#[tokio::test]
async fn a_peer_that_holds_the_image_spares_the_registry() {
    let rt = MemoryRuntime::new();
    let p = sharing(&rt, memimage);
    let image = format!("{TEST_REGISTRY}/app:1");
    p.ensure(&image, PullPolicy::Missing, |_| {}).await.unwrap();
    assert_eq!((rt.pulls(), rt.loads()), (0, 1), "from the peer");
    assert!(rt.has_image(&image).await.unwrap());
    // Always asks the registry: a peer cannot tell whether a tag moved.
    p.ensure(&image, PullPolicy::Always, |_| {}).await.unwrap();
    assert_eq!((rt.pulls(), rt.loads()), (1, 1));
}

#[tokio::test]
async fn garbage_or_a_wrong_image_from_a_peer_falls_back_to_the_registry() {
    let image = format!("{TEST_REGISTRY}/app:1");
    for send in [
        (|_: &str| b"not a tarball".to_vec()) as fn(&str) -> Vec<u8>,
        |_: &str| format!("MEMIMAGE sha256:{}", "e".repeat(64)).into_bytes(),
    ] {
        let rt = MemoryRuntime::new();
        let p = sharing(&rt, send);
        p.ensure(&image, PullPolicy::Missing, |_| {}).await.unwrap();
        assert_eq!(rt.pulls(), 1, "fell back to the registry");
        assert!(rt.has_image(&image).await.unwrap());
    }
    // Neither gives it: the registry's reason, not the peers'.
    let rt = MemoryRuntime::new();
    let p = sharing(&rt, |_| b"garbage".to_vec());
    let err = p
        .ensure(
            &format!("{TEST_REGISTRY}/nosuch:1"),
            PullPolicy::Missing,
            |_| {},
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    assert!(!err.may_succeed_later(), "{err}");
}

#[tokio::test]
async fn each_pull_is_heard_when_it_starts_and_ends() {
    let rt = MemoryRuntime::new();
    let p = pulls(&rt);
    let changes = p.changes();
    let before = *changes.borrow();
    p.ensure(
        &format!("{TEST_REGISTRY}/app:9"),
        PullPolicy::Missing,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(*changes.borrow(), before + 2, "a start and an end");
    assert_eq!(p.pulling(), 0);
    // No pull, no change.
    p.ensure("mesh-testsvc:latest", PullPolicy::Missing, |_| {})
        .await
        .unwrap();
    assert_eq!(*changes.borrow(), before + 2);
}
