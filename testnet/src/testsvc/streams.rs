//! The byte-stream servers: `echo`, `sink` and `source`, one connection each.

use std::io::{self, Read, Write};

use super::conn::Conn;
use super::fnv::{Fnv1a64, sink_reply};
use super::pattern;

const BUF_SIZE: usize = 16 * 1024;

/// Writes back every byte; when the client shuts down its write side, sends
/// the rest and shuts down ours (half-close is preserved).
pub fn echo(conn: &mut Conn) -> io::Result<()> {
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        match conn.read(&mut buf)? {
            0 => return conn.shutdown_write(),
            n => conn.write_all(&buf[..n])?,
        }
    }
}

/// Discards input; on EOF replies `<bytes> <fnv1a64 hex>\n` and closes.
pub fn sink(conn: &mut Conn) -> io::Result<()> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut hasher = Fnv1a64::new();
    let mut total = 0u64;
    loop {
        match conn.read(&mut buf)? {
            0 => break,
            n => {
                hasher.update(&buf[..n]);
                total += n as u64;
            }
        }
    }
    conn.write_all(sink_reply(total, hasher.finish()).as_bytes())?;
    conn.shutdown_write()
}

/// Writes `len` bytes of the [`pattern`], then closes.
pub fn source(conn: &mut Conn, len: u64) -> io::Result<()> {
    // 64 periods ≈ 16 KiB; a whole number of periods, so every write starts
    // where the pattern restarts.
    let chunk = pattern::chunk(64);
    let mut remaining = len;
    while remaining > 0 {
        let n = usize::try_from(remaining).map_or(chunk.len(), |r| r.min(chunk.len()));
        conn.write_all(&chunk[..n])?;
        remaining -= n as u64;
    }
    conn.finish()
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{Shutdown, SocketAddr};
    use std::thread;

    use super::super::args::ServerMode;
    use super::super::fnv::fnv1a64;
    use super::super::server::test_support::{connect, start};
    use super::*;

    /// Sends `data` on a fresh connection to `addr` and closes the sending
    /// side, from a thread of its own (so writing overlaps reading); returns
    /// all the server sent back.
    fn exchange(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
        let mut client = connect(addr);
        let mut writer = client.try_clone().unwrap();
        let sent = data.to_vec();
        let send = thread::spawn(move || {
            writer.write_all(&sent).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        client.read_to_end(&mut back).unwrap();
        send.join().unwrap();
        back
    }

    #[test]
    fn echo_returns_everything_and_keeps_half_close() {
        let addr = start(ServerMode::Echo);
        // Bigger than socket buffers, so writing must overlap reading.
        let data = pattern::chunk(4000);
        let back = exchange(addr, &data);
        assert_eq!(back.len(), data.len());
        assert!(back == data);
    }

    #[test]
    fn echo_answers_before_eof() {
        let addr = start(ServerMode::Echo);
        let mut client = connect(addr);
        client.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[test]
    fn sink_reports_count_and_hash() {
        let addr = start(ServerMode::Sink);
        let data = pattern::chunk(1000);
        let reply = String::from_utf8(exchange(addr, &data)).unwrap();
        assert_eq!(reply, format!("{} {:016x}\n", data.len(), fnv1a64(&data)));
    }

    #[test]
    fn sink_of_nothing() {
        let addr = start(ServerMode::Sink);
        let reply = String::from_utf8(exchange(addr, &[])).unwrap();
        assert_eq!(reply, "0 cbf29ce484222325\n");
    }

    #[test]
    fn source_writes_the_pattern_then_closes() {
        for len in [0u64, 1, 250, 251, 100_000] {
            let addr = start(ServerMode::Source(len));
            let mut client = connect(addr);
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            assert_eq!(got.len() as u64, len);
            assert!(pattern::is_pattern(&got), "len {len}");
        }
    }
}
