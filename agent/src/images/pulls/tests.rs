use super::*;
use crate::images::ImagePeers;
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
/// send what `send` makes of the asked id.
struct FakePeers {
    held: MemoryRuntime,
    send: fn(&str) -> Vec<u8>,
}

impl ImagePeers for FakePeers {
    fn holders<'a>(
        &'a self,
        image: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Vec<super::super::Holder>> {
        Box::pin(async move {
            let image = self.held.image_id(image).await.unwrap();
            image
                .into_iter()
                .map(|image| super::super::Holder {
                    node: mesh_protocol::NodeId::new("peer").unwrap(),
                    addr: "127.0.0.1:1".parse().unwrap(),
                    image,
                })
                .collect()
        })
    }

    fn fetch<'a>(
        &'a self,
        holder: &'a super::super::Holder,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<(u64, crate::runtime::TarStream), super::super::FetchError>,
    > {
        use futures_util::StreamExt;
        let bytes = (self.send)(&holder.image.id);
        Box::pin(async move {
            let tar = futures_util::stream::iter([Ok(bytes::Bytes::from(bytes))]).boxed();
            Ok((1024, tar))
        })
    }
}

fn sharing(rt: &MemoryRuntime, send: fn(&str) -> Vec<u8>) -> Pulls<MemoryRuntime> {
    let p = pulls(rt).with_source(ImageSource::PeersFirst);
    let peer = MemoryRuntime::new();
    // The peer holds what the registry would give.
    peer.set_pulled_for_tests(&format!("{TEST_REGISTRY}/app:1"));
    peer.set_pulled_for_tests(&format!("{TEST_REGISTRY}/nosuch:1"));
    p.share_through(Arc::new(FakePeers { held: peer, send }));
    p
}

#[tokio::test]
async fn a_peer_that_holds_the_image_spares_the_registry() {
    let rt = MemoryRuntime::new();
    let p = sharing(&rt, |id| format!("MEMIMAGE {id}").into_bytes());
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
