//! How far a pull has got, folded from Docker's create-image messages
//! (one per layer event: `Pulling fs layer`, `Downloading` with bytes,
//! `Download complete`, `Extracting`, `Pull complete`, `Already exists`).
//! What users see as `pulling 43% (3/5 layers)`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most layers followed; an image past this still pulls, its progress
/// counts only these (a registry may send anything).
pub const MAX_LAYERS: usize = 1_024;

/// A pull's progress, as gossiped and shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullProgress {
    pub layers_done: u32,
    pub layers: u32,
    /// Bytes downloaded of the layers whose size is known.
    pub bytes_done: u64,
    /// Sizes of the layers known so far (grows as downloads start).
    pub bytes: u64,
}

impl PullProgress {
    /// Percent done by bytes, when any size is known; by layers otherwise.
    pub fn percent(&self) -> u8 {
        let (done, all) = if self.bytes > 0 {
            (self.bytes_done, self.bytes)
        } else {
            (u64::from(self.layers_done), u64::from(self.layers))
        };
        if all == 0 {
            return 0;
        }
        // At most 100, so the cast keeps it.
        (done.min(all).saturating_mul(100) / all) as u8
    }
}

impl std::fmt::Display for PullProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}% ({}/{} layers)",
            self.percent(),
            self.layers_done,
            self.layers
        )
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Layer {
    current: u64,
    total: u64,
    done: bool,
}

/// Folds create-image messages into a [`PullProgress`].
#[derive(Debug, Clone, Default)]
pub struct PullTracker {
    layers: BTreeMap<String, Layer>,
}

impl PullTracker {
    /// One message of the stream: its `status`, the layer `id` it is about
    /// (if any) and its `progressDetail` figures.
    pub fn observe(
        &mut self,
        status: &str,
        id: Option<&str>,
        current: Option<i64>,
        total: Option<i64>,
    ) {
        let Some(id) = id else { return };
        let kind = LayerEvent::of(status);
        if kind == LayerEvent::Other {
            // "Pulling from repo" carries the tag as its id: not a layer.
            return;
        }
        if !self.layers.contains_key(id) && self.layers.len() >= MAX_LAYERS {
            return;
        }
        let layer = self.layers.entry(id.to_owned()).or_default();
        let bytes = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
        match kind {
            LayerEvent::Seen => {}
            LayerEvent::Downloading => {
                if let Some(t) = bytes(total) {
                    layer.total = t;
                }
                if let Some(c) = bytes(current) {
                    layer.current = c.min(layer.total.max(c));
                }
            }
            LayerEvent::Downloaded => layer.current = layer.total,
            LayerEvent::Done => {
                layer.current = layer.total;
                layer.done = true;
            }
            LayerEvent::Other => {}
        }
    }

    pub fn progress(&self) -> PullProgress {
        let mut p = PullProgress::default();
        for l in self.layers.values() {
            p.layers = p.layers.saturating_add(1);
            if l.done {
                p.layers_done = p.layers_done.saturating_add(1);
            }
            p.bytes = p.bytes.saturating_add(l.total);
            p.bytes_done = p.bytes_done.saturating_add(l.current.min(l.total));
        }
        p
    }
}

/// What a message says about its layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LayerEvent {
    /// Known to exist, nothing more (`Pulling fs layer`, `Waiting`,
    /// `Verifying Checksum`, `Extracting`).
    Seen,
    Downloading,
    Downloaded,
    /// On the host (`Pull complete`, `Already exists`).
    Done,
    Other,
}

impl LayerEvent {
    fn of(status: &str) -> Self {
        match status {
            "Pulling fs layer" | "Waiting" | "Verifying Checksum" | "Extracting" => Self::Seen,
            "Downloading" => Self::Downloading,
            "Download complete" => Self::Downloaded,
            "Pull complete" | "Already exists" => Self::Done,
            _ => Self::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages as Docker 20.10 sends them for a two-layer image whose
    /// first layer the host already has.
    #[test]
    fn a_pull_is_followed_layer_by_layer() {
        let mut t = PullTracker::default();
        t.observe("Pulling from team/app", Some("1.2"), None, None);
        t.observe("Already exists", Some("aaa"), None, None);
        t.observe("Pulling fs layer", Some("bbb"), None, None);
        assert_eq!(
            t.progress(),
            PullProgress {
                layers_done: 1,
                layers: 2,
                bytes_done: 0,
                bytes: 0
            }
        );
        assert_eq!(t.progress().percent(), 50);
        t.observe("Downloading", Some("bbb"), Some(250), Some(1_000));
        assert_eq!(t.progress().bytes_done, 250);
        assert_eq!(t.progress().percent(), 25);
        t.observe("Download complete", Some("bbb"), None, None);
        t.observe("Extracting", Some("bbb"), Some(10), Some(1_000));
        assert_eq!(t.progress().bytes_done, 1_000);
        t.observe("Pull complete", Some("bbb"), None, None);
        t.observe("Digest: sha256:abc", None, None, None);
        let done = t.progress();
        assert_eq!((done.layers_done, done.layers, done.percent()), (2, 2, 100));
        assert_eq!(done.to_string(), "100% (2/2 layers)");
    }

    #[test]
    fn hostile_figures_and_floods_stay_bounded() {
        let mut t = PullTracker::default();
        t.observe("Downloading", Some("x"), Some(-5), Some(-1));
        t.observe("Downloading", Some("y"), Some(i64::MAX), Some(10));
        for i in 0..(MAX_LAYERS * 2) {
            t.observe("Pulling fs layer", Some(&format!("l{i}")), None, None);
        }
        let p = t.progress();
        assert_eq!(p.layers as usize, MAX_LAYERS);
        assert!(p.bytes_done <= p.bytes);
        assert!(p.percent() <= 100);
    }
}
