//! The witness: a TCP server on the testnet network's gateway (this host)
//! that the chaos run's task containers report to (the test service's
//! `witness` program). Each connection is one container's work on one task,
//! from its `start` line until the connection closes, which it does when the
//! container ends or is killed. What it records is evidence from the
//! containers themselves, not from the agents.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::chaos::check::Interval;
use crate::chaos::millis;

/// A line a container sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Start {
        task: String,
        attempt: String,
        host: String,
        node: String,
        cpus: String,
    },
    End {
        code: u8,
    },
}

/// Parses one line; `None` for anything else.
pub fn parse_line(line: &str) -> Option<Line> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words[..] {
        ["start", task, attempt, host, node, cpus] => Some(Line::Start {
            task: task.to_owned(),
            attempt: attempt.to_owned(),
            host: host.to_owned(),
            node: node.to_owned(),
            cpus: cpus.to_owned(),
        }),
        ["end", _, _, code] => code.parse().ok().map(|code| Line::End { code }),
        _ => None,
    }
}

/// A running witness; it stops when dropped.
#[derive(Debug)]
pub struct Witness {
    addr: SocketAddr,
    intervals: Arc<Mutex<Vec<Interval>>>,
    accept: JoinHandle<()>,
}

impl Witness {
    /// Listens on `addr` (port 0 picks one); times are counted from `origin`.
    pub async fn start(addr: SocketAddr, origin: Instant) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let intervals = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&intervals);
        let accept = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            conns.spawn(serve(stream, Arc::clone(&shared), origin));
                        }
                        Err(e) => tracing::warn!(error = %e, "witness: accept failed"),
                    },
                    Some(_) = conns.join_next() => {}
                }
            }
        });
        Ok(Self {
            addr,
            intervals,
            accept,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every interval seen so far (open ones with no close).
    pub fn intervals(&self) -> Vec<Interval> {
        lock(&self.intervals).clone()
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The intervals are only pushed to and updated in place; a panic while
/// holding the lock leaves them as valid as before.
fn lock(m: &Mutex<Vec<Interval>>) -> std::sync::MutexGuard<'_, Vec<Interval>> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn serve(stream: TcpStream, intervals: Arc<Mutex<Vec<Interval>>>, origin: Instant) {
    let mut lines = BufReader::new(stream).lines();
    let mut mine: Option<usize> = None;
    while let Ok(Some(line)) = lines.next_line().await {
        match (parse_line(&line), mine) {
            (
                Some(Line::Start {
                    task,
                    attempt,
                    host,
                    node,
                    cpus,
                }),
                None,
            ) => {
                let mut all = lock(&intervals);
                all.push(Interval {
                    task,
                    attempt,
                    host,
                    node,
                    cpus,
                    opened_ms: millis(origin),
                    closed_ms: None,
                    code: None,
                });
                mine = Some(all.len() - 1);
            }
            (Some(Line::End { code }), Some(i)) => {
                if let Some(interval) = lock(&intervals).get_mut(i) {
                    interval.code = Some(code);
                }
            }
            _ => tracing::warn!(line, "witness: unexpected line"),
        }
    }
    if let Some(i) = mine
        && let Some(interval) = lock(&intervals).get_mut(i)
    {
        interval.closed_ms = Some(millis(origin));
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[test]
    fn lines_parse() {
        assert_eq!(
            parse_line("start t-1 2 abc n3 0-1\n"),
            Some(Line::Start {
                task: "t-1".into(),
                attempt: "2".into(),
                host: "abc".into(),
                node: "n3".into(),
                cpus: "0-1".into(),
            })
        );
        assert_eq!(parse_line("end t-1 2 0"), Some(Line::End { code: 0 }));
        assert_eq!(parse_line("end t-1 2 x"), None);
        assert_eq!(parse_line("hello"), None);
        assert_eq!(parse_line("start t-1 2 abc"), None);
    }

    #[tokio::test]
    async fn a_connection_is_one_interval_closed_when_it_closes() {
        let witness = Witness::start("127.0.0.1:0".parse().unwrap(), Instant::now())
            .await
            .unwrap();
        let mut conn = TcpStream::connect(witness.addr()).await.unwrap();
        conn.write_all(b"start t-1 1 box n1 0\n").await.unwrap();
        crate::steps::wait_until(
            "start seen",
            std::time::Duration::from_secs(5),
            async || match witness.intervals()[..] {
                [
                    Interval {
                        closed_ms: None, ..
                    },
                ] => Ok(()),
                ref other => Err(format!("{other:?}")),
            },
        )
        .await
        .unwrap();
        conn.write_all(b"end t-1 1 0\n").await.unwrap();
        drop(conn);
        crate::steps::wait_until("closed", std::time::Duration::from_secs(5), async || {
            match &witness.intervals()[..] {
                [i] if i.closed_ms.is_some() && i.code == Some(0) && i.task == "t-1" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await
        .unwrap();
    }
}
