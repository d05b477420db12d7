//! Testnet networks Docker would not remove although nothing was attached to
//! them (Docker 20.10, moby/moby#42119). Teardown records each one here
//! instead of failing; the next `up` tries to remove them again first (they
//! usually go after a while, or after a dockerd restart) and keeps new
//! subnets clear of those that stay.
//!
//! One small JSON file per network, named by its Docker id, so that test
//! processes tearing down at the same time never write the same file, and a
//! network of the same name created later is never mistaken for the old one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::docker::Docker;
use crate::error::TestnetError;
use crate::name::TestnetName;

/// The directory under the testnet state root (`target/testnet`) that holds
/// the records; no testnet can be called this (names start with a letter or
/// digit).
pub const LEFTOVERS_DIR: &str = ".leftover-networks";

/// A network Docker kept after its testnet was torn down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leftover {
    /// The testnet it belonged to (the network's name).
    pub name: TestnetName,
    /// Docker's id of the network: what a retry removes.
    pub id: String,
    /// Its subnet, as Docker reported it.
    pub subnet: String,
    /// When the teardown gave up on it, in seconds since the Unix epoch.
    pub since_unix: u64,
}

impl Leftover {
    pub fn new(name: TestnetName, id: String, subnet: String) -> Self {
        let since_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            name,
            id,
            subnet,
            since_unix,
        }
    }
}

/// What [`Leftovers::retry`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Retried {
    /// Removed now, or gone already: their records are deleted.
    pub gone: Vec<Leftover>,
    /// Still there: recorded still, and to be kept clear of.
    pub kept: Vec<Leftover>,
}

/// The records, in one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftovers {
    dir: PathBuf,
}

impl Leftovers {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `<repo>/target/testnet/.leftover-networks`, next to the default state
    /// directories.
    pub fn default_location() -> Self {
        let root = crate::options::default_state_root();
        Self::new(root.join(LEFTOVERS_DIR))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records `leftover` (replacing an older record of the same network).
    pub fn record(&self, leftover: &Leftover) -> Result<(), TestnetError> {
        let path = self.path(&leftover.id)?;
        let io = |source| TestnetError::Io {
            what: "record the leftover network in",
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let text =
            serde_json::to_string_pretty(leftover).map_err(|source| TestnetError::StateJson {
                path: path.clone(),
                source,
            })?;
        // Write, then rename: a reader never sees half a record.
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Every record, oldest first. A file that is not a record is skipped
    /// with a warning: it must not stop a testnet from starting.
    pub fn list(&self) -> Result<Vec<Leftover>, TestnetError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(TestnetError::Io {
                    what: "list the leftover networks in",
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut all = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| {
                    serde_json::from_str::<Leftover>(&text).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(leftover) => all.push(leftover),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "not a leftover network record; skipped");
                }
            }
        }
        all.sort_by(|a, b| (a.since_unix, &a.id).cmp(&(b.since_unix, &b.id)));
        Ok(all)
    }

    /// Deletes the record of network `id`; a record already gone is fine.
    pub fn forget(&self, id: &str) -> Result<(), TestnetError> {
        let path = self.path(id)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(TestnetError::Io {
                what: "delete the leftover network record",
                path,
                source,
            }),
        }
    }

    /// Tries once more to remove every recorded network, by id (so a newer
    /// network of the same name is never touched); forgets those that went
    /// or were gone already. Blocking: one `docker network rm` per record.
    pub fn retry(&self, docker: &Docker) -> Result<Retried, TestnetError> {
        let mut retried = Retried::default();
        for leftover in self.list()? {
            match docker.run_blocking(&["network", "rm", leftover.id.as_str()]) {
                Ok(_) => {
                    tracing::info!(network = %leftover.name, id = %leftover.id, "removed a network an earlier teardown had to leave behind");
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(network = %leftover.name, id = %leftover.id, subnet = %leftover.subnet, error = %e, "Docker still keeps a network an earlier teardown left behind (moby/moby#42119); new testnets keep clear of its subnet");
                    retried.kept.push(leftover);
                    continue;
                }
            }
            self.forget(&leftover.id)?;
            retried.gone.push(leftover);
        }
        Ok(retried)
    }

    /// The record's file. Docker ids are hex; anything else would be a path
    /// of its own choosing, so it is refused.
    fn path(&self, id: &str) -> Result<PathBuf, TestnetError> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(TestnetError::NetworkId(id.to_owned()));
        }
        Ok(self.dir.join(format!("{id}.json")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftover(id: &str, since_unix: u64) -> Leftover {
        Leftover {
            name: TestnetName::new("tn-svc-1-abcd").unwrap(),
            id: id.to_owned(),
            subnet: "10.201.3.0/24".to_owned(),
            since_unix,
        }
    }

    #[test]
    fn records_lists_oldest_first_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let leftovers = Leftovers::new(dir.path().join(LEFTOVERS_DIR));
        assert_eq!(leftovers.list().unwrap(), []);
        leftovers.record(&leftover("bbb", 20)).unwrap();
        leftovers.record(&leftover("aaa", 30)).unwrap();
        // Something that is not a record does not stop the listing.
        std::fs::write(leftovers.dir().join("junk.json"), "{").unwrap();
        assert_eq!(
            leftovers.list().unwrap(),
            [leftover("bbb", 20), leftover("aaa", 30)]
        );
        leftovers.forget("bbb").unwrap();
        leftovers.forget("bbb").unwrap();
        assert_eq!(leftovers.list().unwrap(), [leftover("aaa", 30)]);
    }

    #[test]
    fn refuses_ids_that_are_not_docker_ids() {
        let leftovers = Leftovers::new("/nonexistent");
        for id in ["", "../state", "a/b", "a.json"] {
            assert!(
                matches!(leftovers.forget(id), Err(TestnetError::NetworkId(_))),
                "{id}"
            );
        }
    }
}
