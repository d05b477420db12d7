//! The service definitions this node knows (owned by the services task),
//! kept durably in `DATA_DIR/services.json` (rewritten whole through
//! `Disk::write_file`: temporary file, fsync, rename, fsync of the dir; a
//! failed write is an error to whoever changed a definition) and merged with what the mesh gossips (`mesh_protocol::service::defs`).
//! Stored definitions that are not valid are set aside in
//! `DATA_DIR/services.rejected.jsonl`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mesh_protocol::ServiceName;
use mesh_protocol::service::ServiceDef;
use mesh_protocol::service::defs::{DefError, Stored, merge};
use tracing::warn;

use crate::disk::Disk;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("service definitions at {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "service definitions at {path} do not parse: {source}; move the file away to start with none (peers will send theirs)"
    )]
    Parse {
        path: String,
        source: serde_json::Error,
    },
}

#[derive(Debug)]
pub struct Registry {
    path: PathBuf,
    disk: Disk,
    defs: BTreeMap<ServiceName, ServiceDef>,
}

impl Registry {
    /// Loads `dir/services.json` (none yet is fine). Each definition is
    /// validated as the API validates one; one that is not valid (written
    /// by an older agent with other limits, or by hand) is set aside in
    /// `services.rejected.jsonl` with a warning, and the others are served.
    /// A file that is not a list of definitions at all is an error.
    pub fn open(dir: &Path, disk: Disk) -> Result<Self, RegistryError> {
        let path = dir.join("services.json");
        let mut registry = Self {
            path,
            disk,
            defs: BTreeMap::new(),
        };
        let bytes = match std::fs::read(&registry.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(registry),
            Err(source) => {
                return Err(RegistryError::Io {
                    path: registry.path.display().to_string(),
                    source,
                });
            }
        };
        let Stored {
            valid,
            refused: rejected,
        } = ServiceDef::read_stored(&bytes).map_err(|source| RegistryError::Parse {
            path: registry.path.display().to_string(),
            source,
        })?;
        merge(&mut registry.defs, valid);
        if !rejected.is_empty() {
            registry.set_aside(&rejected)?;
            registry.save(&registry.defs)?;
        }
        Ok(registry)
    }

    /// Appends stored definitions that are not valid to
    /// `services.rejected.jsonl` (one JSON object a line: when, why, what),
    /// for an operator to look at; they are not served.
    fn set_aside(&self, rejected: &[(serde_json::Value, DefError)]) -> Result<(), RegistryError> {
        let path = self.path.with_file_name("services.rejected.jsonl");
        let io = |source| RegistryError::Io {
            path: path.display().to_string(),
            source,
        };
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut lines = String::new();
        for (value, error) in rejected {
            let service = value
                .pointer("/spec/name")
                .and_then(|n| n.as_str())
                .unwrap_or("?");
            warn!(
                service,
                %error,
                file = %path.display(),
                "a stored service definition is not valid; set aside, not served"
            );
            let line = serde_json::json!({
                "at_ms": at_ms,
                "error": error.to_string(),
                "def": value,
            });
            lines.push_str(&line.to_string());
            lines.push('\n');
        }
        self.disk.append(&path, lines.as_bytes()).map_err(io)
    }

    /// Every definition, tombstones included.
    pub fn all(&self) -> Vec<ServiceDef> {
        self.defs.values().cloned().collect()
    }

    /// A live (not removed) definition.
    pub fn get(&self, name: &ServiceName) -> Option<ServiceDef> {
        self.defs.get(name).filter(|d| !d.removed).cloned()
    }

    /// Merges `incoming`, stores the result if anything changed, and
    /// returns what changed. When the file cannot be written, nothing
    /// changes (the next merge tries again).
    pub fn merge(&mut self, incoming: Vec<ServiceDef>) -> Result<Vec<ServiceDef>, RegistryError> {
        let mut next = self.defs.clone();
        let changed = merge(&mut next, incoming);
        if !changed.is_empty() {
            self.save(&next)?;
            self.defs = next;
        }
        Ok(changed)
    }

    fn save(&self, defs: &BTreeMap<ServiceName, ServiceDef>) -> Result<(), RegistryError> {
        let io = |source| RegistryError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let list: Vec<&ServiceDef> = defs.values().collect();
        // Plain data always serialises.
        let bytes = serde_json::to_vec_pretty(&list).unwrap_or_default();
        self.disk.write_file(&self.path, &bytes).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_protocol::service::{ServiceRequest, ServiceSpec};

    fn def(name: &str, revision: u64, removed: bool) -> ServiceDef {
        ServiceDef {
            spec: ServiceSpec::try_from(ServiceRequest {
                name: name.into(),
                image: "img".into(),
                port: 80,
                listen: 8080,
                ..Default::default()
            })
            .unwrap(),
            revision,
            removed,
            owner: mesh_protocol::auth::unknown_owner(),
        }
    }

    #[test]
    fn definitions_survive_a_reopen_and_tombstones_hide_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::open(dir.path(), Disk::real()).unwrap();
        assert_eq!(
            r.merge(vec![def("a", 1, false), def("b", 1, false)])
                .unwrap()
                .len(),
            2
        );
        assert!(r.merge(vec![def("a", 1, false)]).unwrap().is_empty());
        r.merge(vec![def("b", 2, true)]).unwrap();
        let again = Registry::open(dir.path(), Disk::real()).unwrap();
        assert_eq!(again.all().len(), 2);
        assert!(again.get(&ServiceName::new("a").unwrap()).is_some());
        assert!(again.get(&ServiceName::new("b").unwrap()).is_none());
        std::fs::write(dir.path().join("services.json"), b"{garbage").unwrap();
        assert!(
            Registry::open(dir.path(), Disk::real())
                .unwrap_err()
                .to_string()
                .contains("move the file away")
        );
    }

    /// A full disk: the definition is refused with the file's error, the
    /// registry keeps what it had, and the file too; once there is room the
    /// same merge goes through.
    #[test]
    fn a_failed_write_changes_nothing_and_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let faults = crate::disk::SimulatedFaults::new("services");
        let mut r = Registry::open(dir.path(), Disk::with_faults(faults.clone())).unwrap();
        r.merge(vec![def("a", 1, false)]).unwrap();
        faults.set_full(true);
        let e = r.merge(vec![def("b", 1, false)]).unwrap_err().to_string();
        assert!(
            e.contains("services.json") && e.contains("No space left"),
            "{e}"
        );
        assert_eq!(r.all(), vec![def("a", 1, false)]);
        let on_disk = Registry::open(dir.path(), Disk::real()).unwrap();
        assert_eq!(on_disk.all(), vec![def("a", 1, false)]);
        faults.set_full(false);
        assert_eq!(r.merge(vec![def("b", 1, false)]).unwrap().len(), 1);
        assert_eq!(
            Registry::open(dir.path(), Disk::real())
                .unwrap()
                .all()
                .len(),
            2
        );
    }

    /// A definition stored by an agent with other limits (or edited by
    /// hand) is set aside with a warning; the others are still served.
    #[test]
    fn an_invalid_stored_definition_is_set_aside_and_the_others_served() {
        let dir = tempfile::tempdir().unwrap();
        let good = def("good", 1, false);
        let mut bad = serde_json::to_value(def("bad", 1, false)).unwrap();
        bad["spec"]["warm"] = 4_000_000_000u32.into();
        bad["spec"]["max_per_node"] = 4_000_000_000u32.into();
        let list = serde_json::json!([good, bad, {"not": "a definition"}]);
        std::fs::write(dir.path().join("services.json"), list.to_string()).unwrap();
        let r = Registry::open(dir.path(), Disk::real()).unwrap();
        assert_eq!(r.all(), vec![good.clone()]);
        let rejected = std::fs::read_to_string(dir.path().join("services.rejected.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = rejected
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["def"], bad);
        assert!(
            lines[0]["error"]
                .as_str()
                .unwrap()
                .contains("--max-per-node"),
            "{rejected}"
        );
        // The file now holds the valid one only: set aside once.
        assert_eq!(
            Registry::open(dir.path(), Disk::real()).unwrap().all(),
            vec![good]
        );
        let again = std::fs::read_to_string(dir.path().join("services.rejected.jsonl")).unwrap();
        assert_eq!(again.lines().count(), 2);
    }
}
