use std::collections::BTreeMap;

use mesh_protocol::image::{ImageRef, PullProgress};
use tokio::sync::watch;

use super::*;
use crate::disk::Disk;
use crate::runtime::ContainerSpec;
use crate::runtime::memory::{MemoryRuntime, TEST_REGISTRY};

const MIB: u64 = 1 << 20;

struct Named(Vec<String>);

impl NamedImages for Named {
    fn named(&self) -> BoxFuture<'_, Result<Vec<String>, String>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

fn name(n: &str) -> String {
    format!("{TEST_REGISTRY}/{n}:1")
}

async fn pull(rt: &MemoryRuntime, image: &str) {
    let (tx, _) = watch::channel(PullProgress::default());
    rt.pull(&ImageRef::parse(image).unwrap(), None, &tx)
        .await
        .unwrap();
}

fn state(
    rt: &MemoryRuntime,
    dir: &std::path::Path,
    named: &[String],
    settings: GcSettings,
    clock: &Clock,
) -> State<MemoryRuntime, Named> {
    let parts = ImageGc {
        runtime: Arc::new(rt.clone()),
        named: Named(named.to_vec()),
        file: LedgerFile::new(dir, Disk::real()),
        clock: clock.clone(),
        settings: Some(settings),
    };
    State {
        ledger: parts.file.load(),
        parts,
        dirty: false,
        refused: BTreeSet::new(),
        over_logged: false,
    }
}

fn settings(max_bytes: u64) -> GcSettings {
    GcSettings {
        min_idle: Duration::ZERO,
        ..GcSettings::new(max_bytes)
    }
}

#[tokio::test(start_paused = true)]
async fn the_least_recently_used_idle_image_goes_and_others_stay() {
    let rt = MemoryRuntime::new();
    let dir = tempfile::tempdir().unwrap();
    rt.add_image("mesh-busybox:latest", 50 * MIB);
    let (a, b, c) = (name("a"), name("b"), name("c"));
    for i in [&a, &b, &c] {
        pull(&rt, i).await;
    }
    // c is named by a queued task; b was used after a.
    let mut s = state(
        &rt,
        dir.path(),
        std::slice::from_ref(&c),
        settings(2 * MIB),
        &Clock::tokio(),
    );
    s.note(Note::Pulled {
        name: a.clone(),
        was_present: false,
    })
    .await;
    s.note(Note::Used(a.clone())).await;
    tokio::time::advance(Duration::from_secs(5)).await;
    s.note(Note::Pulled {
        name: b.clone(),
        was_present: false,
    })
    .await;
    s.note(Note::Used(b.clone())).await;
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(rt.images().len(), 4, "two of ours fit: nothing removed yet");
    s.note(Note::Pulled {
        name: c.clone(),
        was_present: false,
    })
    .await;
    let left = rt.images();
    assert!(!left.contains(&a), "the least recently used went: {left:?}");
    assert!(left.contains(&b) && left.contains(&c), "{left:?}");
    assert!(left.contains("docker.io/library/mesh-busybox:latest"));

    // Bound 0: b has a container, c is named, busybox is not ours.
    let container = rt
        .run(&ContainerSpec {
            name: "user".into(),
            image: b.clone(),
            command: vec!["sleep".into()],
            env: vec![],
            labels: BTreeMap::new(),
            cpuset_cpus: Default::default(),
            cpuset_mems: Default::default(),
            memory: None,
            network: None,
        })
        .await
        .unwrap();
    s.parts.settings = Some(settings(0));
    s.pass().await;
    assert_eq!(rt.images(), left, "nothing else may go");
    // Once the container is removed, b may go; c is still named.
    rt.remove(&container).await.unwrap();
    s.pass().await;
    let now = rt.images();
    assert!(!now.contains(&b) && now.contains(&c), "{now:?}");
    assert!(now.contains("docker.io/library/mesh-busybox:latest"));
}

#[tokio::test(start_paused = true)]
async fn an_image_used_within_the_idle_time_stays_and_the_ledger_survives_a_restart() {
    let rt = MemoryRuntime::new();
    let dir = tempfile::tempdir().unwrap();
    let a = name("a");
    pull(&rt, &a).await;
    let recent = GcSettings {
        min_idle: Duration::from_secs(600),
        ..GcSettings::new(0)
    };
    let clock = Clock::tokio();
    let mut s = state(&rt, dir.path(), &[], recent, &clock);
    s.note(Note::Pulled {
        name: a.clone(),
        was_present: false,
    })
    .await;
    assert!(rt.images().contains(&a), "idle for less than 600 s");
    s.flush();
    drop(s);
    // Another run of the agent knows a is ours.
    tokio::time::advance(Duration::from_secs(601)).await;
    let mut s = state(&rt, dir.path(), &[], recent, &clock);
    assert!(s.ledger.is_pulled(&a));
    s.pass().await;
    assert!(!rt.images().contains(&a), "idle long enough, and ours");
}

#[tokio::test(start_paused = true)]
async fn an_image_on_the_host_before_the_pull_is_never_removed() {
    let rt = MemoryRuntime::new();
    let dir = tempfile::tempdir().unwrap();
    let a = name("a");
    pull(&rt, &a).await;
    let mut s = state(&rt, dir.path(), &[], settings(0), &Clock::tokio());
    s.note(Note::Pulled {
        name: a.clone(),
        was_present: true,
    })
    .await;
    s.pass().await;
    assert!(rt.images().contains(&a));
    // Unless told to remove images not pulled here.
    s.parts.settings = Some(GcSettings {
        all: true,
        ..settings(0)
    });
    s.pass().await;
    assert!(!rt.images().contains(&a));
}

#[tokio::test(start_paused = true)]
async fn a_refused_removal_is_skipped_noted_once_and_tried_again_later() {
    let rt = MemoryRuntime::new();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (name("a"), name("b"));
    pull(&rt, &a).await;
    pull(&rt, &b).await;
    let mut s = state(&rt, dir.path(), &[], settings(0), &Clock::tokio());
    s.ledger.pulled(&a, false, 0);
    s.ledger.pulled(&b, false, 0);
    rt.refuse_removals(Some(
        "conflict: container 1234 is using its referenced image",
    ));
    s.pass().await;
    s.pass().await;
    assert_eq!(rt.images().len(), 2, "both refused, both kept");
    assert_eq!(s.refused.len(), 2, "each noted once");
    rt.refuse_removals(None);
    s.pass().await;
    assert!(rt.images().is_empty(), "removed once Docker allows it");
}
