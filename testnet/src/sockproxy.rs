//! A Docker socket proxy per agent, for the chaos run: each agent mounts its
//! own proxy's socket instead of the host's Docker socket, and the run can
//! [`pause`](SocketProxy::pause) it so that Docker stops answering that
//! agent (requests are read but nothing is forwarded either way) and
//! [`resume`](SocketProxy::resume) it. The proxy lives in the process that
//! started the testnet; a testnet started with it needs that process.

use std::io;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running proxy; it stops (and its connections close) when dropped.
#[derive(Debug)]
pub struct SocketProxy {
    paused: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl SocketProxy {
    /// Listens on `path` (replacing a stale socket there) and forwards each
    /// connection to `upstream`.
    pub fn start(path: &Path, upstream: PathBuf) -> io::Result<Self> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        let (paused, _) = watch::channel(false);
        let gate = paused.subscribe();
        let accept = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => {
                            conns.spawn(forward(client, upstream.clone(), gate.clone()));
                        }
                        Err(e) => tracing::warn!(error = %e, "docker proxy: accept failed"),
                    },
                    Some(_) = conns.join_next() => {}
                }
            }
        });
        Ok(Self { paused, accept })
    }

    /// Docker stops answering through this proxy.
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    /// Docker answers again; what waited goes through.
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One connection: waits while paused, connects upstream, then carries
/// bytes both ways, each chunk held back while paused.
async fn forward(client: UnixStream, upstream: PathBuf, mut gate: watch::Receiver<bool>) {
    if gate.wait_for(|paused| !*paused).await.is_err() {
        return;
    }
    let server = match UnixStream::connect(&upstream).await {
        Ok(server) => server,
        Err(e) => {
            tracing::warn!(error = %e, upstream = %upstream.display(), "docker proxy: cannot connect");
            return;
        }
    };
    let (client_rd, client_wr) = client.into_split();
    let (server_rd, server_wr) = server.into_split();
    tokio::join!(
        pump(client_rd, server_wr, gate.clone()),
        pump(server_rd, client_wr, gate),
    );
}

async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut gate: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if gate.wait_for(|paused| !*paused).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An upstream that echoes each connection.
    fn echo_server(path: &Path) -> JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut rd, mut wr) = conn.split();
                    let _ = tokio::io::copy(&mut rd, &mut wr).await;
                });
            }
        })
    }

    async fn ask(conn: &mut UnixStream, what: &[u8]) -> Vec<u8> {
        conn.write_all(what).await.unwrap();
        let mut got = vec![0u8; what.len()];
        conn.read_exact(&mut got).await.unwrap();
        got
    }

    #[tokio::test]
    async fn paused_it_holds_every_answer_until_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let upstream = dir.path().join("docker.sock");
        let _server = echo_server(&upstream);
        let path = dir.path().join("proxy.sock");
        let proxy = SocketProxy::start(&path, upstream).unwrap();
        let mut conn = UnixStream::connect(&path).await.unwrap();
        assert_eq!(ask(&mut conn, b"ping").await, b"ping");

        proxy.pause();
        conn.write_all(b"held").await.unwrap();
        let mut got = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_millis(300), conn.read_exact(&mut got));
        assert!(read.await.is_err(), "an answer went through while paused");
        // A new connection waits too.
        let mut late = UnixStream::connect(&path).await.unwrap();
        late.write_all(b"late").await.unwrap();

        proxy.resume();
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"held");
        late.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"late");
    }
}
