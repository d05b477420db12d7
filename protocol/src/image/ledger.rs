//! What an agent remembers of the images on its host, for image GC: which
//! names it pulled itself (an image already on the host before its pull
//! stays the operator's), when each name last started a container, and,
//! per image id seen under those names, that the image is ours even once
//! its tag moved on. [`Ledger::refresh`] joins this with the host's image
//! list into the [`Candidate`]s that [`super::gc::plan`] decides on.
//! Pure: the agent keeps the ledger in its data dir and passes `now` in.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::ImageRef;
use super::gc::Candidate;

/// One image on the host, as the runtime lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostImage {
    /// The image id (`sha256:...`).
    pub id: String,
    /// Its tags as Docker shows them (`busybox:latest`,
    /// `127.0.0.1:5000/app:1`).
    pub tags: Vec<String>,
    /// Its repository digests (`127.0.0.1:5000/app@sha256:...`).
    pub digests: Vec<String>,
    /// Bytes on disk as the runtime counts them (layers shared with other
    /// images are counted in each).
    pub size: u64,
    /// Containers (any state, anyone's) created from it.
    pub containers: u32,
}

/// What is known of one name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameEntry {
    /// When this agent pulled it (None: it never did, or the image was on
    /// the host before its pull).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulled_ms: Option<u64>,
    /// When a container of ours last started from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_ms: Option<u64>,
}

/// What is known of one image id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdEntry {
    /// Seen under a name this agent pulled.
    pub ours: bool,
    /// When a pass first saw it on the host.
    pub seen_ms: u64,
    /// The latest use of any of its names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_ms: Option<u64>,
}

/// The record, kept as JSON in the agent's data dir.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// By canonical name (see [`canonical`]).
    #[serde(default)]
    pub names: BTreeMap<String, NameEntry>,
    /// By image id.
    #[serde(default)]
    pub ids: BTreeMap<String, IdEntry>,
}

/// Most names or ids a ledger keeps: beyond it the least recently used
/// names go (a host holds far fewer images).
pub const MAX_ENTRIES: usize = 10_000;

/// One spelling per image name, so that `busybox`, `busybox:latest` and
/// `docker.io/library/busybox:latest` are the same: the registry, the
/// repository (`library/` added on Docker Hub) and the digest if any, else
/// the tag. A name that does not parse (an image id) is kept as written.
pub fn canonical(name: &str) -> String {
    let Ok(r) = ImageRef::parse(name) else {
        return name.to_owned();
    };
    let repo = if r.registry == super::reference::DEFAULT_REGISTRY && !r.repository.contains('/') {
        format!("library/{}", r.repository)
    } else {
        r.repository
    };
    match (r.digest, r.tag) {
        (Some(d), _) => format!("{}/{repo}@{d}", r.registry),
        (None, Some(t)) => format!("{}/{repo}:{t}", r.registry),
        (None, None) => format!("{}/{repo}:latest", r.registry),
    }
}

impl Ledger {
    /// This agent pulled `name`; `was_present`: the host had an image of
    /// that name before the pull, so it stays whoever's it was.
    pub fn pulled(&mut self, name: &str, was_present: bool, now_ms: u64) {
        let entry = self.names.entry(canonical(name)).or_default();
        if !was_present || entry.pulled_ms.is_some() {
            entry.pulled_ms = Some(now_ms);
        }
        self.bound();
    }

    /// A container of ours started from `name`.
    pub fn used(&mut self, name: &str, now_ms: u64) {
        let entry = self.names.entry(canonical(name)).or_default();
        entry.used_ms = Some(entry.used_ms.map_or(now_ms, |u| u.max(now_ms)));
        self.bound();
    }

    /// Whether this agent pulled `name`.
    pub fn is_pulled(&self, name: &str) -> bool {
        self.names
            .get(&canonical(name))
            .is_some_and(|e| e.pulled_ms.is_some())
    }

    /// Brings the ledger up to date with what the host holds at `now_ms`
    /// (ids seen under our names become ours; names and ids of images no
    /// longer on the host are forgotten) and returns the host's images as
    /// GC candidates. An image is ours when it was seen under a name this
    /// agent pulled and carries no tag it did not pull.
    pub fn refresh(&mut self, host: &[HostImage], now_ms: u64) -> Vec<Candidate> {
        let mut present_names = BTreeSet::new();
        let mut out = Vec::with_capacity(host.len());
        for image in host {
            let tags: Vec<String> = image.tags.iter().map(|t| canonical(t)).collect();
            let names: Vec<String> = tags
                .iter()
                .cloned()
                .chain(image.digests.iter().map(|d| canonical(d)))
                .collect();
            let entries: Vec<NameEntry> = names
                .iter()
                .filter_map(|n| self.names.get(n).copied())
                .collect();
            let id = self.ids.entry(image.id.clone()).or_insert(IdEntry {
                ours: false,
                seen_ms: now_ms,
                used_ms: None,
            });
            id.ours |= entries.iter().any(|e| e.pulled_ms.is_some());
            id.used_ms = entries
                .iter()
                .filter_map(|e| e.used_ms)
                .chain(id.used_ms)
                .max();
            let foreign_tag = tags
                .iter()
                .any(|t| self.names.get(t).is_none_or(|e| e.pulled_ms.is_none()));
            out.push(Candidate {
                id: image.id.clone(),
                tags: image.tags.clone(),
                names: names.clone(),
                size: image.size,
                ours: id.ours && !foreign_tag,
                containers: image.containers,
                idle_since_ms: id.used_ms.unwrap_or(id.seen_ms).max(id.seen_ms),
            });
            present_names.extend(names);
        }
        let present_ids: BTreeSet<&str> = host.iter().map(|i| i.id.as_str()).collect();
        self.ids.retain(|id, _| present_ids.contains(id.as_str()));
        self.names.retain(|n, _| present_names.contains(n));
        out
    }

    /// Keeps at most [`MAX_ENTRIES`] names, dropping the least recently
    /// used (never-used names count as oldest).
    fn bound(&mut self) {
        if self.names.len() <= MAX_ENTRIES {
            return;
        }
        let mut by_age: Vec<(u64, String)> = self
            .names
            .iter()
            .map(|(n, e)| (e.used_ms.or(e.pulled_ms).unwrap_or(0), n.clone()))
            .collect();
        by_age.sort();
        let excess = self.names.len() - MAX_ENTRIES;
        for (_, n) in by_age.into_iter().take(excess) {
            self.names.remove(&n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, tags: &[&str], size: u64) -> HostImage {
        HostImage {
            id: id.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            digests: vec![],
            size,
            containers: 0,
        }
    }

    #[test]
    fn canonical_names_agree_across_spellings() {
        let c = canonical("busybox");
        assert_eq!(c, "docker.io/library/busybox:latest");
        assert_eq!(canonical("busybox:latest"), c);
        assert_eq!(canonical("docker.io/library/busybox:latest"), c);
        assert_eq!(canonical("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b:latest");
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(canonical(&format!("r.io/a:1@{d}")), format!("r.io/a@{d}"));
        assert_eq!(canonical("sha256:abc def"), "sha256:abc def");
    }

    #[test]
    fn an_image_pulled_here_is_ours_and_stays_so_when_its_tag_moves() {
        let mut l = Ledger::default();
        l.pulled("r.io/app:1", false, 10);
        let c = l.refresh(&[image("sha256:old", &["r.io/app:1"], 5)], 20);
        assert!(c[0].ours);
        // The tag moved to a new image: the old one, untagged, is still ours.
        l.pulled("r.io/app:1", true, 30);
        let c = l.refresh(
            &[
                image("sha256:old", &[], 5),
                image("sha256:new", &["r.io/app:1"], 6),
            ],
            40,
        );
        assert!(c.iter().all(|c| c.ours), "{c:?}");
    }

    #[test]
    fn an_image_on_the_host_before_the_pull_or_tagged_by_someone_else_is_not_ours() {
        let mut l = Ledger::default();
        l.pulled("busybox", true, 10);
        l.pulled("r.io/app:1", false, 10);
        let c = l.refresh(
            &[
                image("sha256:bb", &["busybox:latest"], 5),
                image("sha256:app", &["r.io/app:1", "mine:1"], 5),
                image("sha256:local", &["mesh-busybox:latest"], 5),
            ],
            20,
        );
        assert!(c.iter().all(|c| !c.ours), "{c:?}");
    }

    #[test]
    fn idle_time_runs_from_the_last_use_or_from_when_first_seen() {
        let mut l = Ledger::default();
        l.pulled("r.io/a:1", false, 10);
        l.pulled("r.io/b:1", false, 10);
        l.used("r.io/a:1", 50);
        let host = [
            image("sha256:a", &["r.io/a:1"], 1),
            image("sha256:b", &["r.io/b:1"], 1),
        ];
        let c = l.refresh(&host, 100);
        assert_eq!((c[0].idle_since_ms, c[1].idle_since_ms), (100, 100));
        l.used("r.io/a:1", 150);
        let c = l.refresh(&host, 200);
        assert_eq!((c[0].idle_since_ms, c[1].idle_since_ms), (150, 100));
    }

    #[test]
    fn what_left_the_host_is_forgotten() {
        let mut l = Ledger::default();
        l.pulled("r.io/a:1", false, 10);
        l.refresh(&[image("sha256:a", &["r.io/a:1"], 1)], 20);
        assert!(l.is_pulled("r.io/a:1"));
        l.refresh(&[], 30);
        assert_eq!(l, Ledger::default());
    }

    #[test]
    fn the_ledger_round_trips_as_json() {
        let mut l = Ledger::default();
        l.pulled("r.io/a:1", false, 10);
        l.used("r.io/a:1", 11);
        l.refresh(&[image("sha256:a", &["r.io/a:1"], 1)], 20);
        let text = serde_json::to_string(&l).unwrap();
        assert_eq!(serde_json::from_str::<Ledger>(&text).unwrap(), l);
    }

    #[test]
    fn the_ledger_is_bounded() {
        let mut l = Ledger::default();
        for i in 0..(MAX_ENTRIES as u64 + 5) {
            l.used(&format!("r.io/a:{i}"), i);
        }
        assert_eq!(l.names.len(), MAX_ENTRIES);
        assert!(!l.names.contains_key("r.io/a:0"));
    }
}
