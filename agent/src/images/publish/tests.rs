use std::sync::Arc;

use mesh_protocol::image::Wanted;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::*;
use crate::images::RegistryAuth;
use crate::runtime::memory::{MemoryRuntime, TEST_REGISTRY};

/// Each summary published, as it is set.
struct Recorder(UnboundedSender<ImageSummary>);

impl PublishImages for Recorder {
    async fn set_images(&self, images: &ImageSummary) {
        let _ = self.0.send(images.clone());
    }
}

fn image(n: &str) -> String {
    format!("{TEST_REGISTRY}/hand/{n}:1")
}

fn holds(summary: &ImageSummary, name: &str) -> bool {
    summary.holds(&Wanted::of(name).unwrap())
}

/// Waits for the first summary that holds `name`; when it was published.
async fn published_holding(published: &mut UnboundedReceiver<ImageSummary>, name: &str) -> Instant {
    loop {
        let summary = published.recv().await.unwrap();
        if holds(&summary, name) {
            return Instant::now();
        }
    }
}

#[test]
fn a_notice_lists_at_once_unless_a_listing_started_less_than_a_gap_ago() {
    let gap = Duration::from_secs(1);
    let t0 = Instant::now();
    let mut d = Debounce::new(gap);
    assert!(d.notice(t0), "the first notice");
    assert_eq!(d.due(), None);
    d.listed(t0);
    assert!(!d.notice(t0 + gap / 4));
    assert!(!d.notice(t0 + gap / 2), "a burst");
    assert_eq!(d.due(), Some(t0 + gap), "one listing for the burst");
    d.listed(t0 + gap);
    assert_eq!(d.due(), None, "the listing saw the burst");
    assert!(d.notice(t0 + gap * 3), "quiet for a gap: at once again");
}

#[test]
fn any_listing_covers_the_notices_before_it() {
    let gap = Duration::from_secs(1);
    let t0 = Instant::now();
    let mut d = Debounce::new(gap);
    d.listed(t0);
    assert!(!d.notice(t0));
    // A pull ended: listed for that reason.
    d.listed(t0 + gap / 2);
    assert_eq!(d.due(), None);
    assert!(
        !d.notice(t0 + gap),
        "a gap after the last listing, not the first"
    );
    assert_eq!(d.due(), Some(t0 + gap + gap / 2));
}

#[tokio::test(start_paused = true)]
async fn images_changed_by_hand_are_published_promptly_bursts_coalesce_and_a_broken_watch_reconnects()
 {
    let rt = MemoryRuntime::new();
    let pulls = Pulls::new(Arc::new(rt.clone()), RegistryAuth::default());
    let (tx, mut published) = unbounded_channel();
    let stop = CancellationToken::new();
    let publisher = tokio::spawn(run(pulls, Recorder(tx), stop.clone()));
    let t0 = Instant::now();
    // The clock is paused: this only lets the start's listings (the timed
    // one, the one the watch's connection asks for) happen, in no time.
    tokio::time::sleep(RELIST_EVERY / 2).await;
    while published.try_recv().is_ok() {}

    // Loaded by hand, half a period before the timed listing: at once.
    let loaded = Instant::now();
    rt.load_image(&image("a"));
    let at = published_holding(&mut published, &image("a")).await;
    assert_eq!(at, loaded);

    // A burst right after that listing: one more listing, a gap after it,
    // and none in between.
    for n in ["b", "c", "d"] {
        rt.load_image(&image(n));
    }
    let next = published.recv().await.unwrap();
    assert_eq!(Instant::now(), at + MIN_GAP);
    for n in ["b", "c", "d"] {
        assert!(holds(&next, &image(n)), "{n}");
    }

    // Docker goes away and comes back; what changed meanwhile is missed by
    // the events but listed as the watch reconnects, long before the next
    // timed listing.
    rt.set_available(false);
    rt.load_image(&image("e"));
    let up = Instant::now();
    rt.set_available(true);
    let at = published_holding(&mut published, &image("e")).await;
    assert!(at - up <= Duration::from_secs(1) + MIN_GAP, "{:?}", at - up);
    assert!(at < t0 + RELIST_EVERY);

    stop.cancel();
    publisher.await.unwrap();
}
