//! Image GC's ledger on disk: `<data-dir>/images.json`, written whole
//! through [`Disk::write_file`]. A ledger that cannot be read is set aside
//! and an empty one used: the images it named are then nobody's, so GC
//! keeps them (it never removes what it does not know it pulled).

use std::path::{Path, PathBuf};

use mesh_protocol::image::Ledger;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::disk::Disk;

/// The file's name in the data dir.
pub const FILE: &str = "images.json";

/// The file's format number.
const FORMAT: u32 = 1;

/// Most bytes the file may hold (the ledger is bounded well below).
const MAX_BYTES: u64 = 16 << 20;

#[derive(Serialize, Deserialize)]
struct Stored {
    format: u32,
    #[serde(flatten)]
    ledger: Ledger,
}

/// Where the ledger lives and how it is written.
#[derive(Debug, Clone)]
pub struct LedgerFile {
    path: PathBuf,
    disk: Disk,
}

impl LedgerFile {
    pub fn new(data_dir: &Path, disk: Disk) -> Self {
        Self {
            path: data_dir.join(FILE),
            disk,
        }
    }

    /// The stored ledger; empty when there is none or it cannot be read
    /// (then moved to `images.json.unreadable`, and a warning says so).
    pub fn load(&self) -> Ledger {
        match self.read() {
            Ok(Some(l)) => l,
            Ok(None) => Ledger::default(),
            Err(why) => {
                let aside = self.path.with_extension("json.unreadable");
                let _ = std::fs::rename(&self.path, &aside);
                warn!(path = %self.path.display(), %why, aside = %aside.display(), "image GC's ledger cannot be read; starting empty, so images pulled before are kept");
                Ledger::default()
            }
        }
    }

    fn read(&self) -> Result<Option<Ledger>, String> {
        let size = match std::fs::metadata(&self.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        if size > MAX_BYTES {
            return Err(format!("{size} bytes, more than {MAX_BYTES}"));
        }
        let bytes = std::fs::read(&self.path).map_err(|e| e.to_string())?;
        self.disk
            .after_read(&self.path, &bytes)
            .map_err(|e| e.to_string())?;
        let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if stored.format != FORMAT {
            return Err(format!(
                "format {}, this agent reads {FORMAT}",
                stored.format
            ));
        }
        Ok(Some(stored.ledger))
    }

    /// Replaces the stored ledger, durably.
    pub fn save(&self, ledger: &Ledger) -> std::io::Result<()> {
        let stored = Stored {
            format: FORMAT,
            ledger: ledger.clone(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(std::io::Error::other)?;
        self.disk.write_file(&self.path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_ledger_loads_back_and_a_bad_one_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let file = LedgerFile::new(dir.path(), Disk::real());
        assert_eq!(file.load(), Ledger::default());
        let mut l = Ledger::default();
        l.pulled("r.io/a:1", false, 5);
        l.used("r.io/a:1", 6);
        file.save(&l).unwrap();
        assert_eq!(file.load(), l);
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        assert_eq!(file.load(), Ledger::default());
        assert!(dir.path().join("images.json.unreadable").exists());
    }
}
