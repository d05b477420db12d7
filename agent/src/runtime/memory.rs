//! An in-memory runtime for fast tests of the supervisor's and the services'
//! logic. Containers "run" their command: `exit N` ends at once with code N,
//! `print TEXT` writes TEXT and ends with 0, `echo [--port P]` echoes every
//! byte of each connection to port P (default 8080) of its address, as the
//! test service does; anything else runs until killed or `finish`ed. A
//! running container has an address of its own on the loopback network
//! (127.220.0.0 and up), so connecting to a container works as on Docker.
//! The image `missing` is refused like an unknown image;
//! `set_available(false)` behaves like a Docker daemon that went away;
//! `hold_starts(true)` keeps every `run` waiting (a start in flight) until
//! `hold_starts(false)`.
//! Images named `registry.test/...` are in a registry, not on the host,
//! until pulled or `load_image`d (`registry.test/nosuch...` is not in it
//! either); every other image is on the host. `list_images` lists the
//! `registry.test` images on the host (the others are too many to list).
//! The image list for GC (`image_usage`) shows the pulled ones (each
//! [`DEFAULT_IMAGE_BYTES`] unless `set_image_size`) and those added with
//! `add_image`; removing one a container was created from is refused, as
//! Docker does. An image's id is a hash of its name; its tarball (`save`)
//! is `MEMIMAGE <id>`, which `load` accepts alone. Every change to the
//! images (pull, load, tag, removal, and the test's own `load_image`,
//! `add_image`) is a notice on each `image_events` stream, as Docker's
//! events are; `set_available(false)` ends those streams.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;

use mesh_protocol::image::{
    HostImage, ImageRef, ListedImage, PullFailure, PullProgress, canonical,
};
use mesh_protocol::rpc::HeldImage;

mod echo;
mod events;

use super::{
    ContainerInfo, ContainerRuntime, ContainerSpec, Credentials, ImageEvents, LogStream, PullError,
    RemoveImageError, RuntimeError, TarStream,
};
use echo::{echo_server, next_address};

/// What an in-memory image's tarball starts with.
const TARBALL: &[u8] = b"MEMIMAGE ";

/// The id the in-memory runtime gives the image `name`.
pub fn image_id_of(name: &str) -> String {
    let name = ImageRef::parse(name).map_or(name.to_owned(), |n| n.to_string());
    let h = mesh_protocol::load::fnv1a(&[name.as_bytes()]);
    format!("sha256:{h:016x}{:048}", 0)
}

#[derive(Debug)]
struct Fake {
    info: ContainerInfo,
    /// The image it was created from, canonical.
    image: String,
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
    pulled: Arc<Mutex<BTreeSet<String>>>,
    /// Images listed besides the pulled ones (`add_image`), with sizes.
    local: Arc<Mutex<BTreeMap<String, u64>>>,
    /// Sizes of pulled images other than the default.
    sizes: Arc<Mutex<BTreeMap<String, u64>>>,
    /// While set, every image removal is refused with this reason.
    refuse_removals: Arc<Mutex<Option<String>>>,
    pulls: Arc<AtomicU64>,
    /// Image ids this runtime holds by id (seen, or loaded).
    ids: Arc<Mutex<BTreeSet<String>>>,
    /// Names given by `tag`, to the id they name.
    tags: Arc<Mutex<BTreeMap<String, String>>>,
    loads: Arc<AtomicU64>,
    /// The next pull fails as unreachable, with this reason.
    pull_fault: Arc<Mutex<Option<String>>>,
    /// Whether `pull_fault` stays for every pull (until `heal_pulls`).
    pull_fault_stays: Arc<AtomicBool>,
    /// While true, `run` waits before it creates anything.
    held: Arc<watch::Sender<bool>>,
    /// The image event streams open.
    notices: Arc<events::Notices>,
}

/// The in-memory registry's host part.
pub const TEST_REGISTRY: &str = "registry.test";

/// The size of a pulled image unless `set_image_size` says otherwise.
pub const DEFAULT_IMAGE_BYTES: u64 = 1 << 20;

/// A poisoned lock only means a test thread panicked; the data is intact.
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poison| poison.into_inner())
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

    /// While `held`, starts wait in flight, as a slow Docker's would.
    pub fn hold_starts(&self, held: bool) {
        self.held.send_replace(held);
    }

    pub fn set_available(&self, up: bool) {
        self.down.store(!up, Ordering::SeqCst);
        if !up {
            self.notices.cut();
        }
    }

    /// Ends a running container with `code`.
    pub fn finish(&self, id: &str, code: i64) {
        if let Some(c) = self.lock().get_mut(id) {
            c.info.running = false;
            c.info.exit_code = Some(code);
            c.info.address = None;
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

    /// Makes the next pull fail as if the registry were unreachable.
    pub fn fail_next_pull(&self, why: &str) {
        *self
            .pull_fault
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Some(why.to_owned());
    }

    /// Makes every pull fail as if the registry were unreachable, until
    /// `heal_pulls`.
    pub fn fail_pulls(&self, why: &str) {
        self.pull_fault_stays.store(true, Ordering::SeqCst);
        self.fail_next_pull(why);
    }

    pub fn heal_pulls(&self) {
        self.pull_fault_stays.store(false, Ordering::SeqCst);
        *self
            .pull_fault
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = None;
    }

    /// Puts `image` on the host without a pull, as `docker load` would.
    pub fn load_image(&self, image: &str) {
        if let Ok(name) = ImageRef::parse(image) {
            self.pulled().insert(name.to_string());
            self.notices.changed();
        }
    }

    /// How many pulls were made.
    pub fn pulls(&self) -> u64 {
        self.pulls.load(Ordering::SeqCst)
    }

    fn pulled(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.pulled
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The image `name` is on the host as if built or loaded there (not
    /// pulled by any agent), taking `size` bytes.
    pub fn add_image(&self, name: &str, size: u64) {
        locked(&self.local).insert(canonical(name), size);
        self.notices.changed();
    }

    /// A pull of `name` brings `size` bytes.
    pub fn set_image_size(&self, name: &str, size: u64) {
        locked(&self.sizes).insert(canonical(name), size);
    }

    /// While `why` is set, image removals are refused as Docker refuses
    /// one a container it did not list uses.
    pub fn refuse_removals(&self, why: Option<&str>) {
        *locked(&self.refuse_removals) = why.map(str::to_owned);
    }

    /// The canonical names of the images on the host's list.
    pub fn images(&self) -> BTreeSet<String> {
        let mut all: BTreeSet<String> = self.pulled().iter().map(|n| canonical(n)).collect();
        all.extend(locked(&self.local).keys().cloned());
        all
    }

    fn ids(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.ids.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Puts `image` on this host, as a pull of it would.
    pub fn set_pulled_for_tests(&self, image: &str) {
        if let Ok(name) = ImageRef::parse(image) {
            self.pulled().insert(name.to_string());
            self.notices.changed();
        }
    }

    fn tags(&self) -> MutexGuard<'_, BTreeMap<String, String>> {
        self.tags
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// How many tarballs were loaded.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::SeqCst)
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
                image: String::new(),
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

    async fn has_image(&self, image: &str) -> Result<bool, RuntimeError> {
        self.check()?;
        let Ok(name) = ImageRef::parse(image) else {
            return Ok(false);
        };
        let in_registry = name.registry == TEST_REGISTRY;
        Ok(image != "missing" && (!in_registry || self.pulled().contains(&name.to_string())))
    }

    async fn list_images(&self) -> Result<Vec<ListedImage>, RuntimeError> {
        self.check()?;
        Ok(self
            .pulled()
            .iter()
            .map(|name| ListedImage {
                // A stable id per name, as Docker's is per content.
                id: image_id_of(name),
                repo_tags: vec![name.clone()],
                repo_digests: Vec::new(),
            })
            .collect())
    }

    async fn image_events(&self) -> Result<ImageEvents, RuntimeError> {
        self.check()?;
        Ok(self.notices.watch())
    }

    async fn pull(
        &self,
        image: &ImageRef,
        _auth: Option<Credentials>,
        progress: &watch::Sender<PullProgress>,
    ) -> Result<(), PullError> {
        self.check()?;
        self.pulls.fetch_add(1, Ordering::SeqCst);
        let fault = {
            let mut fault = self
                .pull_fault
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            if self.pull_fault_stays.load(Ordering::SeqCst) {
                fault.clone()
            } else {
                fault.take()
            }
        };
        if let Some(why) = fault {
            return Err(PullFailure::Unreachable(why).into());
        }
        if image.registry != TEST_REGISTRY || image.repository.starts_with("nosuch") {
            return Err(PullFailure::NotFound(format!("manifest for {image} not found")).into());
        }
        progress.send_replace(PullProgress {
            layers_done: 1,
            layers: 1,
            bytes_done: 1,
            bytes: 1,
        });
        self.pulled().insert(image.to_string());
        self.notices.changed();
        Ok(())
    }

    async fn image_id(&self, image: &str) -> Result<Option<HeldImage>, RuntimeError> {
        self.check()?;
        if image.starts_with("sha256:") {
            let held = self.ids().contains(image);
            return Ok(held.then(|| HeldImage {
                id: image.to_owned(),
                size: 1024,
            }));
        }
        if !self.has_image(image).await? {
            return Ok(None);
        }
        let tagged = ImageRef::parse(image)
            .ok()
            .and_then(|n| self.tags().get(&n.to_string()).cloned());
        let id = tagged.unwrap_or_else(|| image_id_of(image));
        self.ids().insert(id.clone());
        Ok(Some(HeldImage { id, size: 1024 }))
    }

    fn save(&self, id: &str) -> TarStream {
        let chunks = if self.ids().contains(id) {
            vec![
                Ok(Bytes::from_static(TARBALL)),
                Ok(Bytes::from(id.to_owned())),
            ]
        } else {
            vec![Err(std::io::Error::other(format!("no such image {id}")))]
        };
        futures_util::stream::iter(chunks).boxed()
    }

    async fn load(&self, mut tar: TarStream) -> Result<Vec<String>, RuntimeError> {
        self.check()?;
        let mut all = Vec::new();
        while let Some(chunk) = tar.next().await {
            let chunk = chunk.map_err(|e| RuntimeError::Rejected(format!("docker load: {e}")))?;
            all.extend_from_slice(&chunk);
        }
        let id = all
            .strip_prefix(TARBALL)
            .and_then(|id| std::str::from_utf8(id).ok())
            .ok_or_else(|| RuntimeError::Rejected("docker load: invalid tar header".into()))?
            .to_owned();
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.ids().insert(id.clone());
        self.notices.changed();
        Ok(vec![id])
    }

    async fn tag(&self, id: &str, name: &ImageRef) -> Result<(), RuntimeError> {
        self.check()?;
        if !self.ids().contains(id) {
            return Err(RuntimeError::Rejected(format!("No such image: {id}")));
        }
        self.pulled().insert(name.to_string());
        self.tags().insert(name.to_string(), id.to_owned());
        self.notices.changed();
        Ok(())
    }

    async fn run(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let mut held = self.held.subscribe();
        // The sender lives as long as `self`: `wait_for` cannot fail here.
        let _ = held.wait_for(|h| !*h).await;
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
        let port = match words.as_slice() {
            ["echo"] => Some(8080),
            ["echo", "--port", p] => Some(p.parse().unwrap_or(8080)),
            _ => None,
        };
        let (exit, _) = watch::channel(exit_code);
        let address = match (exit_code, port) {
            (Some(_), _) => None,
            (None, None) => Some(next_address()),
            (None, Some(port)) => Some(echo_server(port, exit.subscribe())?),
        };
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
                    address,
                },
                image: canonical(&spec.image),
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

    async fn image_usage(&self) -> Result<Vec<HostImage>, RuntimeError> {
        self.check()?;
        let sizes = locked(&self.sizes).clone();
        let local = locked(&self.local).clone();
        let users: Vec<String> = self.lock().values().map(|c| c.image.clone()).collect();
        Ok(self
            .images()
            .into_iter()
            .map(|name| HostImage {
                id: image_id_of(&name),
                digests: vec![],
                size: local
                    .get(&name)
                    .or(sizes.get(&name))
                    .copied()
                    .unwrap_or(DEFAULT_IMAGE_BYTES),
                containers: users.iter().filter(|u| **u == name).count() as u32,
                tags: vec![name],
            })
            .collect())
    }

    async fn remove_image(&self, reference: &str) -> Result<(), RemoveImageError> {
        self.check()?;
        let Some(name) = self
            .images()
            .into_iter()
            .find(|n| *n == canonical(reference) || image_id_of(n) == reference)
        else {
            return Ok(());
        };
        if let Some(why) = locked(&self.refuse_removals).clone() {
            return Err(RemoveImageError::Conflict(why));
        }
        if let Some(c) = self.lock().values().find(|c| c.image == name) {
            return Err(RemoveImageError::Conflict(format!(
                "conflict: unable to remove repository reference \"{reference}\" (must force) - container {} is using its referenced image",
                c.info.id
            )));
        }
        self.pulled().retain(|n| canonical(n) != name);
        locked(&self.local).remove(&name);
        self.notices.changed();
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
