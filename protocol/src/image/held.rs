//! What images a host holds, as the mesh sees it: the names each held image
//! is known by (its id, its repo tags, its repo digests) folded into a
//! [`Bloom`] filter, with the number of pulls under way, gossiped under the
//! key `img` (see `gossip`). Placement asks it whether a node may have the
//! image a task names ([`Wanted`]).
//!
//! Names are compared in one canonical form, so the name a user submits
//! finds the name Docker lists: `busybox`, `busybox:latest`,
//! `library/busybox` and `docker.io/library/busybox:latest` are all
//! `docker.io/library/busybox:latest`; a digest is `REGISTRY/REPO@DIGEST`
//! (a name with both a tag and a digest is looked up by its digest, as
//! Docker pulls it); an id is `sha256:HEX` (64 hex digits, with or without
//! the `sha256:`). A short id is not looked up (a filter cannot match a
//! prefix): it names no image here, so it gets no preference.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use serde::{Deserialize, Serialize};

use super::ImageRef;
use super::bloom::{Bloom, Probe};
use super::reference::DEFAULT_REGISTRY;

/// One image as the host's engine lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListedImage {
    /// `sha256:...`
    pub id: String,
    /// `busybox:latest`, `127.0.0.1:5000/app:1`, ...
    pub repo_tags: Vec<String>,
    /// `busybox@sha256:...`
    pub repo_digests: Vec<String>,
}

/// The canonical form of an image name (see the module documentation), or
/// `None` for what no listed image can be known by (a short id, `<none>`).
pub fn canonical(name: &str) -> Option<String> {
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(format!("sha256:{}", hex.to_ascii_lowercase()));
    }
    if name.starts_with("sha256:") {
        return None;
    }
    let r = ImageRef::parse(name).ok()?;
    let repository = if r.registry == DEFAULT_REGISTRY && !r.repository.contains('/') {
        format!("library/{}", r.repository)
    } else {
        r.repository
    };
    Some(match (r.digest, r.tag) {
        (Some(d), _) => format!("{}/{repository}@{d}", r.registry),
        (None, Some(t)) => format!("{}/{repository}:{t}", r.registry),
        // ImageRef::parse gives `latest` to a name with neither.
        (None, None) => format!("{}/{repository}:latest", r.registry),
    })
}

/// The canonical names a held image is known by.
pub fn held_names(image: &ListedImage) -> impl Iterator<Item = String> + '_ {
    std::iter::once(image.id.as_str())
        .chain(image.repo_tags.iter().map(String::as_str))
        .chain(image.repo_digests.iter().map(String::as_str))
        .filter_map(canonical)
}

/// An image a task or a service asks for, ready to be looked up in any
/// node's summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted(Probe);

impl Wanted {
    /// `None` when the name cannot be looked up (see [`canonical`]).
    pub fn of(name: &str) -> Option<Wanted> {
        canonical(name).map(|c| Wanted(Probe::of(c.as_bytes())))
    }
}

/// What a node publishes about its images: pulls under way, and the filter
/// of the names of the images it holds. The default (nothing held, no pull)
/// is also what a peer that publishes no `img` key is taken to have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct ImageSummary {
    /// Pulls under way on the node: it counts as that much busier.
    pub pulling: u32,
    filter: Bloom,
}

/// Why an `img` value does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an image summary (PULLING;HASHES;BASE64-BITS within the bounds)")]
pub struct SummaryError;

impl ImageSummary {
    /// The summary of `held`, with `pulling` pulls under way.
    pub fn of(held: &[ListedImage], pulling: u32) -> ImageSummary {
        let names: BTreeSet<String> = held.iter().flat_map(held_names).collect();
        let mut filter = Bloom::for_keys(names.len());
        for n in &names {
            filter.insert(&Probe::of(n.as_bytes()));
        }
        ImageSummary { pulling, filter }
    }

    /// Whether the node may hold `wanted` (false positives at about 1%,
    /// never a false negative for an image in its last listing).
    pub fn holds(&self, wanted: &Wanted) -> bool {
        self.filter.contains(&wanted.0)
    }

    pub fn filter(&self) -> &Bloom {
        &self.filter
    }

    /// Reads an `img` gossip value: `PULLING;HASHES;BITS`, the bits in
    /// base64 without padding.
    pub fn parse(s: &str) -> Result<ImageSummary, SummaryError> {
        let mut parts = s.split(';');
        let mut next = || parts.next().ok_or(SummaryError);
        let pulling = next()?.parse().map_err(|_| SummaryError)?;
        let hashes = next()?.parse().map_err(|_| SummaryError)?;
        let b64 = next()?;
        if parts.next().is_some() || b64.len() > super::bloom::MAX_BYTES.div_ceil(3) * 4 {
            return Err(SummaryError);
        }
        let bits = STANDARD_NO_PAD.decode(b64).map_err(|_| SummaryError)?;
        let filter = Bloom::from_parts(hashes, bits).map_err(|_| SummaryError)?;
        Ok(ImageSummary { pulling, filter })
    }
}

impl fmt::Display for ImageSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{};{};{}",
            self.pulling,
            self.filter.hashes(),
            STANDARD_NO_PAD.encode(self.filter.bytes())
        )
    }
}

impl From<ImageSummary> for String {
    fn from(s: ImageSummary) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for ImageSummary {
    type Error = SummaryError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        ImageSummary::parse(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "sha256:fb3da27869dd0b5c1ad0c1f3a1f0e9c3a7d8b2e4f6a8c0e2d4f6a8b0c2e4f6a8";

    fn busybox() -> ListedImage {
        ListedImage {
            id: ID.into(),
            repo_tags: vec!["busybox:latest".into(), "127.0.0.1:5000/team/app:1".into()],
            repo_digests: vec![
                "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                    .into(),
            ],
        }
    }

    fn holds(s: &ImageSummary, name: &str) -> bool {
        s.holds(&Wanted::of(name).unwrap())
    }

    #[test]
    fn names_are_compared_as_docker_resolves_them() {
        let c = |n: &str| canonical(n).unwrap();
        let hub = "docker.io/library/busybox:latest";
        for n in [
            "busybox",
            "busybox:latest",
            "library/busybox",
            "docker.io/busybox",
            hub,
        ] {
            assert_eq!(c(n), hub, "{n}");
        }
        assert_eq!(c("team/app:2"), "docker.io/team/app:2");
        assert_eq!(c("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
        let d = format!("sha256:{}", "0".repeat(64));
        assert_eq!(
            c(&format!("ghcr.io/x/y:v1@{d}")),
            format!("ghcr.io/x/y@{d}"),
            "a digest pins the image, the tag is not looked up"
        );
        assert_eq!(c(&ID.to_uppercase().replace("SHA256:", "")), ID);
        assert_eq!(canonical("<none>:<none>"), None);
        assert_eq!(canonical("sha256:abc"), None, "a short id");
    }

    #[test]
    fn a_held_image_is_found_by_every_name_it_has() {
        let s = ImageSummary::of(&[busybox()], 0);
        for n in [
            ID,
            &ID[7..],
            "busybox",
            "docker.io/library/busybox:latest",
            "127.0.0.1:5000/team/app:1",
            "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(holds(&s, n), "{n}");
        }
        for n in ["busybox:1.36", "127.0.0.1:5000/team/app:2", "alpine"] {
            assert!(!holds(&s, n), "{n}");
        }
        assert!(!holds(&ImageSummary::default(), "busybox"));
    }

    #[test]
    fn the_gossip_value_round_trips_and_stays_under_2_kib() {
        let s = ImageSummary::of(&[busybox()], 2);
        assert_eq!(ImageSummary::parse(&s.to_string()), Ok(s.clone()));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<ImageSummary>(&json).unwrap(), s);
        let empty = ImageSummary::default();
        assert_eq!(empty.to_string(), "0;7;");
        assert_eq!(ImageSummary::parse("0;7;"), Ok(empty));
        // Far more images than it is sized for: the value stays bounded.
        let many: Vec<ListedImage> = (0..5_000)
            .map(|i| ListedImage {
                id: format!("sha256:{i:064x}"),
                repo_tags: vec![format!("registry.example/app{i}:1")],
                repo_digests: vec![format!("registry.example/app{i}@sha256:{i:064x}")],
            })
            .collect();
        let value = ImageSummary::of(&many, u32::MAX).to_string();
        assert!(value.len() + "img".len() <= 2_048, "{}", value.len());
        assert!(ImageSummary::parse(&value).is_ok());
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "1",
            "1;7",
            "x;7;",
            "1;0;AAAA",
            "1;17;AAAA",
            "1;7;A",         // not base64
            "1;7;AA==",      // padded
            "1;7;AB",        // bits past the end set: not canonical
            "1;7;AAAA;more", // a fourth part
            "-1;7;",
        ] {
            assert_eq!(ImageSummary::parse(bad), Err(SummaryError), "{bad:?}");
        }
        let too_long = format!("0;7;{}", "A".repeat(2_004));
        assert_eq!(ImageSummary::parse(&too_long), Err(SummaryError));
    }

    proptest! {
        /// Every name of every held image is found.
        #[test]
        fn no_image_held_is_missed(tags in proptest::collection::vec("[a-z0-9]{1,12}(/[a-z0-9]{1,8})?:[a-z0-9][a-z0-9.]{0,7}", 0..300),
                                   pulling: u32) {
            let held: Vec<ListedImage> = tags.iter().enumerate().map(|(i, t)| ListedImage {
                id: format!("sha256:{i:064x}"),
                repo_tags: vec![t.clone()],
                repo_digests: Vec::new(),
            }).collect();
            let s = ImageSummary::of(&held, pulling);
            let s = ImageSummary::parse(&s.to_string()).unwrap();
            for h in &held {
                prop_assert!(holds(&s, &h.id));
                prop_assert!(holds(&s, &h.repo_tags[0]));
            }
        }

        #[test]
        fn garbage_never_panics(s in ".{0,80}") {
            let _ = ImageSummary::parse(&s);
            let _ = canonical(&s);
        }
    }
}
