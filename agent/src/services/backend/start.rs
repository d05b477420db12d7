//! Starting a service container until it accepts a connection, and
//! removing containers (one, or every one of this node's).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use mesh_protocol::service::ServiceSpec;
use mesh_protocol::{CoreCount, TaskId, labels};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::warn;

use super::{AcquireError, Backend, Started};
use crate::runtime::{ContainerRuntime, ContainerSpec};
use crate::services::stats::Count;

/// How much of a failed container's output goes into the log and the error.
const OUTPUT_TAIL: usize = 2048;

impl<R: ContainerRuntime> Backend<R> {
    pub(super) fn discard_all(&self, all: Vec<Started>) {
        for s in all {
            let me = self.clone();
            tokio::spawn(async move { me.discard(&s).await });
        }
    }

    /// Stops a container and frees its cores at once (its processes are
    /// gone), then removes it in the background, one removal at a time:
    /// Docker 20.10 can lose count of a network's endpoints when containers
    /// on it are removed concurrently, and then refuses to remove the empty
    /// network until dockerd restarts (moby/moby#42119).
    pub(super) async fn discard(&self, s: &Started) {
        let killed = self.runtime.kill(&s.id).await;
        if killed.is_ok() {
            self.supervisor.release(s.holder.clone()).await;
        }
        let me = self.clone();
        let s = s.clone();
        tokio::spawn(async move {
            let removed = {
                let _one = me.removals.acquire().await;
                me.runtime.remove(&s.id).await
            };
            if let Err(e) = removed {
                warn!(container = %s.name, error = %e, "cannot remove a service container; --cleanup or the next start removes it");
            }
            if killed.is_err() {
                me.supervisor.release(s.holder.clone()).await;
            }
        });
    }

    /// Starts a container of `spec` holding `cores` and waits until it
    /// accepts a connection; a container that exits or never accepts is
    /// removed and another started, up to `--ready-retries` times.
    pub(super) async fn start_ready(
        &self,
        spec: &ServiceSpec,
        cores: CoreCount,
    ) -> Result<(Started, TcpStream), AcquireError> {
        let mut last = String::new();
        for _ in 0..=spec.ready_retries {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let holder = TaskId::new(format!("s-{}-{seq}", spec.name))
                .map_err(|e| AcquireError::Failed(e.to_string()))?;
            let held = self
                .supervisor
                .reserve(holder.clone(), cores)
                .await
                .map_err(|e| AcquireError::Full(e.to_string()))?;
            let container = self.container_spec(spec, seq, &held);
            let id = match self.runtime.run(&container).await {
                Ok(id) => id,
                Err(e) => {
                    self.supervisor.release(holder).await;
                    self.stats.count(&spec.name, Count::FailedStart);
                    return Err(AcquireError::Failed(format!(
                        "cannot start a container of {}: {e}",
                        spec.name
                    )));
                }
            };
            let started = |addr| Started {
                id: id.clone(),
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
                    last = format!("{why}; its output: {output:?}");
                }
            }
        }
        Err(AcquireError::Failed(format!(
            "no container of {} became ready in {} starts: {last}",
            spec.name,
            spec.ready_retries + 1
        )))
    }

    pub(super) fn container_spec(
        &self,
        spec: &ServiceSpec,
        seq: u64,
        held: &crate::supervisor::Reservation,
    ) -> ContainerSpec {
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
                (labels::RUN.into(), self.run.to_string()),
            ]),
            cpuset_cpus: held.host_cpus.clone(),
            cpuset_mems: held.host_mems.clone(),
            memory: spec.memory.map(|m| m.get()),
            network: self.cfg.network.clone(),
        }
    }

    /// Connects to the container's port until it accepts, it exits, or
    /// `--ready-timeout` passes.
    pub(super) async fn wait_ready(
        &self,
        id: &str,
        spec: &ServiceSpec,
    ) -> Result<(SocketAddr, TcpStream), String> {
        let deadline = Instant::now() + Duration::from_millis(spec.ready_timeout_ms);
        let mut delay = Duration::from_millis(2);
        loop {
            let info = self.runtime.inspect(id).await.map_err(|e| e.to_string())?;
            if !info.running {
                return Err(format!(
                    "the container exited (code {:?}) before accepting on port {}",
                    info.exit_code, spec.port
                ));
            }
            let Some(ip) = info.address else {
                return Err("the container has no address on its network".into());
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
                return Err(format!(
                    "nothing accepted on port {} within {} ms (--ready-timeout)",
                    spec.port, spec.ready_timeout_ms
                ));
            }
            tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    pub(super) async fn output_tail(&self, id: &str) -> String {
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

    /// Removes every service container of this node (stale ones at start,
    /// all of them at shutdown). Returns how many.
    pub async fn remove_all(&self) -> Result<usize, crate::runtime::RuntimeError> {
        self.remove_where(|_| true).await
    }

    /// Removes the service containers earlier runs of this agent left.
    pub async fn remove_stale(&self) -> Result<usize, crate::runtime::RuntimeError> {
        let run = self.run.clone();
        self.remove_where(move |c| c.labels.get(labels::RUN).map(String::as_str) != Some(&run))
            .await
    }

    async fn remove_where(
        &self,
        which: impl Fn(&crate::runtime::ContainerInfo) -> bool,
    ) -> Result<usize, crate::runtime::RuntimeError> {
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
