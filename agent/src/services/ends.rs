//! The two ends a connection's bytes move between: a TCP socket half (the
//! client's, or a container's) and a QUIC stream (to or from a peer).
//!
//! Neither holds a buffer while it waits: a TCP end waits for readiness
//! and only then takes a buffer for what is there, and a QUIC end takes the
//! chunks quinn already holds. So a held, idle connection costs no buffer
//! at all, and bytes read from a socket go onto a QUIC stream without
//! another copy (quinn keeps the chunk until the peer acknowledges it).

use std::io::{self, IoSlice};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{ReadHalf, WriteHalf};

/// A socket read starts with this much room, and grows (doubling) to
/// `LARGE` while reads fill it, back down while they do not.
const SMALL: usize = 4 * 1024;
const LARGE: usize = 128 * 1024;
/// A read that fills at most this share of its buffer is copied to a buffer
/// of its own size, so a small message does not keep a large buffer alive
/// while it waits for the peer's acknowledgement.
const COPY_BELOW: usize = 4;
/// At most this many received QUIC chunks go out in one socket write.
const BATCH: usize = 16;

/// Where one direction's bytes come from.
#[derive(Debug)]
pub enum Source<'a> {
    Tcp { half: ReadHalf<'a>, size: usize },
    Quic(&'a mut quinn::RecvStream),
}

/// Where one direction's bytes go.
#[derive(Debug)]
pub enum Sink<'a> {
    Tcp(WriteHalf<'a>),
    Quic(&'a mut quinn::SendStream),
}

impl<'a> Source<'a> {
    pub fn tcp(half: ReadHalf<'a>) -> Self {
        Source::Tcp { half, size: SMALL }
    }

    /// Waits for bytes, then appends what is there to `out` (one chunk or
    /// more). `Ok(false)` at the end of the stream; a reset is an error.
    pub async fn read(&mut self, out: &mut Vec<Bytes>) -> io::Result<bool> {
        match self {
            Source::Tcp { half, size } => loop {
                half.readable().await?;
                let mut buf = BytesMut::with_capacity(*size);
                match half.try_read_buf(&mut buf) {
                    Ok(0) => return Ok(false),
                    Ok(n) => {
                        *size = next_size(*size, n);
                        out.push(trimmed(buf));
                        return Ok(true);
                    }
                    // Readiness was stale: wait again, holding nothing.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            },
            Source::Quic(recv) => {
                match recv.read_chunk(usize::MAX, true).await {
                    Ok(Some(chunk)) => out.push(chunk.bytes),
                    Ok(None) => return Ok(false),
                    Err(e) => return Err(e.into()),
                }
                // Whatever else has arrived already goes in the same write
                // (quinn hands out one received frame per chunk). The end
                // of the stream, if it is there, is seen on the next read.
                while out.len() < BATCH {
                    match recv.read_chunk(usize::MAX, true).now_or_never() {
                        Some(Ok(Some(chunk))) => out.push(chunk.bytes),
                        _ => break,
                    }
                }
                Ok(true)
            }
        }
    }
}

/// The room for the next socket read after one of `n` bytes into `size`.
fn next_size(size: usize, n: usize) -> usize {
    if n == size {
        (size * 2).min(LARGE)
    } else if n * COPY_BELOW <= size {
        (size / 2).max(SMALL)
    } else {
        size
    }
}

/// `buf` as a chunk, copied out when it fills only a small part of its
/// buffer (see `COPY_BELOW`).
fn trimmed(buf: BytesMut) -> Bytes {
    if buf.len() * COPY_BELOW <= buf.capacity() {
        Bytes::copy_from_slice(&buf)
    } else {
        buf.freeze()
    }
}

impl Sink<'_> {
    /// Writes every chunk of `chunks`, emptying it.
    pub async fn write(&mut self, chunks: &mut Vec<Bytes>) -> io::Result<()> {
        match self {
            Sink::Tcp(half) => {
                if let [one] = chunks.as_mut_slice() {
                    half.write_all(one).await?;
                } else {
                    write_all_vectored(half, chunks).await?;
                }
            }
            Sink::Quic(send) => send.write_all_chunks(chunks).await?,
        }
        chunks.clear();
        Ok(())
    }

    /// A future that resolves when the far end will read no more: a QUIC
    /// peer stopped the stream (it gave the connection up) or the
    /// connection is lost. Never, for a TCP end, where a write tells. It
    /// borrows nothing, so one serves a whole direction (quinn registers
    /// it once).
    pub fn stopped(&self) -> Stopped {
        Stopped(match self {
            Sink::Tcp(_) => None,
            Sink::Quic(send) => {
                let stopped = send.stopped();
                Some(Box::pin(async move {
                    let _ = stopped.await;
                }))
            }
        })
    }

    /// Says end-of-stream to the other side (a TCP half-close, a QUIC
    /// FIN); the other direction goes on.
    pub async fn finish(&mut self) {
        match self {
            Sink::Tcp(half) => {
                let _ = half.shutdown().await;
            }
            Sink::Quic(send) => {
                let _ = send.finish();
            }
        }
    }
}

/// See [`Sink::stopped`]. Quinn's wait is boxed (about 200 bytes, only
/// toward a QUIC peer), so a direction toward a TCP socket, which never
/// needs it, keeps a pointer in its state for every held connection, not
/// the whole wait.
pub struct Stopped(Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>);

impl std::fmt::Debug for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Stopped")
            .field(&self.0.as_ref().map(|_| "quic"))
            .finish()
    }
}

impl Future for Stopped {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        match self.0.as_mut() {
            Some(wait) => wait.as_mut().poll(cx),
            None => std::task::Poll::Pending,
        }
    }
}

/// Writes all of `chunks` with as few system calls as the socket allows.
async fn write_all_vectored(half: &mut WriteHalf<'_>, chunks: &mut [Bytes]) -> io::Result<()> {
    let mut first = 0;
    while first < chunks.len() {
        let slices: Vec<IoSlice<'_>> = chunks[first..].iter().map(|c| IoSlice::new(c)).collect();
        let mut n = half.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let c = &mut chunks[first];
            let step = n.min(c.len());
            c.advance(step);
            n -= step;
            if c.is_empty() {
                first += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_grow_while_they_fill_and_shrink_when_they_do_not() {
        assert_eq!(next_size(SMALL, SMALL), 2 * SMALL);
        assert_eq!(next_size(LARGE, LARGE), LARGE);
        assert_eq!(next_size(4 * SMALL, SMALL), 2 * SMALL);
        assert_eq!(next_size(SMALL, 1), SMALL);
        assert_eq!(next_size(4 * SMALL, 3 * SMALL), 4 * SMALL);
    }

    #[test]
    fn a_small_read_leaves_its_large_buffer_behind() {
        let mut big = BytesMut::with_capacity(LARGE);
        big.extend_from_slice(b"hello");
        let chunk = trimmed(big);
        assert_eq!(&chunk[..], b"hello");
        let mut full = BytesMut::with_capacity(SMALL);
        full.extend_from_slice(&[7u8; SMALL]);
        let ptr = full.as_ptr();
        let kept = trimmed(full);
        assert_eq!(kept.as_ptr(), ptr, "a full buffer is passed on, not copied");
    }

    #[tokio::test]
    async fn many_chunks_go_out_whole_and_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(tokio::net::TcpStream::connect(addr), async {
            listener.accept().await.unwrap().0
        });
        let (mut client, mut server) = (client.unwrap(), server);
        let mut chunks: Vec<Bytes> = (0..40u8)
            .map(|i| Bytes::from(vec![i; 1000 + i as usize * 997]))
            .collect();
        let expected: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut server, &mut got)
                .await
                .unwrap();
            got
        });
        let (_, w) = client.split();
        let mut sink = Sink::Tcp(w);
        sink.write(&mut chunks).await.unwrap();
        assert!(chunks.is_empty());
        sink.finish().await;
        assert_eq!(reader.await.unwrap(), expected);
    }
}
