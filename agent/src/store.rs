//! The agent's durable state: every accepted task's record, written (and
//! fsynced) before the submitter hears "accepted" and on every transition,
//! and the copies this node keeps for others. redb, one file under
//! `--data-dir`; records are postcard-encoded.
//!
//! A write that fails is an error to the caller, and the next write first
//! reopens the file (redb refuses every operation after a failed I/O until
//! then). A store that cannot be read as a whole is an error too: the
//! agent does not start without its tasks, since it would take their
//! containers for strays. A single record that does not decode is moved
//! aside, to `<data-dir>/set-aside/`, and the rest loads.

mod backend;

use std::path::{Path, PathBuf};

use mesh_protocol::{TaskId, TaskRecord, wire};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use tracing::{info, warn};

use crate::disk::Disk;

const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
/// Copies of tasks other agents run, held as their keeper.
const COPIES: TableDefinition<&str, &[u8]> = TableDefinition::new("copies");
/// Format of the stored records (postcard is not self-describing: any change
/// to `TaskRecord` bumps this, and an agent refuses a store it cannot read
/// rather than mistaking its tasks' containers for strays).
pub const FORMAT: u32 = 8;
/// The format before records named their owner and their image's pull
/// (see `migrate_from_7`).
const FORMAT_7: u32 = 7;
/// Where records that do not decode are moved, under the data dir.
pub const SET_ASIDE: &str = "set-aside";

mod v7;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the task store at {path}: {source}. meshd does not start without its tasks (it would take their containers for strays): free or repair the disk, stop the other agent that holds the file, or move the data dir away to start with no tasks (then remove this node's containers with meshd --cleanup)"
    )]
    Open {
        path: String,
        #[source]
        source: redb::Error,
    },
    #[error(
        "cannot read the task store at {path}: {source}. meshd does not start without its tasks (it would take their containers for strays): repair or free the disk and start again, or move the data dir away to start with no tasks (then remove this node's containers with meshd --cleanup)"
    )]
    Read {
        path: String,
        #[source]
        source: redb::Error,
    },
    #[error(
        "cannot read the set-aside records at {path}: {source}. meshd does not start without knowing them (their containers would be taken for strays): make it a readable directory, or remove it"
    )]
    SetAside {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the task store at {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: redb::Error,
    },
    #[error("task store record: {0}")]
    Codec(#[from] wire::WireError),
    #[error(
        "task store: record {key} of format 7 cannot be read to migrate it ({why}); move the data dir away or run the agent version that wrote it"
    )]
    Migrate { key: String, why: String },
    #[error(
        "task store {path} has format {found}, this agent reads format {FORMAT}: run the agent version that wrote it to finish its tasks, or move the data dir away"
    )]
    Format { path: String, found: u32 },
}

/// Which table a record is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Task,
    Copy,
}

impl Kind {
    fn table(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Kind::Task => TASKS,
            Kind::Copy => COPIES,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::Copy => "copy",
        }
    }
}

/// What the store holds, as read at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub records: Vec<TaskRecord>,
    /// Copies of tasks other agents run, held as their keeper.
    pub copies: Vec<TaskRecord>,
    /// Tasks whose records did not decode, moved aside now or at an earlier
    /// start: their containers are left alone.
    pub set_aside: Vec<String>,
}

/// The store's file and how it is written; none for a store in memory.
#[derive(Debug)]
struct OnDisk {
    dir: PathBuf,
    disk: Disk,
}

/// Durable task records.
#[derive(Debug)]
pub struct Store {
    /// None while a failed write's database is being reopened.
    db: Option<Database>,
    on_disk: Option<OnDisk>,
    /// A write failed: reopen before the next one.
    failed: bool,
}

impl Store {
    /// Opens (or creates) `dir/tasks.redb` on the real disk. Fails if
    /// another agent holds it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_on(dir, Disk::real())
    }

    /// Opens (or creates) `dir/tasks.redb` on `disk`.
    pub fn open_on(dir: &Path, disk: Disk) -> Result<Self, StoreError> {
        let on_disk = OnDisk {
            dir: dir.to_owned(),
            disk,
        };
        let db = on_disk.open_db()?;
        let mut store = Self {
            db: Some(db),
            on_disk: Some(on_disk),
            failed: false,
        };
        store.init()?;
        match store.format()? {
            found if found == FORMAT => Ok(store),
            FORMAT_7 => {
                store.migrate_from_7()?;
                Ok(store)
            }
            found => Err(StoreError::Format {
                path: store.path(),
                found,
            }),
        }
    }

    /// Rewrites a format-7 store as the current format in one transaction:
    /// every record and copy is read with format 7's layout and gains the
    /// owner `unknown` (only admins act on it) and the pull policy
    /// `missing`. A record that cannot be read stops the migration, which
    /// changes nothing then.
    fn migrate_from_7(&mut self) -> Result<(), StoreError> {
        let mut rewritten = Vec::new();
        {
            let tx = self.db()?.begin_read().map_err(|e| self.read_err(e))?;
            for which in [TASKS, COPIES] {
                let table = tx.open_table(which).map_err(|e| self.read_err(e))?;
                for entry in table.iter().map_err(|e| self.read_err(e))? {
                    let (k, v) = entry.map_err(|e| self.read_err(e))?;
                    let key = k.value().to_owned();
                    let record = v7::decode(v.value()).map_err(|why| StoreError::Migrate {
                        key: key.clone(),
                        why,
                    })?;
                    rewritten.push((which, key, wire::encode(&record)?));
                }
            }
        }
        self.write(|tx| {
            for (which, key, bytes) in &rewritten {
                tx.open_table(*which)?
                    .insert(key.as_str(), bytes.as_slice())?;
            }
            tx.open_table(META)?.insert("format", FORMAT)?;
            Ok(())
        })
    }

    /// A store that lives in memory only, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| StoreError::Open {
                path: "(in memory)".into(),
                source: e.into(),
            })?;
        let mut store = Self {
            db: Some(db),
            on_disk: None,
            failed: false,
        };
        store.init()?;
        Ok(store)
    }

    /// The store's file, for messages.
    pub fn path(&self) -> String {
        self.on_disk.as_ref().map_or_else(
            || "(in memory)".to_owned(),
            |d| d.file().display().to_string(),
        )
    }

    fn db(&self) -> Result<&Database, StoreError> {
        self.db.as_ref().ok_or_else(|| StoreError::Write {
            path: self.path(),
            source: redb::Error::DatabaseClosed,
        })
    }

    fn read_err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Read {
            path: self.path(),
            source: e.into(),
        }
    }

    fn write_err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Write {
            path: self.path(),
            source: e.into(),
        }
    }

    /// The store's format; a store with tasks but no format entry predates
    /// format numbers (format 1).
    fn format(&self) -> Result<u32, StoreError> {
        let tx = self.db()?.begin_read().map_err(|e| self.read_err(e))?;
        let meta = tx.open_table(META).map_err(|e| self.read_err(e))?;
        Ok(meta
            .get("format")
            .map_err(|e| self.read_err(e))?
            .map(|v| v.value())
            .unwrap_or(1))
    }

    fn init(&mut self) -> Result<(), StoreError> {
        self.write(|tx| {
            let tasks = tx.open_table(TASKS)?;
            tx.open_table(COPIES)?;
            let mut meta = tx.open_table(META)?;
            // A new store takes this agent's format; an old one keeps its own.
            let fresh = tasks.is_empty()? && meta.get("format")?.is_none();
            if fresh {
                meta.insert("format", FORMAT)?;
            }
            Ok(())
        })
    }

    /// Runs `change` in one durable transaction. A failure of a previous
    /// write reopens the database first.
    fn write(
        &mut self,
        change: impl FnOnce(&WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        if self.failed {
            self.reopen()?;
        }
        let result = self
            .db()?
            .begin_write()
            .map_err(redb::Error::from)
            .and_then(|tx| {
                change(&tx)?;
                tx.commit().map_err(redb::Error::from)
            });
        result.map_err(|e| {
            self.failed = true;
            self.write_err(e)
        })
    }

    /// After a failed write, opens the file again (redb repairs what the
    /// failed commit left; what was committed before is there).
    fn reopen(&mut self) -> Result<(), StoreError> {
        let Some(on_disk) = &self.on_disk else {
            self.failed = false;
            return Ok(());
        };
        // The old handle holds the file's lock: let it go first.
        self.db = None;
        let db = on_disk.open_db()?;
        self.db = Some(db);
        self.failed = false;
        info!(path = %self.path(), "task store reopened after a failed write");
        Ok(())
    }

    /// Writes records in one durable transaction.
    pub fn put_all<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a TaskRecord>,
    ) -> Result<(), StoreError> {
        self.put_both(records, [])
    }

    /// Writes task records and copies in one durable transaction.
    pub fn put_both<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a TaskRecord>,
        copies: impl IntoIterator<Item = &'a TaskRecord>,
    ) -> Result<(), StoreError> {
        let encode = |rs: Vec<&TaskRecord>| -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            rs.into_iter()
                .map(|r| Ok((r.id.to_string(), wire::encode(r)?)))
                .collect()
        };
        let records = encode(records.into_iter().collect())?;
        let copies = encode(copies.into_iter().collect())?;
        self.write(|tx| {
            for (kind, rows) in [(Kind::Task, &records), (Kind::Copy, &copies)] {
                if rows.is_empty() {
                    continue;
                }
                let mut table = tx.open_table(kind.table())?;
                for (id, bytes) in rows {
                    table.insert(id.as_str(), bytes.as_slice())?;
                }
            }
            Ok(())
        })
    }

    pub fn put(&mut self, record: &TaskRecord) -> Result<(), StoreError> {
        self.put_all([record])
    }

    /// Stores the copy of a task another agent runs.
    pub fn put_copy(&mut self, record: &TaskRecord) -> Result<(), StoreError> {
        self.put_both([], [record])
    }

    /// Forgets a task (it moved to another node).
    pub fn delete(&mut self, id: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.open_table(TASKS)?.remove(id)?;
            Ok(())
        })
    }

    /// Forgets finished tasks and finished copies (retention), in one
    /// durable transaction.
    pub fn forget(&mut self, tasks: &[TaskId], copies: &[TaskId]) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut table = tx.open_table(TASKS)?;
            for id in tasks {
                table.remove(id.as_str())?;
            }
            let mut table = tx.open_table(COPIES)?;
            for id in copies {
                table.remove(id.as_str())?;
            }
            Ok(())
        })
    }

    /// Every stored record and copy. One that does not decode is moved to
    /// the set-aside directory (with a warning) and named in
    /// `set_aside`, with those set aside at earlier starts. Failing to read
    /// the store (or the set-aside directory) at all is an error.
    pub fn load(&mut self) -> Result<Loaded, StoreError> {
        let (records, bad_tasks) = self.read_table(Kind::Task)?;
        let (copies, bad_copies) = self.read_table(Kind::Copy)?;
        let mut not_moved = Vec::new();
        for (kind, bad) in [(Kind::Task, bad_tasks), (Kind::Copy, bad_copies)] {
            for (key, bytes) in bad {
                if !self.set_aside(kind, &key, &bytes) && kind == Kind::Task {
                    not_moved.push(key);
                }
            }
        }
        let mut set_aside = self.set_aside_tasks()?;
        set_aside.extend(not_moved);
        set_aside.sort();
        set_aside.dedup();
        Ok(Loaded {
            records,
            copies,
            set_aside,
        })
    }

    /// A table's records that decode, and the keys and bytes of those that
    /// do not.
    #[allow(clippy::type_complexity)]
    fn read_table(
        &self,
        kind: Kind,
    ) -> Result<(Vec<TaskRecord>, Vec<(String, Vec<u8>)>), StoreError> {
        let tx = self.db()?.begin_read().map_err(|e| self.read_err(e))?;
        let table = tx.open_table(kind.table()).map_err(|e| self.read_err(e))?;
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for item in table.iter().map_err(|e| self.read_err(e))? {
            let (k, v) = item.map_err(|e| self.read_err(e))?;
            match wire::decode::<TaskRecord>(v.value()) {
                Ok(r) => good.push(r),
                Err(_) => bad.push((k.value().to_owned(), v.value().to_vec())),
            }
        }
        Ok((good, bad))
    }

    /// Moves a record that does not decode out of its table, into
    /// `set-aside/<kind>.<key>.record`; false if it stays in the store
    /// (in memory, or the file cannot be written), still unreadable.
    fn set_aside(&mut self, kind: Kind, key: &str, bytes: &[u8]) -> bool {
        let Some(on_disk) = &self.on_disk else {
            return false;
        };
        let dir = on_disk.dir.join(SET_ASIDE);
        let file = dir.join(format!("{}.{}.record", kind.name(), file_key(key)));
        let moved = std::fs::create_dir_all(&dir)
            .and_then(|()| on_disk.disk.write_file(&file, bytes))
            .map_err(|e| e.to_string())
            .and_then(|()| {
                let table = kind.table();
                self.write(|tx| {
                    tx.open_table(table)?.remove(key)?;
                    Ok(())
                })
                .map_err(|e| e.to_string())
            });
        let done = moved.is_ok();
        match moved {
            Ok(()) => warn!(
                kind = kind.name(),
                task_id = key,
                file = %file.display(),
                "stored record does not decode: moved aside; its containers are left alone until the file is removed"
            ),
            Err(error) => warn!(
                kind = kind.name(),
                task_id = key,
                error,
                "stored record does not decode and cannot be moved aside; left in the store, its containers are left alone"
            ),
        }
        done
    }

    /// The tasks whose records are in the set-aside directory.
    fn set_aside_tasks(&self) -> Result<Vec<String>, StoreError> {
        let Some(on_disk) = &self.on_disk else {
            return Ok(Vec::new());
        };
        let dir = on_disk.dir.join(SET_ASIDE);
        let err = |source| StoreError::SetAside {
            path: dir.display().to_string(),
            source,
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(err(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let name = entry.map_err(err)?.file_name();
            let name = name.to_string_lossy();
            if let Some(key) = name
                .strip_prefix("task.")
                .and_then(|n| n.strip_suffix(".record"))
            {
                out.push(key.to_owned());
            }
        }
        out.sort();
        Ok(out)
    }
}

impl OnDisk {
    fn file(&self) -> PathBuf {
        self.dir.join("tasks.redb")
    }

    fn open_db(&self) -> Result<Database, StoreError> {
        let path = self.file();
        let open = |e: redb::Error| StoreError::Open {
            path: path.display().to_string(),
            source: e,
        };
        let file = backend::FaultyFile::open(path.clone(), self.disk.clone())
            .map_err(|e| open(e.into()))?;
        Database::builder()
            .create_with_backend(file)
            .map_err(|e| open(e.into()))
    }
}

/// A key as a file name: a task id as it is (ids are safe names), any
/// other key in hex.
fn file_key(key: &str) -> String {
    match TaskId::new(key) {
        Ok(id) => id.to_string(),
        Err(_) => key.bytes().map(|b| format!("{b:02x}")).collect(),
    }
}

#[cfg(test)]
mod tests;
