//! The real runtime: the Docker Engine API through bollard.

use std::collections::{BTreeMap, HashMap};

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, ContainerSummaryStateEnum, HostConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions,
};
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use mesh_protocol::image::{HostImage, ImageRef, ListedImage, PullProgress};
use tokio::sync::watch;

use super::{
    ContainerInfo, ContainerRuntime, ContainerSpec, Credentials, ImageEvents, LogStream, PullError,
    RemoveImageError, RuntimeError, TarStream,
};
use mesh_protocol::rpc::HeldImage;

/// Where Docker listens when neither `--docker-host` nor `DOCKER_HOST` says.
pub const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";

/// Docker over its local socket, `DOCKER_HOST` or a given endpoint. The client is made and
/// the API version negotiated on first successful use, so the agent can
/// start while Docker is down and connect once it is up.
#[derive(Debug)]
pub struct DockerRuntime {
    endpoint: String,
    negotiated: OnceCell<Docker>,
}

impl DockerRuntime {
    /// Prepares a client for `DOCKER_HOST` or the local socket; does not
    /// connect yet.
    pub fn from_env() -> Result<Self, RuntimeError> {
        Self::at(None)
    }

    /// Prepares a client for `endpoint` (`unix:///...`, `tcp://...`), else
    /// `DOCKER_HOST`, else the local socket; does not connect yet.
    pub fn at(endpoint: Option<&str>) -> Result<Self, RuntimeError> {
        let endpoint = match endpoint {
            Some(e) => e.to_owned(),
            None => std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_ENDPOINT.into()),
        };
        Ok(Self {
            endpoint,
            negotiated: OnceCell::new(),
        })
    }

    pub(super) async fn client(&self) -> Result<&Docker, RuntimeError> {
        self.negotiated
            .get_or_try_init(|| async {
                Docker::connect_with_host(&self.endpoint)
                    .map_err(|e| self.unavailable(e))?
                    .negotiate_version()
                    .await
                    .map_err(|e| self.unavailable(e))
            })
            .await
    }

    /// The client, if a call has connected already (streams that cannot
    /// wait for the first connection use it).
    pub(super) fn connected(&self) -> Option<Docker> {
        self.negotiated.get().cloned()
    }

    pub(super) fn endpoint_name(&self) -> &str {
        &self.endpoint
    }

    fn unavailable(&self, e: BollardError) -> RuntimeError {
        RuntimeError::Unavailable {
            endpoint: self.endpoint.clone(),
            cause: e.to_string(),
        }
    }

    /// Server answers become `Rejected`/`NotFound`; the rest means we could
    /// not talk to Docker at all.
    pub(super) fn classify(&self, id: &str, e: BollardError) -> RuntimeError {
        match e {
            BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            } if !message.contains("image") => RuntimeError::NotFound(format!("{id}: {message}")),
            BollardError::DockerResponseServerError { message, .. } => {
                RuntimeError::Rejected(message)
            }
            BollardError::JsonDataError { .. } | BollardError::JsonSerdeError { .. } => {
                RuntimeError::Rejected(e.to_string())
            }
            other => self.unavailable(other),
        }
    }
}

fn labels_of(map: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    map.unwrap_or_default().into_iter().collect()
}

impl ContainerRuntime for DockerRuntime {
    fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    async fn ping(&self) -> Result<String, RuntimeError> {
        let docker = self.client().await?;
        let v = docker.version().await.map_err(|e| self.unavailable(e))?;
        Ok(format!(
            "{} (API {})",
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default()
        ))
    }

    async fn run(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let docker = self.client().await?;
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(spec.labels.clone().into_iter().collect()),
            host_config: Some(HostConfig {
                cpuset_cpus: Some(spec.cpuset_cpus.to_string()),
                cpuset_mems: Some(spec.cpuset_mems.to_string()),
                // `MemoryBytes` is at most i64::MAX.
                memory: spec.memory.map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
                network_mode: spec.network.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        let created = docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| match self.classify(&spec.name, e) {
                RuntimeError::NotFound(m) => RuntimeError::Rejected(m),
                other => other,
            })?;
        if let Err(e) = docker.start_container(&created.id, None).await {
            let err = match self.classify(&created.id, e) {
                RuntimeError::NotFound(m) => RuntimeError::Rejected(m),
                other => other,
            };
            // Never leave a created-but-dead container behind.
            let _ = self.remove(&created.id).await;
            return Err(err);
        }
        Ok(created.id)
    }

    async fn wait(&self, id: &str) -> Result<i64, RuntimeError> {
        let docker = self.client().await?;
        let mut stream = docker.wait_container(id, None);
        match stream.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(self.classify(id, e)),
            None => Err(RuntimeError::Unavailable {
                endpoint: self.endpoint.clone(),
                cause: format!("wait on {id} ended without an answer"),
            }),
        }
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        let docker = self.client().await?;
        let c = docker
            .inspect_container(id, None)
            .await
            .map_err(|e| self.classify(id, e))?;
        let state = c.state.unwrap_or_default();
        if matches!(
            state.status,
            Some(ContainerStateStatusEnum::REMOVING | ContainerStateStatusEnum::DEAD)
        ) {
            return Err(RuntimeError::NotFound(format!("{id}: being removed")));
        }
        let running = state.running.unwrap_or(false);
        let never_started = state.status == Some(ContainerStateStatusEnum::CREATED);
        let host = c.host_config.unwrap_or_default();
        let address = c
            .network_settings
            .and_then(|n| n.networks)
            .into_iter()
            .flatten()
            .find_map(|(_, n)| n.ip_address.and_then(|ip| ip.parse().ok()));
        Ok(ContainerInfo {
            id: c.id.unwrap_or_else(|| id.to_owned()),
            name: c
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            labels: labels_of(c.config.and_then(|c| c.labels)),
            running,
            never_started,
            exit_code: if running || never_started {
                None
            } else {
                state.exit_code
            },
            cpuset_cpus: host.cpuset_cpus,
            cpuset_mems: host.cpuset_mems,
            address,
        })
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let docker = self.client().await?;
        let filter: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), filter)])),
            ..Default::default()
        };
        let found = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.classify("list", e))?;
        let mut out = Vec::with_capacity(found.len());
        for c in found {
            let Some(id) = c.id else { continue };
            let running = matches!(
                c.state,
                Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::RESTARTING)
            );
            let never_started = c.state == Some(ContainerSummaryStateEnum::CREATED);
            // The summary has no exit code; ask for it when it matters.
            let exit_code = if running || never_started {
                None
            } else {
                match self.inspect(&id).await {
                    Ok(info) => info.exit_code,
                    Err(RuntimeError::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                }
            };
            out.push(ContainerInfo {
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_owned(),
                id,
                labels: labels_of(c.labels),
                running,
                never_started,
                exit_code,
                cpuset_cpus: None,
                cpuset_mems: None,
                address: None,
            });
        }
        Ok(out)
    }

    async fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        match docker
            .kill_container(id, Some(KillContainerOptions::default()))
            .await
        {
            Ok(()) => Ok(()),
            // 404: gone; 409: not running. Both mean it is not running.
            Err(BollardError::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => Ok(()),
            Err(e) => Err(self.classify(id, e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            // 409: removal already in progress.
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(self.classify(id, e)),
        }
    }

    fn logs(&self, id: &str, follow: bool) -> LogStream {
        let options = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let endpoint = self.endpoint.clone();
        let Some(docker) = self.negotiated.get().cloned() else {
            let err = RuntimeError::Unavailable {
                endpoint,
                cause: "not connected to Docker yet".into(),
            };
            return futures_util::stream::iter([Err(err)]).boxed();
        };
        let id = id.to_owned();
        docker
            .logs(&id.clone(), Some(options))
            .map_ok(|out| out.into_bytes())
            .map_err(move |e| match e {
                BollardError::DockerResponseServerError {
                    status_code: 404, ..
                } => RuntimeError::NotFound(id.clone()),
                BollardError::DockerResponseServerError { message, .. } => {
                    RuntimeError::Rejected(message)
                }
                other => RuntimeError::Unavailable {
                    endpoint: endpoint.clone(),
                    cause: other.to_string(),
                },
            })
            .boxed()
    }

    async fn has_image(&self, image: &str) -> Result<bool, RuntimeError> {
        self.image_present(image).await
    }

    async fn list_images(&self) -> Result<Vec<ListedImage>, RuntimeError> {
        self.images_held().await
    }

    async fn image_events(&self) -> Result<ImageEvents, RuntimeError> {
        self.watch_images().await
    }

    async fn pull(
        &self,
        image: &ImageRef,
        auth: Option<Credentials>,
        progress: &watch::Sender<PullProgress>,
    ) -> Result<(), PullError> {
        self.pull_image(image, auth, progress).await
    }

    async fn image_usage(&self) -> Result<Vec<HostImage>, RuntimeError> {
        self.list_image_usage().await
    }

    async fn remove_image(&self, reference: &str) -> Result<(), RemoveImageError> {
        self.delete_image(reference).await
    }

    async fn image_id(&self, image: &str) -> Result<Option<HeldImage>, RuntimeError> {
        self.held_image(image).await
    }

    fn save(&self, id: &str) -> TarStream {
        self.save_image(id)
    }

    async fn load(&self, tar: TarStream) -> Result<Vec<String>, RuntimeError> {
        self.load_image(tar).await
    }

    async fn tag(&self, id: &str, name: &ImageRef) -> Result<(), RuntimeError> {
        self.tag_image(id, name).await
    }
}
