//! Images shared between peers, as pure decisions: where a node looks for
//! an image it lacks ([`ImageSource`], [`sources`]), which live peers it
//! asks whether they hold it ([`peers_to_ask`]), and whether what a peer
//! sent is the image asked for ([`verify_loaded`]).

use serde::{Deserialize, Serialize};

use super::first::rank;
use super::{ImageRef, PullPolicy};
use crate::ids::NodeId;

/// Most peers asked whether they hold an image, per fetch.
pub const MAX_ASKED: usize = 8;

/// Where a node gets an image it lacks (`meshd --image-source`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ImageSource {
    /// From a peer that holds it, else from its registry.
    #[default]
    PeersFirst,
    /// From its registry, else from a peer that holds it.
    RegistryFirst,
    /// From its registry only.
    RegistryOnly,
}

impl ImageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageSource::PeersFirst => "peers-first",
            ImageSource::RegistryFirst => "registry-first",
            ImageSource::RegistryOnly => "registry-only",
        }
    }
}

impl std::fmt::Display for ImageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ImageSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "peers-first" => Ok(ImageSource::PeersFirst),
            "registry-first" => Ok(ImageSource::RegistryFirst),
            "registry-only" => Ok(ImageSource::RegistryOnly),
            other => Err(format!(
                "image source {other:?} is not one of peers-first, registry-first, registry-only"
            )),
        }
    }
}

/// One place an image can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Peers,
    Registry,
}

/// The places to try for `image`, in order, each tried when the one
/// before failed. A pull policy of `always` asks the registry only: a peer
/// cannot tell whether the tag moved since it pulled it. So does an image
/// named by digest: a load gives an image no repo digest, so the name
/// would still not resolve on this host after a peer sent it.
pub fn sources(source: ImageSource, policy: PullPolicy, image: &ImageRef) -> Vec<Source> {
    let registry_only = policy == PullPolicy::Always || image.digest.is_some();
    match source {
        ImageSource::RegistryOnly => vec![Source::Registry],
        _ if registry_only => vec![Source::Registry],
        ImageSource::PeersFirst => vec![Source::Peers, Source::Registry],
        ImageSource::RegistryFirst => vec![Source::Registry, Source::Peers],
    }
}

/// Which of the live peers to ask whether they hold `image`: at most
/// [`MAX_ASKED`], ranked by a hash of image and node ([`rank`]), so that the nodes
/// asking for one image ask (and fetch from) the same few first, and
/// different images spread over different peers.
pub fn peers_to_ask(live: &[NodeId], image: &str) -> Vec<NodeId> {
    let mut ranked: Vec<&NodeId> = live.iter().collect();
    ranked.sort_by_cached_key(|n| std::cmp::Reverse(rank(image, n)));
    ranked.into_iter().take(MAX_ASKED).cloned().collect()
}

/// What a load brought that makes it unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadMismatch {
    #[error("the peer's stream loaded no image (expected {expected})")]
    Nothing { expected: String },
    #[error("the peer's stream loaded {got:?}, not the image asked for ({expected})")]
    Other { expected: String, got: Vec<String> },
}

/// Whether the images a load reported (by id) are exactly the one asked
/// for: a peer that sent another image, or several, is not believed.
pub fn verify_loaded(expected: &str, loaded: &[String]) -> Result<(), LoadMismatch> {
    let want = bare_id(expected);
    match loaded {
        [] => Err(LoadMismatch::Nothing {
            expected: expected.to_owned(),
        }),
        [one] if bare_id(one) == want && !want.is_empty() => Ok(()),
        _ => Err(LoadMismatch::Other {
            expected: expected.to_owned(),
            got: loaded.to_vec(),
        }),
    }
}

/// An image id without its `sha256:` prefix, lowercase.
fn bare_id(id: &str) -> String {
    id.trim()
        .strip_prefix("sha256:")
        .unwrap_or(id.trim())
        .to_ascii_lowercase()
}

/// Whether `id` is an image id as Docker writes it (`sha256:` and 64 hex
/// digits): what a peer may be asked to export, so an export never names
/// anything but one image.
pub fn is_image_id(id: &str) -> bool {
    id.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str) -> ImageRef {
        ImageRef::parse(name).unwrap()
    }

    #[test]
    fn sources_follow_the_setting_and_always_or_a_digest_asks_the_registry() {
        let tag = image("127.0.0.1:5000/app:1");
        let pinned = image(&format!("app@sha256:{}", "a".repeat(64)));
        use ImageSource::*;
        use Source::*;
        let missing = PullPolicy::Missing;
        assert_eq!(sources(PeersFirst, missing, &tag), [Peers, Registry]);
        assert_eq!(sources(RegistryFirst, missing, &tag), [Registry, Peers]);
        assert_eq!(sources(RegistryOnly, missing, &tag), [Registry]);
        let always = PullPolicy::Always;
        assert_eq!(sources(PeersFirst, always, &tag), [Registry]);
        assert_eq!(sources(RegistryFirst, always, &tag), [Registry]);
        assert_eq!(sources(PeersFirst, missing, &pinned), [Registry]);
        assert_eq!(sources(RegistryFirst, missing, &pinned), [Registry]);
    }

    #[test]
    fn sources_parse_and_print() {
        for s in [
            ImageSource::PeersFirst,
            ImageSource::RegistryFirst,
            ImageSource::RegistryOnly,
        ] {
            assert_eq!(s.as_str().parse::<ImageSource>(), Ok(s));
        }
        assert!("peers".parse::<ImageSource>().is_err());
    }

    #[test]
    fn peers_asked_are_few_stable_and_differ_by_image() {
        let live: Vec<NodeId> = (0..20)
            .map(|i| NodeId::new(format!("n{i}")).unwrap())
            .collect();
        let a = peers_to_ask(&live, "app:1");
        assert_eq!(a.len(), MAX_ASKED);
        let mut reversed = live.clone();
        reversed.reverse();
        assert_eq!(peers_to_ask(&reversed, "app:1"), a, "order-free");
        assert_ne!(peers_to_ask(&live, "app:2"), a);
        assert_eq!(peers_to_ask(&live[..3], "app:1").len(), 3);
        assert!(peers_to_ask(&[], "app:1").is_empty());
    }

    #[test]
    fn only_the_image_asked_for_passes() {
        let id = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(verify_loaded(&id, std::slice::from_ref(&id)), Ok(()));
        // Docker's words may lack the prefix or differ in case.
        assert_eq!(verify_loaded(&id, &["AB".repeat(32)]), Ok(()));
        assert!(matches!(
            verify_loaded(&id, &[]),
            Err(LoadMismatch::Nothing { .. })
        ));
        let other = format!("sha256:{}", "cd".repeat(32));
        assert!(matches!(
            verify_loaded(&id, std::slice::from_ref(&other)),
            Err(LoadMismatch::Other { .. })
        ));
        assert!(verify_loaded(&id, &[id.clone(), other]).is_err(), "extra");
        assert!(verify_loaded("", &[String::new()]).is_err());
    }

    #[test]
    fn only_image_ids_may_be_exported() {
        assert!(is_image_id(&format!("sha256:{}", "0f".repeat(32))));
        for bad in [
            "busybox",
            "sha256:",
            "sha256:xyz",
            &format!("sha256:{}", "0".repeat(63)),
            &"0".repeat(64),
            "../../etc",
        ] {
            assert!(!is_image_id(bad), "{bad}");
        }
    }
}
