use super::*;
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
