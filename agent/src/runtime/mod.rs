//! The container runtime seam: everything the agent asks of Docker, as a
//! narrow trait with a real implementation (`docker`, over bollard) and an
//! in-memory one (`memory`) for fast tests of the supervisor's logic.

pub mod docker;
mod docker_events;
mod docker_gc;
mod docker_pull;
mod docker_share;
mod image_gc;
pub mod memory;
mod pull;

pub use image_gc::RemoveImageError;
pub use pull::{Credentials, PullError};

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use mesh_protocol::CpuSet;
use mesh_protocol::image::{HostImage, ImageRef, ListedImage, PullProgress};
use mesh_protocol::rpc::HeldImage;
use tokio::sync::watch;

/// A container to create and start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// Overrides the image's command when not empty.
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub cpuset_cpus: CpuSet,
    pub cpuset_mems: CpuSet,
    pub memory: Option<u64>,
    /// Docker network to attach to (None: Docker's default bridge).
    pub network: Option<String>,
}

/// What the runtime says about one of our containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    /// Created but never started (an agent died between create and start).
    pub never_started: bool,
    /// Set once it has exited.
    pub exit_code: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// Its address on its Docker network, while it runs (from `inspect`).
    pub address: Option<std::net::IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime cannot be reached; not the task's fault.
    #[error(
        "cannot reach Docker at {endpoint}: {cause}. Is dockerd running and is the socket readable? Set DOCKER_HOST to use another endpoint"
    )]
    Unavailable { endpoint: String, cause: String },
    /// The runtime refused the request (bad image, bad command, ...).
    #[error("Docker refused: {0}")]
    Rejected(String),
    #[error("no such container {0}")]
    NotFound(String),
}

impl RuntimeError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RuntimeError::Unavailable { .. })
    }
}

/// A stream of a container's output (stdout and stderr interleaved).
pub type LogStream = BoxStream<'static, Result<Bytes, RuntimeError>>;

/// The bytes of an image's tarball (`docker save`), as they come.
pub type TarStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// Notices that the host's images changed (pulled, loaded, tagged,
/// untagged, removed, by anyone), one or more per change. The stream errs or
/// ends when the runtime goes away; a new one must be asked for then.
pub type ImageEvents = BoxStream<'static, Result<(), RuntimeError>>;

/// What the agent needs from a container runtime.
pub trait ContainerRuntime: Send + Sync + 'static {
    /// What we connect to, for messages (`unix:///var/run/docker.sock`).
    fn endpoint(&self) -> String;

    /// Checks the runtime answers; returns its version.
    fn ping(&self) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    /// Creates and starts a container; returns its id. A container that was
    /// created but failed to start is removed before the error returns.
    fn run(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    /// Waits until the container stops; returns its exit code.
    fn wait(&self, id: &str) -> impl Future<Output = Result<i64, RuntimeError>> + Send;

    fn inspect(&self, id: &str)
    -> impl Future<Output = Result<ContainerInfo, RuntimeError>> + Send;

    /// Our containers, running or not, that carry all of `labels`.
    fn list(
        &self,
        labels: &[(&str, &str)],
    ) -> impl Future<Output = Result<Vec<ContainerInfo>, RuntimeError>> + Send;

    /// Sends SIGKILL. A container already gone or stopped is not an error.
    fn kill(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Removes the container, killing it first if it runs. Gone is fine.
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// The container's output so far, and what follows if `follow`.
    fn logs(&self, id: &str, follow: bool) -> LogStream;

    /// Whether the host has `image`, by the name given.
    fn has_image(&self, image: &str) -> impl Future<Output = Result<bool, RuntimeError>> + Send;

    /// The images on the host, each with its id, repo tags and repo digests
    /// (what the mesh's image filter is built from).
    fn list_images(&self) -> impl Future<Output = Result<Vec<ListedImage>, RuntimeError>> + Send;

    /// Watches the host's images: answers once the runtime does, with a
    /// stream of notices of the changes that follow (see [`ImageEvents`]).
    fn image_events(&self) -> impl Future<Output = Result<ImageEvents, RuntimeError>> + Send;

    /// Pulls `image` from its registry with `auth`, sending the progress to
    /// `progress` as it goes; done when the image is on the host.
    fn pull(
        &self,
        image: &ImageRef,
        auth: Option<Credentials>,
        progress: &watch::Sender<PullProgress>,
    ) -> impl Future<Output = Result<(), PullError>> + Send;

    /// Every image on the host (not only ours) with its size and how many
    /// containers, anyone's, were created from it: what image GC decides on.
    fn image_usage(&self) -> impl Future<Output = Result<Vec<HostImage>, RuntimeError>> + Send;

    /// Removes one reference to an image (a tag, a digest or the id),
    /// never forced: the image goes with its last reference, and a removal
    /// a container's use stands in the way of is refused (`Conflict`).
    /// Gone already is fine.
    fn remove_image(
        &self,
        reference: &str,
    ) -> impl Future<Output = Result<(), RemoveImageError>> + Send;
    /// The id and size of `image` (a name or an id), if the host has it.
    fn image_id(
        &self,
        image: &str,
    ) -> impl Future<Output = Result<Option<HeldImage>, RuntimeError>> + Send;

    /// `docker save` of the image with id `id`, streamed.
    fn save(&self, id: &str) -> TarStream;

    /// `docker load` of the tarball `tar` as it streams in; returns the
    /// ids of the images it loaded.
    fn load(
        &self,
        tar: TarStream,
    ) -> impl Future<Output = Result<Vec<String>, RuntimeError>> + Send;

    /// Names the image with id `id` as `name`.
    fn tag(
        &self,
        id: &str,
        name: &ImageRef,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
}
