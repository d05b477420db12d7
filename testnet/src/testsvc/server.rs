//! The accept loop shared by every server mode: one thread per connection and
//! one log line per connection when it ends.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::args::ServerMode;
use super::conn::Conn;
use super::error::TestsvcError;
use super::{http, streams};

/// Pause after a failed `accept` (such as running out of file descriptors)
/// before trying again, so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Binds `0.0.0.0:port`. Takes a number, not a name: no DNS lookup can happen,
/// which keeps the static binary free of `getaddrinfo`.
pub fn bind(port: u16) -> Result<TcpListener, TestsvcError> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    TcpListener::bind(addr).map_err(|source| TestsvcError::Bind { addr, source })
}

/// Where a server writes its per-connection lines: [`super::output::out`] in the
/// binary, a no-op in tests.
pub type LogFn = fn(fmt::Arguments<'_>);

/// Serves `mode` on an already bound listener, forever. Connection errors are
/// logged and never end the loop.
pub fn serve(listener: &TcpListener, mode: ServerMode, hostname: &str, log: LogFn) -> ! {
    let hostname: Arc<str> = Arc::from(hostname);
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(err) => {
                log(format_args!("{}: accept failed: {err}", mode.name()));
                thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        let hostname = Arc::clone(&hostname);
        let spawned = thread::Builder::new()
            .name(format!("conn-{peer}"))
            .spawn(move || handle(stream, peer, mode, &hostname, log));
        if let Err(err) = spawned {
            log(format_args!(
                "{}: dropping connection from {peer}: {err}",
                mode.name()
            ));
        }
    }
}

/// Runs one connection to its end and logs what happened.
fn handle(stream: TcpStream, peer: SocketAddr, mode: ServerMode, hostname: &str, log: LogFn) {
    // Small answers (http) go out at once instead of waiting on Nagle.
    let _ = stream.set_nodelay(true);
    let mut conn = Conn::new(stream);
    let result = match mode {
        ServerMode::Echo => streams::echo(&mut conn),
        ServerMode::Http => http::serve(&mut conn, hostname),
        ServerMode::Sink => streams::sink(&mut conn),
        ServerMode::Source(len) => streams::source(&mut conn, len),
    };
    let traffic = conn.traffic();
    let status = match result {
        Ok(()) => "ok".to_owned(),
        Err(err) => format!("error: {err}"),
    };
    log(format_args!(
        "{} connection from {peer} closed: in={} out={} {status}",
        mode.name(),
        traffic.bytes_in,
        traffic.bytes_out,
    ));
}

/// Starting servers in tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
    use std::thread;
    use std::time::Duration;

    use super::super::args::ServerMode;

    /// The hostname test servers report.
    pub(crate) const HOSTNAME: &str = "testhost";

    /// Serves `mode` on 127.0.0.1 on a free port, in a background thread that
    /// lives as long as the test process.
    pub(crate) fn start(mode: ServerMode) -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || super::serve(&listener, mode, HOSTNAME, |_| {}));
        addr
    }

    /// Connects with a timeout on reads, so a broken server fails the test
    /// instead of hanging it.
    pub(crate) fn connect(addr: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
    }
}
