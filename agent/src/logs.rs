//! Kept output of finished attempts. A container is removed when it ends, so
//! its output is copied first to `<data-dir>/logs/<task>.<attempt>.log`.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use mesh_protocol::TaskId;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use crate::runtime::{LogStream, RuntimeError};

#[derive(Debug, Clone)]
pub struct LogDir {
    dir: PathBuf,
}

impl LogDir {
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    pub fn path(&self, task: &TaskId, attempt: u32) -> PathBuf {
        self.dir.join(format!("{task}.{attempt}.log"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Copies a finished container's output to the attempt's file (written
    /// to a temporary name, then renamed, so a reader never sees half).
    pub async fn save(
        &self,
        task: &TaskId,
        attempt: u32,
        mut output: LogStream,
    ) -> Result<(), String> {
        let path = self.path(task, attempt);
        let tmp = path.with_extension("log.part");
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| format!("create {}: {e}", tmp.display()))?;
        while let Some(chunk) = output.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("write {}: {e}", tmp.display()))?;
        }
        file.flush().await.map_err(|e| e.to_string())?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| format!("rename {}: {e}", path.display()))
    }

    /// The saved output of an attempt, or `None` if none was kept.
    pub async fn open(&self, task: &TaskId, attempt: u32) -> Option<LogStream> {
        let file = tokio::fs::File::open(self.path(task, attempt)).await.ok()?;
        Some(
            ReaderStream::new(file)
                .map_ok(Bytes::from)
                .map_err(|e| RuntimeError::Rejected(format!("reading saved log: {e}")))
                .boxed(),
        )
    }
}
