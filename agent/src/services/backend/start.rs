//! The backend's effects: starting a service container until it accepts a
//! connection, following a pool instance, and removing containers (one, or
//! every one of this node's). Run as the actor's tracked work; no state of
//! the services is kept here.

use mesh_protocol::events::EventKind;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use mesh_protocol::service::ServiceSpec;
use mesh_protocol::{CoreCount, TaskId, labels};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::warn;

use super::BackendConfig;
use super::error::{AcquireError, ReadyError};
use crate::clock::deadline_after;
use crate::images::Pulls;
use crate::runtime::{ContainerInfo, ContainerRuntime, ContainerSpec, RuntimeError};
use crate::services::plan::Started;
use crate::services::ports::Cores;
use crate::services::stats::{Count, Stats};
use crate::supervisor::Reservation;

/// How much of a failed container's output goes into the log and the error.
const OUTPUT_TAIL: usize = 2048;

/// What the effects need; shared by the actor's work.
pub(super) struct Effects<R, C> {
    pub cfg: BackendConfig,
    pub runtime: Arc<R>,
    /// This host's image pulls, shared with the tasks.
    pub pulls: Pulls<R>,
    pub cores: C,
    pub stats: Stats,
    /// Container names stay unique across restarts of the agent (a stale
    /// container may still hold an old name): numbers start at the run's.
    seq: AtomicU64,
    /// This run of the agent (the label `mesh.run` of its containers).
    run: String,
    /// One container removal at a time (see `discard`).
    removals: Semaphore,
}

impl<R: ContainerRuntime, C: Cores> Effects<R, C> {
    /// `started_ms`: when this run of the agent started (it names the run).
    pub fn new(
        cfg: BackendConfig,
        pulls: Pulls<R>,
        cores: C,
        stats: Stats,
        started_ms: u64,
    ) -> Self {
        let run = started_ms.saturating_mul(1000);
        Self {
            cfg,
            runtime: pulls.runtime(),
            pulls,
            cores,
            stats,
            seq: AtomicU64::new(run),
            run: run.to_string(),
            removals: Semaphore::new(1),
        }
    }

    /// Stops a container and frees its cores at once (its processes are
    /// gone), then removes it, one removal at a time: Docker 20.10 can lose
    /// count of a network's endpoints when containers on it are removed
    /// concurrently, and then refuses to remove the empty network until
    /// dockerd restarts (moby/moby#42119).
    pub async fn discard(&self, s: &Started) {
        let killed = self.runtime.kill(&s.id).await;
        if killed.is_ok() {
            self.cores.release(s.holder.clone()).await;
        }
        let removed = {
            let _one = self.removals.acquire().await;
            self.runtime.remove(&s.id).await
        };
        if let Err(e) = removed {
            warn!(container = %s.name, error = %e, "cannot remove a service container; --cleanup or the next start removes it");
        }
        if killed.is_err() {
            self.cores.release(s.holder.clone()).await;
        }
    }

    /// Waits until a pool instance exits.
    pub async fn wait(&self, s: &Started) -> Result<i64, RuntimeError> {
        self.runtime.wait(&s.id).await
    }

    /// Starts a container of `spec` holding `cores` and waits until it
    /// accepts a connection; a container that exits or never accepts is
    /// removed and another started, up to `--ready-retries` times.
    pub async fn start_ready(
        &self,
        spec: &ServiceSpec,
        cores: CoreCount,
    ) -> Result<(Started, TcpStream), AcquireError> {
        let started = self.start_ready_untold(spec, cores).await;
        let events = &self.cfg.events;
        match &started {
            Ok((s, _)) => events.emit_flood(
                EventKind::ContainerStarted,
                &spec.name,
                format!(
                    "{} started on {} and accepts connections",
                    s.name, self.cfg.node
                ),
            ),
            Err(e) if e.is_failure() || matches!(e, AcquireError::Image { .. }) => {
                events.emit_flood(EventKind::ContainerFailed, &spec.name, e.to_string())
            }
            // No room: not the service's failure.
            Err(_) => {}
        }
        started
    }

    /// [`Self::start_ready`], without telling the outcome.
    async fn start_ready_untold(
        &self,
        spec: &ServiceSpec,
        cores: CoreCount,
    ) -> Result<(Started, TcpStream), AcquireError> {
        let service = || spec.name.clone();
        // The image first, as the service's pull policy says; no cores are
        // held while it comes.
        self.pulls
            .ensure(&spec.image, spec.pull, |_| {})
            .await
            .map_err(|source| {
                self.stats.count(&spec.name, Count::FailedStart);
                AcquireError::Image {
                    service: service(),
                    source,
                }
            })?;
        let mut last = None;
        for _ in 0..=spec.ready_retries {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let holder = TaskId::new(mesh_protocol::cores::service_holder(&spec.name, seq))
                .map_err(|source| AcquireError::Holder {
                    service: service(),
                    source,
                })?;
            let held = self
                .cores
                .reserve(holder.clone(), cores)
                .await
                .map_err(|source| AcquireError::NoCores {
                    service: service(),
                    source,
                })?;
            let container = self.container_spec(spec, seq, &held);
            let id = match self.runtime.run(&container).await {
                Ok(id) => {
                    self.pulls.started(&spec.image);
                    id
                }
                Err(source) => {
                    self.cores.release(holder).await;
                    self.stats.count(&spec.name, Count::FailedStart);
                    return Err(AcquireError::Start {
                        service: service(),
                        source,
                    });
                }
            };
            let started = |addr| Started {
                id: id.clone(),
                service: spec.name.clone(),
                name: container.name.clone(),
                holder: holder.clone(),
                addr,
            };
            match self.wait_ready(&id, spec).await {
                Ok((addr, stream)) => return Ok((started(addr), stream)),
                Err(why) => {
                    self.stats.count(&spec.name, Count::FailedStart);
                    let output = self.output_tail(&id).await;
                    warn!(service = %spec.name, container = %container.name, %why, %output, "service container failed to start");
                    self.discard(&started(SocketAddr::from(([0, 0, 0, 0], 0))))
                        .await;
                    last = Some((why, output));
                }
            }
        }
        let (why, output) = last.unwrap_or((ReadyError::NoAddress, String::new()));
        Err(AcquireError::NotReady {
            service: service(),
            starts: spec.ready_retries.saturating_add(1),
            why,
            output,
        })
    }

    fn container_spec(&self, spec: &ServiceSpec, seq: u64, held: &Reservation) -> ContainerSpec {
        let node = self.cfg.node.to_string();
        let mut env = spec.env.clone();
        env.extend([
            ("MESH_SERVICE".into(), spec.name.to_string()),
            ("MESH_NODE".into(), node.clone()),
            ("MESH_CORES".into(), held.allocation.cores.len().to_string()),
            ("MESH_CPUS".into(), held.allocation.cpus.to_string()),
            ("MESH_HOST_CPUS".into(), held.host_cpus.to_string()),
        ]);
        ContainerSpec {
            name: format!("mesh-{node}-{}-{seq}", spec.name),
            image: spec.image.clone(),
            command: spec.command.clone(),
            env,
            labels: BTreeMap::from([
                (labels::NODE.into(), node),
                (labels::CLUSTER.into(), self.cfg.cluster.clone()),
                (labels::KIND.into(), labels::KIND_SERVICE.into()),
                (labels::SERVICE.into(), spec.name.to_string()),
                (labels::RUN.into(), self.run.clone()),
            ]),
            cpuset_cpus: held.host_cpus.clone(),
            cpuset_mems: held.host_mems.clone(),
            memory: spec.memory.map(|m| m.get()),
            network: self.cfg.network.clone(),
        }
    }

    /// Connects to the container's port until it accepts, it exits, or
    /// `--ready-timeout` passes.
    async fn wait_ready(
        &self,
        id: &str,
        spec: &ServiceSpec,
    ) -> Result<(SocketAddr, TcpStream), ReadyError> {
        let deadline = deadline_after(Duration::from_millis(spec.ready_timeout_ms));
        let mut delay = Duration::from_millis(2);
        loop {
            let info = self.runtime.inspect(id).await?;
            if !info.running {
                return Err(ReadyError::Exited {
                    code: info.exit_code,
                    port: spec.port,
                });
            }
            let Some(ip) = info.address else {
                return Err(ReadyError::NoAddress);
            };
            let addr = SocketAddr::new(ip, spec.port);
            let left = deadline.saturating_duration_since(Instant::now());
            if let Ok(Ok(stream)) =
                tokio::time::timeout(left.min(Duration::from_secs(1)), TcpStream::connect(addr))
                    .await
            {
                let _ = stream.set_nodelay(true);
                return Ok((addr, stream));
            }
            if Instant::now() >= deadline {
                return Err(ReadyError::Timeout {
                    port: spec.port,
                    ms: spec.ready_timeout_ms,
                });
            }
            tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    async fn output_tail(&self, id: &str) -> String {
        let mut out = Vec::new();
        let mut logs = self.runtime.logs(id, false);
        while let Some(Ok(chunk)) = logs.next().await {
            out.extend_from_slice(&chunk);
            if out.len() > 4 * OUTPUT_TAIL {
                out.drain(..out.len() - OUTPUT_TAIL);
            }
        }
        let start = out.len().saturating_sub(OUTPUT_TAIL);
        String::from_utf8_lossy(&out[start..]).trim().to_owned()
    }

    /// Removes every service container of this node (at shutdown).
    /// Returns how many.
    pub async fn remove_all(&self) -> Result<usize, RuntimeError> {
        self.remove_where(|_| true).await
    }

    /// Removes the service containers earlier runs of this agent left.
    pub async fn remove_stale(&self) -> Result<usize, RuntimeError> {
        self.remove_where(|c| c.labels.get(labels::RUN) != Some(&self.run))
            .await
    }

    async fn remove_where(
        &self,
        which: impl Fn(&ContainerInfo) -> bool,
    ) -> Result<usize, RuntimeError> {
        let node = self.cfg.node.to_string();
        let found = self
            .runtime
            .list(&[
                (labels::NODE, node.as_str()),
                (labels::CLUSTER, self.cfg.cluster.as_str()),
                (labels::KIND, labels::KIND_SERVICE),
            ])
            .await?;
        let found: Vec<_> = found.into_iter().filter(|c| which(c)).collect();
        for c in &found {
            let removed = {
                let _one = self.removals.acquire().await;
                self.runtime.remove(&c.id).await
            };
            if let Err(e) = removed {
                warn!(container = %c.name, error = %e, "cannot remove a service container");
            }
        }
        Ok(found.len())
    }
}
