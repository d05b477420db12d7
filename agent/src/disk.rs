//! Durable writes to the data dir, and the seam through which tests make
//! the disk fail.
//!
//! Every file the agent must find whole after a crash (`services.json`,
//! kept task output, task records set aside) is written by
//! [`Disk::write_file`] or finished by [`Disk::commit`]: a temporary file
//! beside it, fsynced, renamed over it, and the directory fsynced, so a
//! reader sees the old file or the new one, never half, and a crash after
//! the call keeps the new one. The task store (redb, `store`) commits with
//! its own fsync; its file's reads and writes pass the same
//! [`DiskFaults`].
//!
//! A failure is returned to the caller, never only logged: what asked for
//! the write decides what it means (a submission refused, a health check
//! that says so).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Faults of the disk under the data dir: the real disk has none; tests
/// plug in [`SimulatedFaults`].
pub trait DiskFaults: Send + Sync + std::fmt::Debug + 'static {
    /// Before bytes are written to `path` (or synced, or its length
    /// changed): an error fails that write as the disk would.
    fn before_write(&self, path: &Path) -> io::Result<()>;
    /// After `data` was read from `path`: an error fails that read.
    fn after_read(&self, path: &Path, data: &[u8]) -> io::Result<()>;
}

/// The data dir's disk: how durable files are written, and its faults.
#[derive(Debug, Clone, Default)]
pub struct Disk {
    faults: Option<Arc<dyn DiskFaults>>,
}

impl Disk {
    /// The real disk, with no faults but its own.
    pub fn real() -> Self {
        Self::default()
    }

    /// A disk whose writes and reads also pass `faults` (tests).
    pub fn with_faults(faults: Arc<dyn DiskFaults>) -> Self {
        Self {
            faults: Some(faults),
        }
    }

    /// Whether a write to `path` may go ahead (see [`DiskFaults`]).
    pub fn before_write(&self, path: &Path) -> io::Result<()> {
        match &self.faults {
            Some(f) => f.before_write(path),
            None => Ok(()),
        }
    }

    /// Whether `data`, read from `path`, was read (see [`DiskFaults`]).
    pub fn after_read(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        match &self.faults {
            Some(f) => f.after_read(path, data),
            None => Ok(()),
        }
    }

    /// Replaces `path` with `bytes`, durably: see the module doc. On
    /// failure the old file (if any) is left as it was.
    pub fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = temp_path(path);
        let written = self.before_write(&tmp).and_then(|()| {
            let mut file = File::create(&tmp)?;
            file.write_all(bytes)?;
            self.commit(file, &tmp, path)
        });
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Makes `tmp`, written through `file`, the file at `path`: fsyncs it,
    /// renames it over `path` and fsyncs the directory. On failure `tmp`
    /// is left for the caller to remove.
    pub fn commit(&self, file: File, tmp: &Path, path: &Path) -> io::Result<()> {
        self.before_write(path)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(tmp, path)?;
        sync_dir(path)
    }

    /// Appends `bytes` to `path` (created if missing) and fsyncs it, and
    /// its directory when it was created.
    pub fn append(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.before_write(path)?;
        let existed = path.exists();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        if existed { Ok(()) } else { sync_dir(path) }
    }
}

/// The temporary name `path` is written under before the rename.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Fsyncs the directory holding `path`, so a rename into it survives a
/// crash.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Faults a test switches on and off: a full disk (every write fails with
/// "No space left on device") and bad sectors (a read whose data holds a
/// marker fails with an I/O error). Only files whose name contains the
/// filter given at creation are affected.
#[derive(Debug, Default)]
pub struct SimulatedFaults {
    only: String,
    full: AtomicBool,
    bad: Mutex<Option<Vec<u8>>>,
}

/// ENOSPC and EIO, as the kernel reports them.
const NO_SPACE: i32 = 28;
const IO_ERROR: i32 = 5;

impl SimulatedFaults {
    /// Faults of the files whose name contains `only` ("" for all).
    pub fn new(only: &str) -> Arc<Self> {
        Arc::new(Self {
            only: only.to_owned(),
            ..Self::default()
        })
    }

    /// The disk is full (`true`) or has room again.
    pub fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }

    /// Reads of data that holds `marker` fail (`None`: none do).
    pub fn set_bad_sector(&self, marker: Option<&[u8]>) {
        *self.bad.lock().unwrap_or_else(|e| e.into_inner()) = marker.map(<[u8]>::to_vec);
    }

    fn affects(&self, path: &Path) -> bool {
        path.file_name()
            .is_some_and(|n| n.to_string_lossy().contains(&self.only))
    }
}

impl DiskFaults for SimulatedFaults {
    fn before_write(&self, path: &Path) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) && self.affects(path) {
            return Err(io::Error::from_raw_os_error(NO_SPACE));
        }
        Ok(())
    }

    fn after_read(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let bad = self.bad.lock().unwrap_or_else(|e| e.into_inner());
        match bad.as_deref() {
            Some(marker)
                if self.affects(path) && data.windows(marker.len()).any(|w| w == marker) =>
            {
                Err(io::Error::from_raw_os_error(IO_ERROR))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_a_failed_write_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let faults = SimulatedFaults::new("state");
        let disk = Disk::with_faults(faults.clone());
        disk.write_file(&path, b"one").unwrap();
        disk.write_file(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");

        faults.set_full(true);
        let e = disk.write_file(&path, b"three").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(NO_SPACE), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"two", "the old file stays");
        assert!(!temp_path(&path).exists(), "no temporary file is left");
        assert!(disk.append(&path, b"x").is_err());

        faults.set_full(false);
        disk.append(&dir.path().join("log.jsonl"), b"a\n").unwrap();
        disk.append(&dir.path().join("log.jsonl"), b"b\n").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("log.jsonl")).unwrap(),
            b"a\nb\n"
        );
    }

    #[test]
    fn a_write_into_a_directory_that_is_a_file_fails() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, b"").unwrap();
        assert!(Disk::real().write_file(&not_a_dir.join("x"), b"1").is_err());
    }

    #[test]
    fn faults_touch_only_the_files_they_name_and_bad_sectors_fail_reads() {
        let faults = SimulatedFaults::new("tasks.redb");
        faults.set_full(true);
        let disk = Disk::with_faults(faults.clone());
        assert!(disk.before_write(Path::new("/d/tasks.redb")).is_err());
        assert!(disk.before_write(Path::new("/d/services.json")).is_ok());
        faults.set_bad_sector(Some(b"XYZ"));
        let p = Path::new("/d/tasks.redb");
        assert!(disk.after_read(p, b"..XYZ..").is_err());
        assert!(disk.after_read(p, b"..XY..Z").is_ok());
        assert!(Disk::real().after_read(p, b"XYZ").is_ok());
    }
}
