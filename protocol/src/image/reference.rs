//! An image name split as Docker reads it: `[registry/]repository[:tag][@digest]`.
//! The registry is what credentials are looked up by; the repository and
//! tag (or digest) are what a pull asks for.

use std::fmt;

/// Docker Hub, where a name with no registry part points.
pub const DEFAULT_REGISTRY: &str = "docker.io";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    #[error("image name is empty")]
    Empty,
    #[error("image name {0:?} has an empty part (a leading, trailing or double '/')")]
    EmptyPart(String),
    #[error("image name {0:?} has an empty tag or digest")]
    EmptyTag(String),
    #[error("image name {0:?} contains a character Docker does not allow: {1:?}")]
    BadChar(String, char),
    #[error(
        "image name {0:?}: repository part {1:?} must be lowercase letters, digits and single separators (., _, -), starting and ending with a letter or digit"
    )]
    BadRepository(String, String),
    #[error(
        "image name {0:?}: tag {1:?} must be at most 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
    )]
    BadTag(String, String),
    #[error("image name {0:?}: digest {1:?} is not ALGORITHM:HEX (e.g. sha256: and 64 hex digits)")]
    BadDigest(String, String),
}

/// Docker's rule for one repository path component: lowercase letters and
/// digits, with single `.`, `_`, `-` (or `__`) between them.
fn valid_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    alnum(first)
        && alnum(last)
        && bytes.iter().all(|b| alnum(b) || b"._-".contains(b))
        && !c.contains("..")
        && !c.contains("___")
}

fn valid_tag(t: &str) -> bool {
    t.len() <= 128
        && !t.starts_with(['.', '-'])
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn valid_digest(d: &str) -> bool {
    match d.split_once(':') {
        Some((alg, hex)) => {
            !alg.is_empty()
                && alg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
                && hex.len() >= 32
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        }
        None => false,
    }
}

/// A parsed image name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// `docker.io` when the name has no registry part.
    pub registry: String,
    /// The repository within the registry, as written (`library/` is not
    /// added: Docker resolves it itself).
    pub repository: String,
    /// `latest` when the name has neither tag nor digest.
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses `name` the way Docker does: the first part is a registry
    /// when it has a `.` or a `:`, or is `localhost`.
    pub fn parse(name: &str) -> Result<Self, ImageRefError> {
        if name.is_empty() {
            return Err(ImageRefError::Empty);
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._-/:@".contains(*c)))
        {
            return Err(ImageRefError::BadChar(name.to_owned(), c));
        }
        let (rest, digest) = match name.split_once('@') {
            Some((_, "")) => return Err(ImageRefError::EmptyTag(name.to_owned())),
            Some((r, d)) => (r, Some(d.to_owned())),
            None => (name, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is
        // a registry's port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (path, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                let tag = &rest[at + 1..];
                if tag.is_empty() {
                    return Err(ImageRefError::EmptyTag(name.to_owned()));
                }
                (&rest[..at], Some(tag.to_owned()))
            }
            None => (rest, None),
        };
        if path.split('/').any(str::is_empty) {
            return Err(ImageRefError::EmptyPart(name.to_owned()));
        }
        let (registry, repository) = match path.split_once('/') {
            Some((first, repo))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), repo.to_owned())
            }
            _ => (DEFAULT_REGISTRY.to_owned(), path.to_owned()),
        };
        if let Some(bad) = repository.split('/').find(|c| !valid_component(c)) {
            return Err(ImageRefError::BadRepository(
                name.to_owned(),
                bad.to_owned(),
            ));
        }
        if let Some(t) = tag.as_ref().filter(|t| !valid_tag(t)) {
            return Err(ImageRefError::BadTag(name.to_owned(), t.clone()));
        }
        if let Some(d) = digest.as_ref().filter(|d| !valid_digest(d)) {
            return Err(ImageRefError::BadDigest(name.to_owned(), d.clone()));
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            _ => tag,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What Docker's create-image call takes as `fromImage` (the name
    /// without tag or digest, registry included when not Docker Hub).
    pub fn from_image(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            self.repository.clone()
        } else {
            format!("{}/{}", self.registry, self.repository)
        }
    }

    /// What Docker's create-image call takes as `tag`: the digest if there
    /// is one (it pins the content), else the tag.
    pub fn pull_tag(&self) -> String {
        self.digest
            .clone()
            .or_else(|| self.tag.clone())
            .unwrap_or_else(|| "latest".to_owned())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.from_image())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn a_bare_name_is_docker_hub_latest() {
        let r = parse("busybox");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "busybox");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.from_image(), "busybox");
        assert_eq!(r.pull_tag(), "latest");
    }

    #[test]
    fn a_registry_with_a_port_is_not_a_tag() {
        let r = parse("127.0.0.1:5000/team/app:1.2");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        assert_eq!(r.from_image(), "127.0.0.1:5000/team/app");
        assert_eq!(r.to_string(), "127.0.0.1:5000/team/app:1.2");
        let untagged = parse("localhost:5000/app");
        assert_eq!(untagged.registry, "localhost:5000");
        assert_eq!(untagged.tag.as_deref(), Some("latest"));
    }

    #[test]
    fn a_first_part_without_dot_or_port_is_a_hub_namespace() {
        let r = parse("library/busybox:1");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(parse("localhost/app").registry, "localhost");
    }

    #[test]
    fn a_digest_pins_what_is_pulled() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let r = parse(&format!("ghcr.io/x/y@{d}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(d));
        assert_eq!(r.pull_tag(), d);
        let both = parse(&format!("ghcr.io/x/y:v1@{d}"));
        assert_eq!(both.tag.as_deref(), Some("v1"));
        assert_eq!(both.pull_tag(), d);
    }

    #[test]
    fn malformed_names_are_refused_with_the_reason() {
        assert_eq!(ImageRef::parse(""), Err(ImageRefError::Empty));
        assert!(matches!(
            ImageRef::parse("a//b"),
            Err(ImageRefError::EmptyPart(_))
        ));
        assert!(matches!(
            ImageRef::parse("/a"),
            Err(ImageRefError::EmptyPart(_))
        ));
        assert!(matches!(
            ImageRef::parse("a:"),
            Err(ImageRefError::EmptyTag(_))
        ));
        assert!(matches!(
            ImageRef::parse("a@"),
            Err(ImageRefError::EmptyTag(_))
        ));
        assert!(matches!(
            ImageRef::parse("a b"),
            Err(ImageRefError::BadChar(_, ' '))
        ));
        for (bad, part) in [
            ("Nosuch/image:1", "Nosuch"),
            ("a/-b", "-b"),
            ("a/b_", "b_"),
            ("a..b", "a..b"),
        ] {
            assert_eq!(
                ImageRef::parse(bad),
                Err(ImageRefError::BadRepository(bad.into(), part.into())),
                "{bad}"
            );
        }
        assert!(matches!(
            ImageRef::parse("a:-x"),
            Err(ImageRefError::BadTag(..))
        ));
        let long = format!("a:{}", "x".repeat(129));
        assert!(matches!(
            ImageRef::parse(&long),
            Err(ImageRefError::BadTag(..))
        ));
        assert!(matches!(
            ImageRef::parse("a@sha256:xyz"),
            Err(ImageRefError::BadDigest(..))
        ));
        assert!(matches!(
            ImageRef::parse("a@nocolon"),
            Err(ImageRefError::BadDigest(..))
        ));
    }

    #[test]
    fn names_docker_takes_are_taken() {
        for good in [
            "busybox",
            "mesh-busybox:latest",
            "My.Registry:5000/team/app_x:V1.2-rc",
            "localhost/a__b/c.d-e:latest",
            "fb3da27869dd",
            "sha256:fb3da27869dd0123456789abcdef0123456789abcdef0123456789abcdef",
            "127.0.0.1:5000/ganger/app:1",
        ] {
            assert!(
                ImageRef::parse(good).is_ok(),
                "{good}: {:?}",
                ImageRef::parse(good)
            );
        }
    }
}
