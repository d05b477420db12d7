//! The agent's durable state: every accepted task's record, written (and
//! fsynced) before the submitter hears "accepted" and on every transition.
//! redb, one file under `--data-dir`; records are postcard-encoded.

use std::fmt;
use std::path::Path;
use std::sync::{PoisonError, RwLock};

use mesh_protocol::{TaskId, TaskRecord, wire};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
/// Copies of tasks other agents run, held as their keeper.
const COPIES: TableDefinition<&str, &[u8]> = TableDefinition::new("copies");
/// Format of the stored records (postcard is not self-describing: any change
/// to `TaskRecord` bumps this, and an agent refuses a store it cannot read
/// rather than mistaking its tasks' containers for strays).
pub const FORMAT: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("task store at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: redb::Error,
    },
    #[error("task store: {0}")]
    Db(#[from] redb::Error),
    #[error(
        "task store is closed: opening it again after an I/O error failed; free space in the data dir, it is retried on the next write"
    )]
    Closed,
    #[error("task store record: {0}")]
    Codec(#[from] wire::WireError),
    #[error(
        "task store {path} has format {found}, this agent reads format {FORMAT}: run the agent version that wrote it to finish its tasks, or move the data dir away"
    )]
    Format { path: String, found: u32 },
}

fn db<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(e.into())
}

/// How the store opens its database again after an I/O error (a full
/// disk, say): redb refuses every later transaction of a database that saw
/// one ("Previous I/O error occurred"), so the only way back is a new handle.
type Opener = Box<dyn Fn() -> Result<Database, redb::Error> + Send + Sync>;

/// Durable task records.
pub struct Store {
    /// `None` after a reopen failed; the next call tries again.
    db: RwLock<Option<Database>>,
    /// `None`: the store cannot be opened again (in memory).
    reopen: Option<Opener>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("reopens", &self.reopen.is_some())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) `dir/tasks.redb`. Fails if another agent holds it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("tasks.redb");
        let open = |e: redb::Error| StoreError::Open {
            path: path.display().to_string(),
            source: e,
        };
        let db = Database::create(&path).map_err(|e| open(e.into()))?;
        let reopen_path = path.clone();
        let reopener: Opener = Box::new(move || Ok(Database::create(&reopen_path)?));
        let store = Self::init(db, Some(reopener))?;
        match store.format()? {
            found if found == FORMAT => Ok(store),
            found => Err(StoreError::Format {
                path: path.display().to_string(),
                found,
            }),
        }
    }

    /// Runs `op` on the database; if redb refuses it for an earlier I/O
    /// error, opens the database again and runs it once more.
    fn with_db<T>(&self, op: impl Fn(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        match self.try_with_db(&op) {
            Err(StoreError::Db(redb::Error::PreviousIo) | StoreError::Closed)
                if self.reopen.is_some() =>
            {
                self.reopen()?;
                self.try_with_db(&op)
            }
            other => other,
        }
    }

    fn try_with_db<T>(
        &self,
        op: &impl Fn(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // A panic while holding the lock leaves the handle as it was.
        let guard = self.db.read().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(db) => op(db),
            None => Err(StoreError::Closed),
        }
    }

    /// Drops the database handle (releasing its file lock) and opens it
    /// again.
    fn reopen(&self) -> Result<(), StoreError> {
        let Some(reopen) = &self.reopen else {
            return Err(StoreError::Closed);
        };
        let mut guard = self.db.write().unwrap_or_else(PoisonError::into_inner);
        drop(guard.take());
        let db = reopen()?;
        *guard = Some(db);
        tracing::warn!("task store opened again after an I/O error");
        Ok(())
    }

    /// The store's format; a store with tasks but no format entry predates
    /// format numbers (format 1).
    fn format(&self) -> Result<u32, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(db_err)?;
            let meta = tx.open_table(META).map_err(db_err)?;
            Ok(meta
                .get("format")
                .map_err(db_err)?
                .map(|v| v.value())
                .unwrap_or(1))
        })
    }

    /// A store that lives in memory only, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(db)?;
        Self::init(db, None)
    }

    fn init(db: Database, reopen: Option<Opener>) -> Result<Self, StoreError> {
        let tx = db.begin_write().map_err(db_err)?;
        {
            let tasks = tx.open_table(TASKS).map_err(db_err)?;
            tx.open_table(COPIES).map_err(db_err)?;
            let mut meta = tx.open_table(META).map_err(db_err)?;
            // A new store takes this agent's format; an old one keeps its own.
            let fresh =
                tasks.is_empty().map_err(db_err)? && meta.get("format").map_err(db_err)?.is_none();
            if fresh {
                meta.insert("format", FORMAT).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(Self {
            db: RwLock::new(Some(db)),
            reopen,
        })
    }

    /// Writes records in one durable transaction.
    pub fn put_all<'a>(
        &self,
        records: impl IntoIterator<Item = &'a TaskRecord>,
    ) -> Result<(), StoreError> {
        let records: Vec<&TaskRecord> = records.into_iter().collect();
        self.with_db(|db| {
            let tx = db.begin_write().map_err(db_err)?;
            {
                let mut table = tx.open_table(TASKS).map_err(db_err)?;
                for r in &records {
                    let bytes = wire::encode(r)?;
                    table
                        .insert(r.id.as_str(), bytes.as_slice())
                        .map_err(db_err)?;
                }
            }
            tx.commit().map_err(db_err)?;
            Ok(())
        })
    }

    /// Stores the copy of a task another agent runs.
    pub fn put_copy(&self, record: &TaskRecord) -> Result<(), StoreError> {
        self.with_db(|db| {
            let tx = db.begin_write().map_err(db_err)?;
            {
                let mut table = tx.open_table(COPIES).map_err(db_err)?;
                let bytes = wire::encode(record)?;
                table
                    .insert(record.id.as_str(), bytes.as_slice())
                    .map_err(db_err)?;
            }
            tx.commit().map_err(db_err)?;
            Ok(())
        })
    }

    /// Every copy held (unreadable ones are skipped).
    pub fn load_copies(&self) -> Result<Vec<TaskRecord>, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(db_err)?;
            let table = tx.open_table(COPIES).map_err(db_err)?;
            let mut out = Vec::new();
            for item in table.iter().map_err(db_err)? {
                let (_, v) = item.map_err(db_err)?;
                if let Ok(r) = wire::decode::<TaskRecord>(v.value()) {
                    out.push(r);
                }
            }
            Ok(out)
        })
    }

    /// Forgets a task (it moved to another node).
    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        self.with_db(|db| {
            let tx = db.begin_write().map_err(db_err)?;
            tx.open_table(TASKS)
                .map_err(db_err)?
                .remove(id)
                .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok(())
        })
    }

    /// Forgets finished tasks and finished copies (retention), in one
    /// durable transaction.
    pub fn forget(&self, tasks: &[TaskId], copies: &[TaskId]) -> Result<(), StoreError> {
        self.with_db(|db| {
            let tx = db.begin_write().map_err(db_err)?;
            {
                let mut table = tx.open_table(TASKS).map_err(db_err)?;
                for id in tasks {
                    table.remove(id.as_str()).map_err(db_err)?;
                }
                let mut table = tx.open_table(COPIES).map_err(db_err)?;
                for id in copies {
                    table.remove(id.as_str()).map_err(db_err)?;
                }
            }
            tx.commit().map_err(db_err)?;
            Ok(())
        })
    }

    pub fn put(&self, record: &TaskRecord) -> Result<(), StoreError> {
        self.put_all([record])
    }

    /// Every stored record. A record that no longer decodes is reported in
    /// the second list (by key) rather than failing the whole load.
    pub fn load(&self) -> Result<(Vec<TaskRecord>, Vec<String>), StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(db_err)?;
            let table = tx.open_table(TASKS).map_err(db_err)?;
            let mut good = Vec::new();
            let mut bad = Vec::new();
            for item in table.iter().map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                match wire::decode::<TaskRecord>(v.value()) {
                    Ok(r) => good.push(r),
                    Err(_) => bad.push(k.value().to_owned()),
                }
            }
            Ok((good, bad))
        })
    }
}

fn db_err<E: Into<redb::Error>>(e: E) -> StoreError {
    db(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_protocol::{NodeId, TaskSpec};

    fn record(n: u32) -> TaskRecord {
        let spec = TaskSpec::builder("img").build().unwrap();
        TaskRecord::new(
            TaskId::new(format!("t{n}")).unwrap(),
            spec,
            NodeId::new("n").unwrap(),
            n as u64,
            0,
        )
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put(&record(1)).unwrap();
            s.put_all([&record(2), &record(3)]).unwrap();
            let mut r = record(1);
            r.kill(5).unwrap();
            s.put(&r).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let (records, bad) = s.load().unwrap();
        assert!(bad.is_empty());
        assert_eq!(records.len(), 3);
        assert!(records[0].kill_requested);
    }

    #[test]
    fn second_opener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Store::open(dir.path()).unwrap();
        let b = Store::open(dir.path());
        assert!(b.is_err());
    }

    #[test]
    fn a_store_of_another_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put(&record(1)).unwrap();
            let guard = s.db.read().unwrap();
            let tx = guard.as_ref().unwrap().begin_write().unwrap();
            tx.open_table(META)
                .unwrap()
                .insert("format", FORMAT + 1)
                .unwrap();
            tx.commit().unwrap();
        }
        let e = Store::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("format"), "{e}");
    }

    #[test]
    fn forgotten_tasks_and_copies_stay_gone_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_all([&record(1), &record(2)]).unwrap();
            s.put_copy(&record(3)).unwrap();
            s.put_copy(&record(4)).unwrap();
            let id = |n: u32| TaskId::new(format!("t{n}")).unwrap();
            s.forget(&[id(1)], &[id(3), id(9)]).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let ids = |v: Vec<TaskRecord>| v.into_iter().map(|r| r.id.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(s.load().unwrap().0), ["t2"]);
        assert_eq!(ids(s.load_copies().unwrap()), ["t4"]);
    }

    #[test]
    fn in_memory_works() {
        let s = Store::in_memory().unwrap();
        s.put(&record(7)).unwrap();
        assert_eq!(s.load().unwrap().0.len(), 1);
    }

    /// A disk that can be made full: writes and syncs fail with ENOSPC.
    #[derive(Debug, Clone, Default)]
    struct Disk {
        bytes: std::sync::Arc<RwLock<Vec<u8>>>,
        full: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl Disk {
        fn room(&self) -> std::io::Result<()> {
            if self.full.load(std::sync::atomic::Ordering::SeqCst) {
                Err(std::io::Error::from_raw_os_error(28))
            } else {
                Ok(())
            }
        }
    }

    impl redb::StorageBackend for Disk {
        fn len(&self) -> std::io::Result<u64> {
            Ok(self.bytes.read().unwrap().len() as u64)
        }

        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            let bytes = self.bytes.read().unwrap();
            let start = offset as usize;
            let src = bytes
                .get(start..start + out.len())
                .ok_or(std::io::ErrorKind::UnexpectedEof)?;
            out.copy_from_slice(src);
            Ok(())
        }

        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.room()?;
            self.bytes.write().unwrap().resize(len as usize, 0);
            Ok(())
        }

        fn sync_data(&self) -> std::io::Result<()> {
            self.room()
        }

        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.room()?;
            let mut bytes = self.bytes.write().unwrap();
            let (start, end) = (offset as usize, offset as usize + data.len());
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[start..end].copy_from_slice(data);
            Ok(())
        }
    }

    /// Found by the chaos run (seed 3): an agent whose data disk filled up
    /// refused every task for good once space was back, with "Previous I/O
    /// error occurred. Please close and re-open the database."
    #[test]
    fn a_store_takes_writes_again_once_the_disk_has_room() {
        let disk = Disk::default();
        let open = {
            let disk = disk.clone();
            move || -> Result<Database, redb::Error> {
                Ok(Database::builder().create_with_backend(disk.clone())?)
            }
        };
        let s = Store::init(open().unwrap(), Some(Box::new(open))).unwrap();
        s.put(&record(1)).unwrap();

        disk.full.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(s.put(&record(2)).is_err());
        assert!(s.put(&record(3)).is_err(), "still full");

        disk.full.store(false, std::sync::atomic::Ordering::SeqCst);
        s.put(&record(4)).unwrap();
        s.put_copy(&record(5)).unwrap();
        let ids = |v: Vec<TaskRecord>| v.into_iter().map(|r| r.id.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(s.load().unwrap().0), ["t1", "t4"]);
        assert_eq!(ids(s.load_copies().unwrap()), ["t5"]);
    }
}
