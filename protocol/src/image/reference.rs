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
        let d = "sha256:0123456789abcdef";
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
    }
}
