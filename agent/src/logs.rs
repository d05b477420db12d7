//! Kept output of finished attempts. A container is removed when it ends, so
//! its output is copied first to `<data-dir>/logs/<task>.<attempt>.log`,
//! at most `--max-log-bytes` of it: the tail, after a first line that says
//! how much was dropped (`[meshd: N bytes of output dropped …]`). The
//! file is finished through `Disk::commit` (fsynced, renamed, directory
//! fsynced), so a kept copy survives a crash whole.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use mesh_protocol::TaskId;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use crate::disk::Disk;
use crate::runtime::{LogStream, RuntimeError};

/// The start of the first line of a kept log whose head was dropped.
const DROPPED: &str = "[meshd: ";
/// The default `--max-log-bytes`: 16 MiB per attempt.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone)]
pub struct LogDir {
    dir: PathBuf,
    /// Most bytes of an attempt's output kept (the tail).
    max: u64,
    disk: Disk,
}

/// What was kept of an attempt's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    pub bytes: u64,
    pub dropped: u64,
}

impl LogDir {
    pub fn new(dir: PathBuf, max: u64, disk: Disk) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            max: max.max(1),
            disk,
        })
    }

    pub fn path(&self, task: &TaskId, attempt: u32) -> PathBuf {
        self.dir.join(format!("{task}.{attempt}.log"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Copies a finished container's output to the attempt's file (written
    /// to a temporary name, then fsynced and renamed, so a reader never
    /// sees half and a crash keeps it),
    /// keeping its last `max` bytes. While copying, the output goes into
    /// two alternating segment files of at most `max` bytes each, so the
    /// disk never holds more than about three times `max` for it.
    pub async fn save(
        &self,
        task: &TaskId,
        attempt: u32,
        output: LogStream,
    ) -> Result<Kept, SaveError> {
        let path = self.path(task, attempt);
        let segments = [
            path.with_extension("log.seg0"),
            path.with_extension("log.seg1"),
        ];
        let result = self.save_via(&path, &segments, output).await;
        for seg in &segments {
            let _ = tokio::fs::remove_file(seg).await;
        }
        if result.is_err() {
            let _ = tokio::fs::remove_file(path.with_extension("log.part")).await;
        }
        result
    }

    async fn save_via(
        &self,
        path: &Path,
        segments: &[PathBuf; 2],
        mut output: LogStream,
    ) -> Result<Kept, SaveError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SaveError::Io { path, source }
        };
        // The segment being written (index into `segments`), its length,
        // and whether the other one holds the `max` bytes before it.
        let mut cur = 0usize;
        let mut len = 0u64;
        let mut full_before = false;
        let mut total = 0u64;
        let mut file = tokio::fs::File::create(&segments[cur])
            .await
            .map_err(io(&segments[cur]))?;
        while let Some(chunk) = output.next().await {
            let mut chunk = chunk?;
            total += chunk.len() as u64;
            while !chunk.is_empty() {
                if len == self.max {
                    file.flush().await.map_err(io(&segments[cur]))?;
                    cur = 1 - cur;
                    file = tokio::fs::File::create(&segments[cur])
                        .await
                        .map_err(io(&segments[cur]))?;
                    len = 0;
                    full_before = true;
                }
                let n = chunk.len().min((self.max - len) as usize);
                let part = chunk.split_to(n);
                file.write_all(&part).await.map_err(io(&segments[cur]))?;
                len += n as u64;
            }
        }
        file.flush().await.map_err(io(&segments[cur]))?;
        drop(file);
        // The tail: the end of the full segment before, then this one.
        let kept = total.min(self.max);
        let dropped = total - kept;
        let tmp = path.with_extension("log.part");
        let mut out = tokio::fs::File::create(&tmp).await.map_err(io(&tmp))?;
        if dropped > 0 {
            let line = format!(
                "{DROPPED}{dropped} bytes of output dropped before this point (--max-log-bytes {}); the last {kept} bytes follow]\n",
                self.max
            );
            out.write_all(line.as_bytes()).await.map_err(io(&tmp))?;
        }
        if full_before {
            let before = &segments[1 - cur];
            let mut f = tokio::fs::File::open(before).await.map_err(io(before))?;
            f.seek(SeekFrom::Start(len)).await.map_err(io(before))?;
            tokio::io::copy(&mut f, &mut out)
                .await
                .map_err(io(before))?;
        }
        let mut f = tokio::fs::File::open(&segments[cur])
            .await
            .map_err(io(&segments[cur]))?;
        tokio::io::copy(&mut f, &mut out).await.map_err(io(&tmp))?;
        out.flush().await.map_err(io(&tmp))?;
        let out = out.into_std().await;
        let (disk, at) = (self.disk.clone(), path.to_owned());
        tokio::task::spawn_blocking(move || disk.commit(out, &tmp, &at))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(io(path))?;
        Ok(Kept {
            bytes: kept,
            dropped,
        })
    }

    /// The saved output of an attempt, or `None` if none was kept.
    pub async fn open(&self, task: &TaskId, attempt: u32) -> Option<LogStream> {
        self.open_from(task, attempt, 0).await
    }

    /// The saved output of an attempt from byte `offset` of the original
    /// output on (`live_then_kept` continues a live stream with it). When
    /// that part was dropped, the whole kept copy, whose first line says so.
    async fn open_from(&self, task: &TaskId, attempt: u32, offset: u64) -> Option<LogStream> {
        let mut file = tokio::fs::File::open(self.path(task, attempt)).await.ok()?;
        let mut head = vec![0u8; 256];
        let n = file.read(&mut head).await.ok()?;
        head.truncate(n);
        let skip = match dropped_header(&head) {
            None => offset,
            Some((header, dropped)) if offset >= dropped => header + (offset - dropped),
            Some(_) => 0,
        };
        file.seek(SeekFrom::Start(skip)).await.ok()?;
        Some(
            ReaderStream::new(file)
                .map_ok(Bytes::from)
                .map_err(|e| RuntimeError::Rejected(format!("reading saved log: {e}")))
                .boxed(),
        )
    }
}

/// The task a file of the log dir belongs to: `<task>.<attempt>.log`, or
/// one of its temporary files (`.log.part`, `.log.seg0`, `.log.seg1`).
pub fn task_of(file: &str) -> Option<TaskId> {
    let stem = match file.rsplit_once(".log") {
        Some((stem, "" | ".part" | ".seg0" | ".seg1")) => stem,
        _ => return None,
    };
    let (task, attempt) = stem.rsplit_once('.')?;
    attempt.parse::<u32>().ok()?;
    TaskId::new(task).ok()
}

/// The length of a kept log's first line saying its head was dropped, and
/// how many bytes were dropped; `None` for a log kept whole.
fn dropped_header(head: &[u8]) -> Option<(u64, u64)> {
    let rest = head.strip_prefix(DROPPED.as_bytes())?;
    let line_end = head.iter().position(|&b| b == b'\n')? as u64 + 1;
    let digits: Vec<u8> = rest
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    let dropped = std::str::from_utf8(&digits).ok()?.parse().ok()?;
    Some((line_end, dropped))
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
    /// Reading the kept copy.
    Kept(LogStream),
}

/// A container's live output; if it breaks off (the container ended and was
/// removed while being read), the rest comes from the attempt's kept copy,
/// from where the live stream stopped, so a follower sees the whole output
/// once (or, if the kept copy lost that part to `--max-log-bytes`, the line
/// saying so and the tail).
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
                    Some(Err(_)) | None => {
                        next_kept(dir.open_from(&task, attempt, sent).await?).await
                    }
                },
                Follow::Kept(s) => next_kept(s).await,
            }
        },
    )
    .boxed()
}

/// The next chunk of a kept copy.
async fn next_kept(mut s: LogStream) -> Option<(Result<Bytes, RuntimeError>, Follow)> {
    match s.next().await? {
        Ok(c) => Some((Ok(c), Follow::Kept(s))),
        Err(e) => Some((Err(e), Follow::Kept(futures_util::stream::empty().boxed()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_broken_live_stream_continues_from_the_kept_copy() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogDir::new(dir.path().to_owned(), DEFAULT_MAX_LOG_BYTES, Disk::real()).unwrap();
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

    async fn read_all(s: LogStream) -> Vec<u8> {
        s.map(|c| c.unwrap()).collect::<Vec<_>>().await.concat()
    }

    fn chunks(data: &[u8], size: usize) -> LogStream {
        let v: Vec<_> = data
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures_util::stream::iter(v).boxed()
    }

    #[tokio::test]
    async fn output_past_the_cap_keeps_its_tail_and_says_how_much_was_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogDir::new(dir.path().to_owned(), 100, Disk::real()).unwrap();
        let task = TaskId::new("t1").unwrap();
        let output: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        // In chunks that straddle the segments, and in one large chunk.
        for (attempt, size) in [(1, 7), (2, 1000), (3, 100)] {
            let kept = logs
                .save(&task, attempt, chunks(&output, size))
                .await
                .unwrap();
            assert_eq!(
                kept,
                Kept {
                    bytes: 100,
                    dropped: 900
                }
            );
            let saved = read_all(logs.open(&task, attempt).await.unwrap()).await;
            let text = String::from_utf8_lossy(&saved);
            let first = text.lines().next().unwrap();
            assert!(
                first.starts_with("[meshd: 900 bytes of output dropped"),
                "{first}"
            );
            assert!(first.contains("--max-log-bytes 100"), "{first}");
            assert_eq!(&saved[first.len() + 1..], &output[900..], "the tail, whole");
        }
        // Under the cap: kept as it was, no line added.
        let kept = logs.save(&task, 4, chunks(&output[..60], 8)).await.unwrap();
        assert_eq!(
            kept,
            Kept {
                bytes: 60,
                dropped: 0
            }
        );
        assert_eq!(
            read_all(logs.open(&task, 4).await.unwrap()).await,
            &output[..60]
        );
        // No segment files are left behind.
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["t1.1.log", "t1.2.log", "t1.3.log", "t1.4.log"]);
    }

    /// A full disk: the save is an error naming the file, and neither a
    /// kept copy nor a temporary file is left.
    #[tokio::test]
    async fn a_save_that_cannot_be_written_is_an_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let faults = crate::disk::SimulatedFaults::new(".log");
        faults.set_full(true);
        let logs = LogDir::new(
            dir.path().to_owned(),
            DEFAULT_MAX_LOG_BYTES,
            Disk::with_faults(faults),
        )
        .unwrap();
        let task = TaskId::new("t1").unwrap();
        let e = logs
            .save(&task, 1, chunks(b"some output", 4))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("t1.1.log") && e.contains("No space left"), "{e}");
        assert!(logs.open(&task, 1).await.is_none());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn files_name_their_task() {
        let t = |f: &str| task_of(f).map(|t| t.to_string());
        assert_eq!(t("t1.2.log").as_deref(), Some("t1"));
        assert_eq!(t("a.b-c.10.log.seg1").as_deref(), Some("a.b-c"));
        assert_eq!(t("t1.2.log.part").as_deref(), Some("t1"));
        assert_eq!(t("t1.log"), None);
        assert_eq!(t("t1.x.log"), None);
        assert_eq!(t("notes.txt"), None);
    }

    #[tokio::test]
    async fn a_follower_cut_off_in_the_dropped_part_sees_the_line_and_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogDir::new(dir.path().to_owned(), 10, Disk::real()).unwrap();
        let task = TaskId::new("t1").unwrap();
        let output = b"0123456789abcdefghij".to_vec();
        logs.save(&task, 1, chunks(&output, 3)).await.unwrap();
        // Cut off after 15 bytes: within the tail, so it goes on from there.
        let live = futures_util::stream::iter([
            Ok(Bytes::copy_from_slice(&output[..15])),
            Err(RuntimeError::NotFound("c".into())),
        ])
        .boxed();
        let got = read_all(live_then_kept(live, logs.clone(), task.clone(), 1)).await;
        assert_eq!(got, output);
        // Cut off after 4 bytes: the dropped part is gone; the line says so.
        let live = futures_util::stream::iter([
            Ok(Bytes::copy_from_slice(&output[..4])),
            Err(RuntimeError::NotFound("c".into())),
        ])
        .boxed();
        let got = read_all(live_then_kept(live, logs, task, 1)).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("0123[meshd: 10 bytes"), "{text}");
        assert!(text.ends_with("abcdefghij"), "{text}");
    }
}
