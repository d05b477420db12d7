//! A service's image on each node: what `meshctl service show` reports
//! (`ImageStatus`: present, pulling 43%, failed: reason), and the compact
//! form a node gossips under `simg` for the services whose image it does not
//! have (`NodeImage`), which routing reads: a node whose pull failed is not
//! routed to, a node still pulling comes after those that have the image.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::gossip::PeerView;
use crate::ids::NodeId;
use crate::image::PullProgress;

/// Most entries read from a peer's `simg` value (a node serves at most this
/// many services' images; a longer value is refused as a whole).
pub const MAX_IMAGE_ENTRIES: usize = 4_096;

/// A service's image on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageStatus {
    Present,
    /// The pre-pull is under way.
    Pulling(PullProgress),
    /// The last pull failed, with the reason; it is tried again later, and
    /// the node is not routed to meanwhile.
    Failed(String),
}

impl ImageStatus {
    /// What the node gossips of it: nothing when present.
    pub fn gossip(&self) -> Option<NodeImage> {
        match self {
            ImageStatus::Present => None,
            ImageStatus::Pulling(_) => Some(NodeImage::Pulling),
            ImageStatus::Failed(_) => Some(NodeImage::Failed),
        }
    }
}

impl fmt::Display for ImageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageStatus::Present => f.write_str("present"),
            ImageStatus::Pulling(p) => write!(f, "pulling {}%", p.percent()),
            ImageStatus::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// A service's image on a node that does not have it, as gossiped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeImage {
    Pulling,
    Failed,
}

/// Encodes the `simg` gossip value: `name:p` (pulling) or `name:f` (failed),
/// joined by `;`; services whose image is present are left out.
pub fn encode_images(images: &BTreeMap<String, NodeImage>) -> String {
    images
        .iter()
        .map(|(name, i)| {
            let code = match i {
                NodeImage::Pulling => "p",
                NodeImage::Failed => "f",
            };
            format!("{name}:{code}")
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Parses the `simg` gossip value; `None` if any entry is malformed.
pub fn decode_images(s: &str) -> Option<BTreeMap<String, NodeImage>> {
    if s.is_empty() {
        return Some(BTreeMap::new());
    }
    if s.split(';').count() > MAX_IMAGE_ENTRIES {
        return None;
    }
    s.split(';')
        .map(|entry| {
            let (name, code) = entry.split_once(':')?;
            let image = match code {
                "p" => NodeImage::Pulling,
                "f" => NodeImage::Failed,
                _ => return None,
            };
            (!name.is_empty()).then(|| (name.to_owned(), image))
        })
        .collect()
}

/// Each node's image of `service` as the gossip view shows it (nodes that
/// have it, or publish nothing of it, are left out), with this node's own
/// exact status in place of its gossiped one.
pub fn node_images(
    peers: &[PeerView],
    service: &str,
    me: &NodeId,
    own: Option<&ImageStatus>,
) -> BTreeMap<NodeId, NodeImage> {
    let mut images: BTreeMap<NodeId, NodeImage> = peers
        .iter()
        .filter(|p| p.node != *me)
        .filter_map(|p| {
            let image = p.info.as_ref()?.service_images.get(service)?;
            Some((p.node.clone(), *image))
        })
        .collect();
    if let Some(image) = own.and_then(ImageStatus::gossip) {
        images.insert(me.clone(), image);
    }
    images
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn statuses_read_as_users_expect() {
        assert_eq!(ImageStatus::Present.to_string(), "present");
        let p = PullProgress {
            layers_done: 1,
            layers: 3,
            bytes_done: 43,
            bytes: 100,
        };
        assert_eq!(ImageStatus::Pulling(p).to_string(), "pulling 43%");
        assert_eq!(
            ImageStatus::Failed("image not found: x".into()).to_string(),
            "failed: image not found: x"
        );
        assert_eq!(ImageStatus::Present.gossip(), None);
        assert_eq!(
            ImageStatus::Failed(String::new()).gossip(),
            Some(NodeImage::Failed)
        );
    }

    #[test]
    fn images_round_trip_and_garbage_is_refused() {
        let images = BTreeMap::from([
            ("echo".to_string(), NodeImage::Pulling),
            ("web".to_string(), NodeImage::Failed),
        ]);
        assert_eq!(encode_images(&images), "echo:p;web:f");
        assert_eq!(decode_images(&encode_images(&images)), Some(images));
        assert_eq!(decode_images(""), Some(BTreeMap::new()));
        for bad in ["echo", "echo:x", ":p", "echo:p;", "echo:p:f"] {
            assert_eq!(decode_images(bad), None, "{bad}");
        }
        let flood = vec!["a:p"; MAX_IMAGE_ENTRIES + 1].join(";");
        assert_eq!(decode_images(&flood), None);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(s in ".{0,60}") {
            let _ = decode_images(&s);
        }
    }
}
