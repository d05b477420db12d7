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
    ) -> Result<(), SaveError> {
        let path = self.path(task, attempt);
        let tmp = path.with_extension("log.part");
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SaveError::Io { path, source }
        };
        let mut file = tokio::fs::File::create(&tmp).await.map_err(io(&tmp))?;
        while let Some(chunk) = output.next().await {
            file.write_all(&chunk?).await.map_err(io(&tmp))?;
        }
        file.flush().await.map_err(io(&tmp))?;
        tokio::fs::rename(&tmp, &path).await.map_err(io(&path))
    }

    /// The saved output of an attempt, or `None` if none was kept.
    /// (`live_then_kept` continues a live stream with it.)
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

/// Why a container's output was not kept.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("cannot read the container's output: {0}")]
    Read(#[from] RuntimeError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where `live_then_kept` is.
enum Follow {
    /// Reading the container; bytes sent so far.
    Live(LogStream, u64, LogDir, TaskId, u32),
    /// Reading the kept copy; bytes still to skip.
    Kept(LogStream, u64),
}

/// A container's live output; if it breaks off (the container ended and was
/// removed while being read), the rest comes from the attempt's kept copy,
/// skipping what was already sent, so a follower sees the whole output once.
pub fn live_then_kept(live: LogStream, dir: LogDir, task: TaskId, attempt: u32) -> LogStream {
    futures_util::stream::unfold(
        Follow::Live(live, 0, dir, task, attempt),
        |state| async move {
            match state {
                Follow::Live(mut s, sent, dir, task, attempt) => match s.next().await {
                    Some(Ok(chunk)) => {
                        let sent = sent + chunk.len() as u64;
                        Some((Ok(chunk), Follow::Live(s, sent, dir, task, attempt)))
                    }
                    // Broken off, or ended: whatever the kept copy has beyond
                    // what was sent follows (nothing, when the stream was whole).
                    Some(Err(_)) | None => next_kept(dir.open(&task, attempt).await?, sent).await,
                },
                Follow::Kept(s, skip) => next_kept(s, skip).await,
            }
        },
    )
    .boxed()
}

/// The next chunk of a kept copy past the first `skip` bytes.
async fn next_kept(
    mut s: LogStream,
    mut skip: u64,
) -> Option<(Result<Bytes, RuntimeError>, Follow)> {
    loop {
        let chunk = match s.next().await? {
            Ok(c) => c,
            Err(e) => {
                return Some((
                    Err(e),
                    Follow::Kept(futures_util::stream::empty().boxed(), 0),
                ));
            }
        };
        let len = chunk.len() as u64;
        if skip >= len {
            skip -= len;
            continue;
        }
        let rest = chunk.slice(skip as usize..);
        return Some((Ok(rest), Follow::Kept(s, 0)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_broken_live_stream_continues_from_the_kept_copy() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogDir::new(dir.path().to_owned()).unwrap();
        let task = TaskId::new("t1").unwrap();
        let full =
            futures_util::stream::iter([Ok(Bytes::from_static(b"one\ntwo\nthree\n"))]).boxed();
        logs.save(&task, 1, full).await.unwrap();
        let live = futures_util::stream::iter([
            Ok(Bytes::from_static(b"one\ntw")),
            Err(RuntimeError::NotFound("c".into())),
        ])
        .boxed();
        let out: Vec<Bytes> = live_then_kept(live, logs, task, 1)
            .map(|c| c.unwrap())
            .collect()
            .await;
        assert_eq!(out.concat(), b"one\ntwo\nthree\n");
    }
}
