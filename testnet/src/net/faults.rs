//! The faults a testnet can be put through: an agent killed (its host
//! lost) and restarted, paused and thawed, cut off and healed, and its
//! Docker stopped from answering.

use super::*;

impl Testnet {
    /// Kills `node`'s agent (SIGKILL) and removes every container it started,
    /// as the loss of its host would. Returns how many containers went.
    pub async fn kill(&self, node: &str) -> Result<usize, TestnetError> {
        let record = self.state.node(node)?;
        match self.docker.run(&["kill", record.container.as_str()]).await {
            Ok(_) => {}
            // Killing a stopped agent again is not an error.
            Err(e) if e.stderr().contains("is not running") => {}
            Err(e) => return Err(e.into()),
        }
        let (docker, name, node) = (
            self.docker.clone(),
            self.state.name.clone(),
            record.node.to_string(),
        );
        let removed = match self.state.engine(&record.node).cloned() {
            // Every container of its own engine is one it started.
            Some(engine) => blocking(move || Ok(engine::remove_containers(&engine)?)).await?,
            None => {
                blocking(move || teardown::remove_node_containers(&docker, &name, &node)).await?
            }
        };
        tracing::info!(testnet = %self.state.name, node = %record.node, containers = removed, "killed");
        Ok(removed)
    }

    /// Freezes `node`'s agent (`docker pause`: its processes stop, its
    /// sockets stay open), as a host that hangs or a process stopped in a
    /// debugger would; or thaws it. Peers hear nothing from it meanwhile.
    pub async fn pause(&self, node: &str, paused: bool) -> Result<(), TestnetError> {
        let record = self.state.node(node)?;
        let verb = if paused { "pause" } else { "unpause" };
        self.docker.run(&[verb, record.container.as_str()]).await?;
        tracing::info!(testnet = %self.state.name, node = %record.node, paused, "agent");
        Ok(())
    }

    /// Starts `node`'s agent again with its data directory and certificate
    /// (recreating the container if it was removed) and, unless it is
    /// partitioned, waits until it answers `/v1/health`.
    pub async fn restart(&self, node: &str) -> Result<(), TestnetError> {
        let record = self.state.node(node)?;
        match self.docker.run(&["start", record.container.as_str()]).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {
                let args = agent::run_args(&self.state, &self.layout, record);
                self.docker.run(&args).await?;
            }
            Err(e) => return Err(e.into()),
        }
        let connected = self
            .ls()
            .await?
            .iter()
            .any(|s| s.name == record.node && s.state == NodeState::Running);
        if connected {
            self.wait_ready(record).await?;
        }
        tracing::info!(testnet = %self.state.name, node = %record.node, "restarted");
        Ok(())
    }

    /// Cuts `nodes` off the testnet network: they reach no peer and no peer
    /// reaches them (nor does the host reach their API) until [`heal`].
    ///
    /// [`heal`]: Testnet::heal
    pub async fn partition<S: fmt::Display>(&self, nodes: &[S]) -> Result<(), TestnetError> {
        // Check every name before cutting anything.
        let records = nodes
            .iter()
            .map(|n| self.state.node(&n.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        for record in records {
            let args = [
                "network",
                "disconnect",
                self.state.name.as_str(),
                record.container.as_str(),
            ];
            match self.docker.run(&args).await {
                Ok(_) => {}
                Err(e) if e.stderr().contains("not connected") => {}
                Err(e) => return Err(e.into()),
            }
            tracing::info!(testnet = %self.state.name, node = %record.node, "partitioned");
        }
        Ok(())
    }

    /// Puts every node that is cut off back on the network, with its address
    /// and aliases, and undoes a split (`Testnet::split`). Returns the
    /// nodes it reconnected.
    pub async fn heal(&self) -> Result<Vec<NodeId>, TestnetError> {
        let name = self.state.name.clone();
        let unsplit = blocking(move || super::split::remove_rules(&name)).await?;
        if unsplit > 0 {
            tracing::info!(testnet = %self.state.name, rules = unsplit, "split undone");
        }
        let mut healed = Vec::new();
        for status in self.ls().await? {
            if status.state != NodeState::Partitioned {
                continue;
            }
            let record = self.state.node(status.name.as_str())?;
            self.docker
                .run(&agent::connect_args(&self.state, record))
                .await?;
            tracing::info!(testnet = %self.state.name, node = %record.node, "healed");
            healed.push(record.node.clone());
        }
        Ok(healed)
    }

    /// Starts one more agent, `node`, whose certificate comes from a CA of its
    /// own rather than the cluster's, with the same seeds and cluster id as
    /// the members: the mesh must never let it in. Waits until it answers
    /// `/v1/health`.
    pub async fn add_foreign(&mut self, node: &str) -> Result<(), TestnetError> {
        let node = NodeId::new(node)?;
        if self.state.node(node.as_str()).is_ok() {
            return Err(TestnetError::NodeExists {
                node: node.to_string(),
                testnet: self.state.name.clone(),
            });
        }
        let slot = self.state.nodes.len();
        let ip = self
            .state
            .subnet
            .agent_ip(slot)
            .ok_or(TestnetError::NodeCount {
                asked: slot + 1,
                max: MAX_AGENTS,
            })?;
        let now = OffsetDateTime::now_utc();
        let ca = certs::create_ca(
            &self.layout.foreign_ca_dir(&node),
            self.state.name.as_str(),
            now,
        )?;
        certs::create_node_tls(&self.layout, &ca, &node, now)?;
        create_dir(&self.layout.data_dir(&node))?;
        let record = NodeRecord {
            container: format!("{}-{node}", self.state.name),
            ip,
            topology: self.state.members().next().map_or_else(
                || crate::options::DEFAULT_TOPOLOGY.to_owned(),
                |n| n.topology.clone(),
            ),
            foreign: true,
            node,
        };
        self.state.nodes.push(record.clone());
        self.state.save(self.layout.root())?;
        self.docker
            .run(&agent::run_args(&self.state, &self.layout, &record))
            .await?;
        tracing::info!(testnet = %self.state.name, node = %record.node, "foreign agent started");
        self.wait_ready(&record).await
    }

    /// Stops (`true`) or restarts Docker answering `node`'s agent, through
    /// its socket proxy (a testnet started with `docker_proxy`, by this
    /// process).
    pub fn pause_docker(&self, node: &str, paused: bool) -> Result<(), TestnetError> {
        let proxy = self
            .proxies
            .get(node)
            .ok_or_else(|| TestnetError::NoDockerProxy {
                node: node.to_owned(),
            })?;
        if paused {
            proxy.pause();
        } else {
            proxy.resume();
        }
        tracing::info!(testnet = %self.state.name, node, paused, "docker proxy");
        Ok(())
    }
}
