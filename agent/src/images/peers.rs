//! The asking side of images shared between peers, behind a narrow trait
//! ([`ImagePeers`]): which live peers hold an image, or are getting it (a
//! `HasImage` call to each of a few), and the stream of its tarball from
//! one of them. The
//! mesh implements it ([`MeshPeers`]); tests give fakes.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use mesh_protocol::NodeId;
use mesh_protocol::image::first::Getting;
use mesh_protocol::image::share::peers_to_ask;
use mesh_protocol::rpc::{HeldImage, ImageAsk, ImageReply, Request, Response};
use tokio::io::AsyncReadExt;
use tracing::debug;

use crate::mesh::Mesh;
use crate::mesh::rpc::{read_frame, write_frame};
use crate::runtime::TarStream;

/// How long a peer may take to say whether it holds an image.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a peer may take to start sending an image.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the image's bytes may stall before the fetch is given up.
const STALL: Duration = Duration::from_secs(60);
/// Most bytes handed on at a time: each read takes all the stream holds,
/// up to this. QUIC delivers a packet's worth (about 1.2 KiB) per frame;
/// handed on one by one, each became a chunk of the HTTP body into
/// `docker load` (a write to its socket, and wakeups on the way).
const CHUNK: usize = 1024 * 1024;
/// Below this much room left in the read buffer, a new one is taken, so
/// reads stay large.
const MIN_ROOM: usize = CHUNK / 4;

/// A live peer that says it holds an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub node: NodeId,
    pub addr: SocketAddr,
    pub image: HeldImage,
}

/// What the peers asked said of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asked {
    /// Those that hold it, in the order to try.
    pub holders: Vec<Holder>,
    /// Those that are getting it now.
    pub getting: Vec<Getting>,
}

/// Why a peer did not send an image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

/// Peers as the fetch of an image sees them.
pub trait ImagePeers: Send + Sync + 'static {
    /// This node.
    fn me(&self) -> NodeId;

    /// What a few live peers say of `image` (a name): which hold it, which
    /// are getting it.
    fn ask<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Asked>;

    /// The tarball of `holder`'s image (by its id): its announced size and
    /// its bytes as they come.
    fn fetch<'a>(
        &'a self,
        holder: &'a Holder,
    ) -> BoxFuture<'a, Result<(u64, TarStream), FetchError>>;
}

/// [`ImagePeers`] over the mesh's QUIC connections.
#[derive(Debug, Clone)]
pub struct MeshPeers(pub Mesh);

impl ImagePeers for MeshPeers {
    fn me(&self) -> NodeId {
        self.0.node()
    }

    fn ask<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Asked> {
        Box::pin(async move {
            let live = self.0.live_peers().await;
            let nodes: Vec<NodeId> = live.iter().map(|(n, _)| n.clone()).collect();
            let asks = peers_to_ask(&nodes, image).into_iter().filter_map(|node| {
                let addr = live.iter().find(|(n, _)| *n == node)?.1;
                Some(async move {
                    let request = Request::HasImage(image.to_owned());
                    match self.0.call(&node, addr, &request, ASK_TIMEOUT).await {
                        Ok(Response::HasImage(Some(image))) => {
                            Some(Answer::Holds(Holder { node, addr, image }))
                        }
                        Ok(Response::ImagePulling { downloading }) => {
                            Some(Answer::Getting(Getting { node, downloading }))
                        }
                        other => {
                            debug!(peer = %node, answer = ?other.map(|_| ()), "peer does not offer the image");
                            None
                        }
                    }
                })
            });
            let mut asked = Asked::default();
            for answer in futures_util::future::join_all(asks)
                .await
                .into_iter()
                .flatten()
            {
                match answer {
                    Answer::Holds(h) => asked.holders.push(h),
                    Answer::Getting(g) => asked.getting.push(g),
                }
            }
            asked
        })
    }

    fn fetch<'a>(
        &'a self,
        holder: &'a Holder,
    ) -> BoxFuture<'a, Result<(u64, TarStream), FetchError>> {
        Box::pin(async move {
            let why = |e: &dyn std::fmt::Display| FetchError(format!("{}: {e}", holder.node));
            let (mut send, mut recv) = self
                .0
                .open_image(&holder.node, holder.addr)
                .await
                .map_err(|e| why(&e))?;
            let ask = ImageAsk {
                id: holder.image.id.clone(),
            };
            write_frame(&mut send, &ask).await.map_err(|e| why(&e))?;
            let _ = send.finish();
            let reply = tokio::time::timeout(REPLY_TIMEOUT, read_frame::<ImageReply>(&mut recv))
                .await
                .map_err(|_| why(&"no answer in time"))?
                .map_err(|e| why(&e))?;
            match reply {
                Some(ImageReply::Ready { size }) => Ok((size, bytes_of(recv))),
                Some(ImageReply::Busy(m)) => Err(why(&format!("busy: {m}"))),
                Some(ImageReply::Refused(m)) => Err(why(&format!("refused: {m}"))),
                None => Err(why(&"closed the stream without an answer")),
            }
        })
    }
}

enum Answer {
    Holds(Holder),
    Getting(Getting),
}

/// The stream's bytes until the peer finishes it, in chunks of what had
/// arrived at each read (at most [`CHUNK`]); a reset or a stall is an
/// error, so a cut tarball is never taken for whole.
fn bytes_of(recv: quinn::RecvStream) -> TarStream {
    futures_util::stream::unfold(Some((recv, BytesMut::new())), |state| async move {
        let (mut recv, mut buf) = state?;
        if buf.capacity() < MIN_ROOM {
            // The old buffer's filled part lives on in the chunks handed on.
            buf = BytesMut::with_capacity(CHUNK);
        }
        match tokio::time::timeout(STALL, recv.read_buf(&mut buf)).await {
            Ok(Ok(0)) => None,
            Ok(Ok(_)) => Some((Ok(buf.split().freeze()), Some((recv, buf)))),
            Ok(Err(e)) => Some((Err(e), None)),
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the peer sent nothing for {STALL:?}"),
                )),
                None,
            )),
        }
    })
    .boxed()
}
