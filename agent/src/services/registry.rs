//! The service definitions this node knows (owned by the services task),
//! kept durably in
//! `DATA_DIR/services.json` (written to a temporary file, synced, renamed)
//! and merged with what the mesh gossips (`mesh_protocol::service::defs`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use mesh_protocol::ServiceName;
use mesh_protocol::service::ServiceDef;
use mesh_protocol::service::defs::merge;
use tracing::warn;

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
    defs: BTreeMap<ServiceName, ServiceDef>,
}

impl Registry {
    /// Loads `dir/services.json` (none yet is fine).
    pub fn open(dir: &Path) -> Result<Self, RegistryError> {
        let path = dir.join("services.json");
        let defs = match std::fs::read(&path) {
            Ok(bytes) => {
                let list: Vec<ServiceDef> =
                    serde_json::from_slice(&bytes).map_err(|source| RegistryError::Parse {
                        path: path.display().to_string(),
                        source,
                    })?;
                list.into_iter().map(|d| (d.name().clone(), d)).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(RegistryError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        Ok(Self { path, defs })
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
    /// returns what changed.
    pub fn merge(&mut self, incoming: Vec<ServiceDef>) -> Result<Vec<ServiceDef>, RegistryError> {
        let changed = merge(&mut self.defs, incoming);
        if !changed.is_empty() {
            self.save()?;
        }
        Ok(changed)
    }

    fn save(&self) -> Result<(), RegistryError> {
        let io = |source| RegistryError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let list: Vec<&ServiceDef> = self.defs.values().collect();
        // Plain data always serialises.
        let bytes = serde_json::to_vec_pretty(&list).unwrap_or_default();
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = std::fs::File::open(dir)
            && let Err(e) = d.sync_all()
        {
            warn!(error = %e, "cannot sync the data dir after saving services");
        }
        Ok(())
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
        }
    }

    #[test]
    fn definitions_survive_a_reopen_and_tombstones_hide_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::open(dir.path()).unwrap();
        assert_eq!(
            r.merge(vec![def("a", 1, false), def("b", 1, false)])
                .unwrap()
                .len(),
            2
        );
        assert!(r.merge(vec![def("a", 1, false)]).unwrap().is_empty());
        r.merge(vec![def("b", 2, true)]).unwrap();
        let again = Registry::open(dir.path()).unwrap();
        assert_eq!(again.all().len(), 2);
        assert!(again.get(&ServiceName::new("a").unwrap()).is_some());
        assert!(again.get(&ServiceName::new("b").unwrap()).is_none());
        std::fs::write(dir.path().join("services.json"), b"{garbage").unwrap();
        assert!(
            Registry::open(dir.path())
                .unwrap_err()
                .to_string()
                .contains("move the file away")
        );
    }
}
