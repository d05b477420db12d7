//! One accepted connection, counting the bytes each way for the log line.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// How long [`Conn::finish`] waits for the client to close after we did.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes moved over one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// A TCP stream that counts what passes through it.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    traffic: Traffic,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            traffic: Traffic::default(),
        }
    }

    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// Sends FIN: the client sees EOF after everything written so far.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    /// Closes our side gracefully when the client may still be sending:
    /// shuts down writing, then reads and discards until the client closes
    /// (or [`DRAIN_TIMEOUT`]). Closing with unread input would send a reset,
    /// which can destroy data the client has not read yet.
    pub fn finish(&mut self) -> io::Result<()> {
        self.shutdown_write()?;
        self.stream.set_read_timeout(Some(DRAIN_TIMEOUT))?;
        let mut buf = [0u8; 4096];
        // A timeout or reset here only ends the drain early.
        while matches!(self.read(&mut buf), Ok(1..)) {}
        Ok(())
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.traffic.bytes_in += n as u64;
        Ok(n)
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.stream.write(buf)?;
        self.traffic.bytes_out += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}
