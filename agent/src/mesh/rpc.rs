//! Serving and making agent-to-agent calls on the mesh's QUIC connections
//! (the framing is in `mesh_protocol::rpc`). A call that the handler answers
//! with a stream (logs) sends one frame per chunk and ends with `LogEnd`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use mesh_protocol::rpc::{self, ErrorKind, KIND_RPC, RemoteError, Request, Response};
use mesh_protocol::wire;
use quinn::{Connection, RecvStream, SendStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{Instrument, debug, debug_span, warn};

use super::handlers::{Caller, Handlers, Reply};
use super::transport::DialError;

/// How long a peer may take to send its request (waiting for the request
/// budget included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of requests one connection may have in flight at once (read, or
/// being answered): four frames of the largest size. Requests are a few KiB
/// (an offer carries one task record), so this never holds a peer back.
pub const REQUEST_BUDGET: usize = 4 * rpc::MAX_FRAME;
/// A frame's buffer starts at most this large and grows as bytes arrive.
const FIRST_CHUNK: usize = 16 * 1024;

/// Why a call got no answer (an answer that says the call failed is a
/// `Response::Failed`, not this).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot reach the peer: {0}")]
    Dial(#[from] DialError),
    #[error("cannot open a stream to the peer: {0}")]
    Open(#[from] quinn::ConnectionError),
    #[error("sending the call failed: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("the stream was already closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error("reading the answer failed: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("the peer closed the stream without answering")]
    NoAnswer,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the peer sent a malformed frame: {0}")]
    Wire(#[from] wire::WireError),
}

/// Reads one frame: the length prefix, then the body as its bytes arrive
/// (a length alone allocates nothing: a peer that claims 1 MiB and sends
/// nothing costs nothing). `None` if the stream ended before a frame.
pub(crate) async fn read_frame<T: serde::de::DeserializeOwned>(
    recv: &mut RecvStream,
) -> Result<Option<T>, CallError> {
    let Some(len) = read_len(recv).await? else {
        return Ok(None);
    };
    let body = read_body(recv, len).await?;
    Ok(Some(wire::decode(&body)?))
}

/// The next frame's length (checked against the frame limit), or `None`
/// if the stream ended cleanly first.
async fn read_len(recv: &mut RecvStream) -> Result<Option<usize>, CallError> {
    let mut prefix = [0u8; 4];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    Ok(Some(rpc::frame_len(prefix)?))
}

/// A frame body of `len` bytes, grown as chunks arrive.
async fn read_body(recv: &mut RecvStream, len: usize) -> Result<Vec<u8>, CallError> {
    let mut body = Vec::with_capacity(len.min(FIRST_CHUNK));
    while body.len() < len {
        let chunk = recv
            .read_chunk(len - body.len(), true)
            .await
            .map_err(quinn::ReadExactError::ReadError)?;
        match chunk {
            Some(chunk) => body.extend_from_slice(&chunk.bytes),
            None => {
                return Err(CallError::Read(quinn::ReadExactError::FinishedEarly(
                    body.len(),
                )));
            }
        }
    }
    Ok(body)
}

/// Reads a call's request, holding `len` bytes of the connection's request
/// budget from its length prefix until the returned permit is dropped (when
/// the call has been answered). A frame that does not fit waits for the
/// budget: one peer's requests in flight never hold more than the budget.
async fn read_request(
    recv: &mut RecvStream,
    budget: &Arc<Semaphore>,
) -> Result<(Request, OwnedSemaphorePermit), CallError> {
    let len = read_len(recv).await?.ok_or(CallError::NoAnswer)?;
    // A frame is at most 1 MiB, which fits in the budget and in u32.
    let want = u32::try_from(len.max(1)).unwrap_or(u32::MAX);
    let permit = budget
        .clone()
        .acquire_many_owned(want)
        .await
        .map_err(|_| CallError::NoAnswer)?;
    let body = read_body(recv, len).await?;
    Ok((wire::decode(&body)?, permit))
}

pub(crate) async fn write_frame<T: serde::Serialize>(
    send: &mut SendStream,
    msg: &T,
) -> Result<(), CallError> {
    let bytes = rpc::frame(msg)?;
    send.write_all(&bytes).await?;
    Ok(())
}

/// Serves one call (its kind byte already read): reads the request within
/// the connection's request `budget` (bytes; see [`read_request`]), hands
/// it to its topic's handler, answers, finishes.
pub async fn serve_call(
    mut send: SendStream,
    mut recv: RecvStream,
    caller: Caller,
    handlers: &Handlers,
    budget: &Arc<Semaphore>,
) {
    let request = tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut recv, budget)).await;
    let (request, _held) = match request {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            warn!(caller = ?caller, error = %e, "refused a malformed call");
            let answer = Response::Failed(RemoteError::new(
                ErrorKind::Invalid,
                format!("malformed call: {e}"),
            ));
            let _ = write_frame(&mut send, &answer).await;
            let _ = send.finish();
            return;
        }
        Err(_) => {
            warn!(caller = ?caller, "a caller sent no request in time");
            return;
        }
    };
    let topic = request.topic();
    let span = debug_span!("peer_call", caller = ?caller, %topic);
    async move {
        debug!(?request, "call");
        let reply = match handlers.calls(topic) {
            Some(handler) => handler(caller, request).await,
            None => Reply::One(Response::Failed(RemoteError::new(
                ErrorKind::Unavailable,
                format!("this node does not serve {topic} calls yet; try again shortly"),
            ))),
        };
        let result = match reply {
            Reply::One(r) => write_frame(&mut send, &r).await,
            Reply::Stream(mut s) => {
                // A stream may wait long for its next answer (a followed
                // log or event stream): it ends as soon as the caller stops
                // reading, not at the next answer.
                let stopped = send.stopped();
                tokio::pin!(stopped);
                let mut result = Ok(());
                loop {
                    let next = tokio::select! {
                        next = s.next() => next,
                        _ = &mut stopped => None,
                    };
                    let Some(r) = next else { break };
                    if let Err(e) = write_frame(&mut send, &r).await {
                        result = Err(e);
                        break;
                    }
                }
                result
            }
        };
        if let Err(e) = result {
            debug!(error = %e, "answer not delivered");
        }
        let _ = send.finish();
    }
    .instrument(span)
    .await
}

async fn open(conn: &Connection, request: &Request) -> Result<RecvStream, CallError> {
    let (mut send, recv) = conn.open_bi().await?;
    send.write_all(&[KIND_RPC]).await?;
    write_frame(&mut send, request).await?;
    send.finish()?;
    Ok(recv)
}

/// Makes a call answered by one response.
pub async fn call(
    conn: &Connection,
    request: &Request,
    timeout: Duration,
) -> Result<Response, CallError> {
    tokio::time::timeout(timeout, async {
        let mut recv = open(conn, request).await?;
        read_frame(&mut recv).await?.ok_or(CallError::NoAnswer)
    })
    .await
    .map_err(|_| CallError::Timeout(timeout))?
}

/// Makes a call answered by a stream of responses (ends at `LogEnd` or when
/// the peer closes).
pub async fn call_stream(
    conn: &Connection,
    request: &Request,
) -> Result<BoxStream<'static, Result<Response, CallError>>, CallError> {
    let recv = open(conn, request).await?;
    Ok(
        futures_util::stream::unfold(Some(recv), |state| async move {
            let mut recv = state?;
            match read_frame::<Response>(&mut recv).await {
                Ok(Some(Response::LogEnd)) | Ok(None) => None,
                Ok(Some(r)) => Some((Ok(r), Some(recv))),
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed(),
    )
}
