use proptest::prelude::*;

use super::*;

const MIN: u64 = 60_000;

fn img(id: &str, size: u64, ours: bool, idle_since_ms: u64) -> Candidate {
    Candidate {
        id: id.into(),
        tags: vec![format!("r.io/{id}:1")],
        names: vec![format!("r.io/{id}:1")],
        size,
        ours,
        containers: 0,
        idle_since_ms,
    }
}

fn policy(max_bytes: u64) -> GcPolicy {
    GcPolicy {
        max_bytes,
        min_idle_ms: MIN,
        foreign_too: false,
    }
}

fn ids(p: &Plan) -> Vec<&str> {
    p.remove.iter().map(|r| r.id.as_str()).collect()
}

const NOW: u64 = 1_000_000;

#[test]
fn under_the_bound_nothing_goes() {
    let images = [img("a", 10, true, 0), img("b", 10, true, 0)];
    let p = plan(&images, &BTreeSet::new(), &policy(20), NOW);
    assert_eq!(p.remove, vec![]);
    assert_eq!((p.managed_bytes, p.after_bytes), (20, 20));
}

#[test]
fn the_least_recently_used_go_first_until_under_the_bound() {
    let images = [
        img("new", 10, true, 500_000),
        img("old", 10, true, 100_000),
        img("mid", 10, true, 300_000),
    ];
    let p = plan(&images, &BTreeSet::new(), &policy(15), NOW);
    assert_eq!(ids(&p), ["old", "mid"]);
    assert_eq!(p.after_bytes, 10);
    assert_eq!(p.remove[0].idle_ms, 900_000);
    assert!(!p.still_over(&policy(15)));
}

#[test]
fn images_in_use_recent_or_foreign_stay_even_over_the_bound() {
    let mut by_container = img("ctr", 10, true, 0);
    by_container.containers = 1;
    let images = [
        by_container,
        img("named", 10, true, 0),
        img("recent", 10, true, NOW - MIN + 1),
        img("foreign", 10, false, 0),
        img("byid", 10, true, 0),
    ];
    let named = BTreeSet::from(["r.io/named:1".to_owned(), "byid".to_owned()]);
    let p = plan(&images, &named, &policy(0), NOW);
    assert_eq!(ids(&p), Vec::<&str>::new());
    assert_eq!(p.managed_bytes, 40, "the foreign image is not counted");
    assert!(p.still_over(&policy(0)));
}

#[test]
fn foreign_images_are_counted_and_removed_only_when_allowed() {
    let images = [
        img("mine", 10, true, 200_000),
        img("theirs", 10, false, 100_000),
    ];
    let all = GcPolicy {
        foreign_too: true,
        ..policy(10)
    };
    assert_eq!(ids(&plan(&images, &BTreeSet::new(), &all, NOW)), ["theirs"]);
    assert_eq!(
        ids(&plan(&images, &BTreeSet::new(), &policy(10), NOW)),
        Vec::<&str>::new()
    );
}

fn candidate() -> impl Strategy<Value = Candidate> {
    (0u8..12, 0u64..1000, any::<bool>(), 0u32..2, 0u64..NOW).prop_map(
        |(n, size, ours, containers, idle_since_ms)| Candidate {
            containers: containers * u32::from(n % 3 == 0),
            ..img(&format!("i{n}"), size, ours, idle_since_ms)
        },
    )
}

proptest! {
    /// Never an image in use, recent, or not managed; least recently used
    /// first; and no removal past the one that brings the managed bytes
    /// under the bound, nor short of it while a removable image is left.
    #[test]
    fn removes_only_what_it_may_and_stops_under_the_bound(
        drawn in proptest::collection::vec(candidate(), 0..12),
        named_ids in proptest::collection::btree_set(0u8..12, 0..4),
        max_bytes in 0u64..6000,
        min_idle_ms in 0u64..NOW,
        foreign_too in any::<bool>(),
    ) {
        let mut seen = BTreeSet::new();
        let images: Vec<Candidate> =
            drawn.into_iter().filter(|c| seen.insert(c.id.clone())).collect();
        let named: BTreeSet<String> =
            named_ids.iter().map(|n| format!("r.io/i{n}:1")).collect();
        let policy = GcPolicy { max_bytes, min_idle_ms, foreign_too };
        let p = plan(&images, &named, &policy, NOW);
        let eligible = |c: &Candidate| {
            c.managed(&policy)
                && !c.in_use(&named)
                && NOW - c.idle_since_ms >= min_idle_ms
        };
        let mut left = p.managed_bytes;
        for (k, r) in p.remove.iter().enumerate() {
            let c = images.iter().find(|c| c.id == r.id).unwrap();
            prop_assert!(c.containers == 0 && !c.in_use(&named), "{} is in use", r.id);
            prop_assert!(c.ours || foreign_too, "{} is not ours", r.id);
            prop_assert!(NOW - c.idle_since_ms >= min_idle_ms, "{} is recent", r.id);
            prop_assert!(left > max_bytes, "removal {k} after the bound was met");
            left -= r.size;
        }
        prop_assert_eq!(left, p.after_bytes);
        let removed: Vec<&Candidate> = p.remove.iter()
            .map(|r| images.iter().find(|c| c.id == r.id).unwrap())
            .collect();
        let kept: Vec<&Candidate> = images.iter()
            .filter(|c| eligible(c) && !p.remove.iter().any(|r| r.id == c.id))
            .collect();
        if p.after_bytes > max_bytes {
            // Still over: every removable image went.
            prop_assert!(kept.is_empty(), "kept {:?} while over", kept);
        }
        for r in &removed {
            for k in &kept {
                prop_assert!(r.idle_since_ms <= k.idle_since_ms, "{} before {}", r.id, k.id);
            }
        }
    }
}
