//! The memory phase of `bench services`: connections held open through one
//! path while the agents' memory is read, once the serving agent has ports
//! free for them.

use super::defs::{ECHO_POOL, SERVER, echo_idle};
use super::{
    BenchError, FD_SPARE, HOLD_IN_FLIGHT, HOLD_LIMIT, Hold, LOCAL_PORTS, PORTS_TIMEOUT, Path, Run,
    probe, procfs,
};
use crate::wait_until;

impl Run<'_> {
    /// Waits until [`SERVER`] can open `need` more connections to the echo
    /// instance. It connects to it from an ephemeral port for every client
    /// connection and closes first, so each closed one holds its port in
    /// TIME_WAIT for 60 s: the throughput runs and a hold before may have
    /// taken most of them.
    async fn wait_for_ports(&self, need: u64) -> Result<(), BenchError> {
        let pid = self
            .pids
            .iter()
            .find(|(n, _)| n == SERVER)
            .map(|(_, pid)| pid.clone())
            .ok_or_else(|| BenchError::Measure(format!("no pid of {SERVER}'s meshd")))?;
        let waited = wait_until(
            "ports free on n2 for the held connections",
            PORTS_TIMEOUT,
            async || match procfs::time_wait(&pid) {
                Ok(tw) if tw + need <= LOCAL_PORTS => Ok(()),
                Ok(tw) => Err(format!(
                    "{tw} connections in TIME_WAIT, {need} ports needed"
                )),
                Err(e) => Err(e.to_string()),
            },
        )
        .await?;
        tracing::info!(?waited, need, "ports free on n2");
        Ok(())
    }

    /// Opens up to `asked` connections to the echo pool through `path`
    /// (as many as every process's descriptors allow), reads the agents'
    /// memory with them open, closes them and waits until the agents have
    /// let go of them.
    pub(super) async fn hold(&self, path: Path, asked: usize) -> Result<Hold, BenchError> {
        let before = self.usage()?;
        let own = procfs::read("self")?;
        // Descriptors per held connection: this process holds one; the
        // local agent two (client and container); through the mesh, the
        // entry agent holds the client's and the server the container's.
        let mut costs = vec![("this process".to_owned(), own, 1)];
        for (node, u) in &before {
            let per = match (path, node.as_str()) {
                (Path::Local, SERVER) => 2,
                (Path::Local, _) => 0,
                _ => 1,
            };
            costs.push((node.clone(), *u, per));
        }
        let mut tried = asked;
        let mut why_fewer = Vec::new();
        for (who, u, per) in costs.into_iter().filter(|c| c.2 > 0) {
            let room = u.max_fds.saturating_sub(u.fds as u64 + FD_SPARE) / per;
            if (room as usize) < tried {
                tried = room as usize;
                why_fewer.push(format!(
                    "{who} may open {} files ({per} per connection)",
                    u.max_fds
                ));
            }
        }
        self.wait_for_ports(tried as u64 + FD_SPARE).await?;
        let held = probe::hold(self.at(path, ECHO_POOL), tried, HOLD_IN_FLIGHT, HOLD_LIMIT).await;
        why_fewer.extend(held.stopped.clone());
        let holding = self.usage()?;
        let n = held.streams.len();
        drop(held);
        self.wait_views("the held connections closed", echo_idle)
            .await?;
        Ok(Hold {
            path,
            asked,
            tried,
            held: n,
            why_fewer,
            before,
            holding,
        })
    }
}
