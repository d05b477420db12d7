//! An in-memory runtime for fast tests of the supervisor's logic. Containers
//! "run" their command: `exit N` ends at once with code N, `print TEXT` writes
//! TEXT and ends with 0, anything else runs until killed or `finish`ed. The
//! image `missing` is refused like an unknown image; `set_available(false)`
//! behaves like a Docker daemon that went away.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::{ContainerInfo, ContainerRuntime, ContainerSpec, LogStream, RuntimeError};

#[derive(Debug)]
struct Fake {
    info: ContainerInfo,
    output: Vec<u8>,
    exit: watch::Sender<Option<i64>>,
}

/// See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct MemoryRuntime {
    containers: Arc<Mutex<HashMap<String, Fake>>>,
    down: Arc<AtomicBool>,
    next: Arc<AtomicU64>,
    started: Arc<AtomicU64>,
}

impl MemoryRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Fake>> {
        // A poisoned lock only means a test thread panicked; the map is intact.
        self.containers
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn check(&self) -> Result<(), RuntimeError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(RuntimeError::Unavailable {
                endpoint: self.endpoint(),
                cause: "in-memory runtime set unavailable".into(),
            });
        }
        Ok(())
    }

    pub fn set_available(&self, up: bool) {
        self.down.store(!up, Ordering::SeqCst);
    }

    /// Ends a running container with `code`.
    pub fn finish(&self, id: &str, code: i64) {
        if let Some(c) = self.lock().get_mut(id) {
            c.info.running = false;
            c.info.exit_code = Some(code);
            c.exit.send_replace(Some(code));
        }
    }

    /// Drops a container without a trace, as `docker rm -f` by hand would.
    pub fn vanish(&self, id: &str) {
        if let Some(c) = self.lock().remove(id) {
            c.exit.send_replace(Some(137));
        }
    }

    pub fn containers(&self) -> Vec<ContainerInfo> {
        self.lock().values().map(|c| c.info.clone()).collect()
    }

    /// How many containers were ever started.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// Adds a container as if it had been left by an earlier agent.
    pub fn insert(&self, info: ContainerInfo) {
        let (exit, _) = watch::channel(info.exit_code);
        self.lock().insert(
            info.id.clone(),
            Fake {
                info,
                output: Vec::new(),
                exit,
            },
        );
    }
}

impl ContainerRuntime for MemoryRuntime {
    fn endpoint(&self) -> String {
        "memory://".into()
    }

    async fn ping(&self) -> Result<String, RuntimeError> {
        self.check()?;
        Ok("memory".into())
    }

    async fn run(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.check()?;
        if spec.image == "missing" {
            return Err(RuntimeError::Rejected(format!(
                "No such image: {}",
                spec.image
            )));
        }
        let mut map = self.lock();
        if map.values().any(|c| c.info.name == spec.name) {
            return Err(RuntimeError::Rejected(format!(
                "Conflict. The container name {:?} is already in use",
                spec.name
            )));
        }
        let id = format!("mem{}", self.next.fetch_add(1, Ordering::SeqCst));
        let words: Vec<&str> = spec.command.iter().map(String::as_str).collect();
        let (exit_code, output) = match words.as_slice() {
            ["exit", n] => (Some(n.parse().unwrap_or(1)), Vec::new()),
            ["print", text] => (Some(0), format!("{text}\n").into_bytes()),
            _ => (None, Vec::new()),
        };
        let (exit, _) = watch::channel(exit_code);
        map.insert(
            id.clone(),
            Fake {
                info: ContainerInfo {
                    id: id.clone(),
                    name: spec.name.clone(),
                    labels: spec.labels.clone(),
                    running: exit_code.is_none(),
                    never_started: false,
                    exit_code,
                    cpuset_cpus: Some(spec.cpuset_cpus.to_string()),
                    cpuset_mems: Some(spec.cpuset_mems.to_string()),
                    address: None,
                },
                output,
                exit,
            },
        );
        self.started.fetch_add(1, Ordering::SeqCst);
        Ok(id)
    }

    async fn wait(&self, id: &str) -> Result<i64, RuntimeError> {
        self.check()?;
        let mut rx = match self.lock().get(id) {
            Some(c) => c.exit.subscribe(),
            None => return Err(RuntimeError::NotFound(id.to_owned())),
        };
        loop {
            if let Some(code) = *rx.borrow_and_update() {
                return Ok(code);
            }
            if rx.changed().await.is_err() {
                return Err(RuntimeError::NotFound(id.to_owned()));
            }
        }
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        self.check()?;
        self.lock()
            .get(id)
            .map(|c| c.info.clone())
            .ok_or_else(|| RuntimeError::NotFound(id.to_owned()))
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerInfo>, RuntimeError> {
        self.check()?;
        Ok(self
            .lock()
            .values()
            .filter(|c| {
                labels
                    .iter()
                    .all(|(k, v)| c.info.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|c| c.info.clone())
            .collect())
    }

    async fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        self.check()?;
        let running = self.lock().get(id).is_some_and(|c| c.info.running);
        if running {
            self.finish(id, 137);
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.check()?;
        self.vanish(id);
        Ok(())
    }

    fn logs(&self, id: &str, _follow: bool) -> LogStream {
        let result = match self.lock().get(id) {
            Some(c) => Ok(Bytes::from(c.output.clone())),
            None => Err(RuntimeError::NotFound(id.to_owned())),
        };
        futures_util::stream::iter([result]).boxed()
    }
}

/// Labels as a map, for tests building `ContainerInfo`s.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
