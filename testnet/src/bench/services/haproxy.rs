//! HAProxy in TCP mode as a process on this host, the yardstick for the
//! agents' forwarding: one frontend on a free loopback port per target.
//! The process and its files go when [`Haproxy`] is stopped or dropped.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::TestnetName;
use crate::bench::BenchError;

const PROGRAM: &str = "haproxy";
/// How long HAProxy may take to accept on every frontend.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections HAProxy takes at once: far more than the benchmark opens.
const MAXCONN: u32 = 4096;

/// A running HAProxy forwarding `fronts[i]` to the i-th target.
#[derive(Debug)]
pub(super) struct Haproxy {
    child: Child,
    config: PathBuf,
    log: PathBuf,
    pub fronts: Vec<SocketAddr>,
}

/// HAProxy's version (`HAProxy version 2.6.12-1+deb12u4`); an error that
/// says how to install it if there is none.
pub(super) async fn version() -> Result<String, BenchError> {
    let out = Command::new(PROGRAM)
        .arg("-v")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| BenchError::Haproxy(e.to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match version_of(&text) {
        Some(v) if out.status.success() => Ok(v),
        _ => Err(BenchError::Haproxy(format!(
            "`haproxy -v` answered {}: {text}",
            out.status
        ))),
    }
}

/// The first three words of `haproxy -v`'s first line.
fn version_of(text: &str) -> Option<String> {
    let words: Vec<&str> = text.lines().next()?.split_whitespace().take(3).collect();
    (words.len() == 3 && words[0] == "HAProxy").then(|| words.join(" "))
}

/// The configuration: TCP mode, frontend `fN` on `routes[N].0` to server
/// `routes[N].1`, one thread per CPU (HAProxy's default).
pub(super) fn config(routes: &[(SocketAddr, SocketAddr)]) -> String {
    let mut out = format!(
        "global\n    maxconn {MAXCONN}\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 5m\n    timeout server 5m\n"
    );
    for (i, (front, target)) in routes.iter().enumerate() {
        out.push_str(&format!(
            "\nfrontend f{i}\n    bind {front}\n    default_backend b{i}\n\nbackend b{i}\n    server s{i} {target}\n"
        ));
    }
    out
}

impl Haproxy {
    /// Starts HAProxy forwarding a loopback port to each of `targets` and
    /// waits until every frontend accepts.
    pub(super) async fn start(targets: &[SocketAddr]) -> Result<Self, BenchError> {
        let fronts = targets
            .iter()
            .map(|_| free_loopback_port())
            .collect::<Result<Vec<_>, _>>()?;
        let routes: Vec<_> = fronts
            .iter()
            .copied()
            .zip(targets.iter().copied())
            .collect();
        let base = std::env::temp_dir().join(format!(
            "mesh-bench-{}",
            TestnetName::unique("haproxy").as_str()
        ));
        let (config_path, log) = (base.with_extension("cfg"), base.with_extension("log"));
        let io = |what, path: &PathBuf| {
            let target = path.display().to_string();
            move |source| BenchError::Io {
                what,
                target,
                source,
            }
        };
        std::fs::write(&config_path, config(&routes)).map_err(io("write", &config_path))?;
        let log_file = std::fs::File::create(&log).map_err(io("create", &log))?;
        let child = Command::new(PROGRAM)
            .arg("-db")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::Haproxy(e.to_string()));
        // From here on, dropping `me` removes the files and the process.
        let mut me = Self {
            child: child?,
            config: config_path,
            log,
            fronts,
        };
        me.wait_accepting().await?;
        Ok(me)
    }

    async fn wait_accepting(&mut self) -> Result<(), BenchError> {
        let deadline = Instant::now() + START_TIMEOUT;
        for front in self.fronts.clone() {
            loop {
                if tokio::net::TcpStream::connect(front).await.is_ok() {
                    break;
                }
                let exited = self
                    .child
                    .try_wait()
                    .map_err(|e| BenchError::Haproxy(e.to_string()))?;
                if exited.is_some() || Instant::now() >= deadline {
                    let said = std::fs::read_to_string(&self.log).unwrap_or_default();
                    let state =
                        exited.map_or("does not accept".to_owned(), |s| format!("exited ({s})"));
                    return Err(BenchError::Haproxy(format!(
                        "haproxy {state} on {front}: {}",
                        said.trim()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Its pid, for its CPU time.
    pub(super) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops HAProxy (its files go on drop).
    pub(super) async fn stop(mut self) {
        if let Err(e) = self.child.kill().await {
            tracing::warn!(error = %e, "cannot stop haproxy");
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // The process itself is killed on drop (`kill_on_drop`).
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A loopback port nothing listens on now (the kernel's pick for port 0).
fn free_loopback_port() -> Result<SocketAddr, BenchError> {
    let io = |source| BenchError::Io {
        what: "find a free port on",
        target: Ipv4Addr::LOCALHOST.to_string(),
        source,
    };
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_the_first_line_without_the_date() {
        let text = "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/\nStatus: long-term\n";
        assert_eq!(
            version_of(text).as_deref(),
            Some("HAProxy version 2.6.12-1+deb12u4")
        );
        assert_eq!(version_of("bash: haproxy: not found"), None);
    }

    #[test]
    fn one_frontend_and_backend_per_route() {
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let b: SocketAddr = "10.200.0.130:7000".parse().unwrap();
        let text = config(&[(a, b), (b, a)]);
        assert!(text.contains("mode tcp"), "{text}");
        assert!(
            text.contains("frontend f0\n    bind 127.0.0.1:4000\n    default_backend b0"),
            "{text}"
        );
        assert!(
            text.contains("backend b1\n    server s1 127.0.0.1:4000"),
            "{text}"
        );
    }
}
