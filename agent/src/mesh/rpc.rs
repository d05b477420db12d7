//! Serving and making agent-to-agent calls on the mesh's QUIC connections
//! (the framing is in `mesh_protocol::rpc`). A call that the handler answers
//! with a stream (logs) sends one frame per chunk and ends with `LogEnd`.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use mesh_protocol::rpc::{self, ErrorKind, KIND_RPC, RemoteError, Request, Response};
use mesh_protocol::wire;
use quinn::{Connection, RecvStream, SendStream};
use tracing::{Instrument, debug, debug_span, warn};

use super::handlers::{Caller, Handlers, Reply};
use super::transport::DialError;

/// How long a peer may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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

pub(crate) async fn read_frame<T: serde::de::DeserializeOwned>(
    recv: &mut RecvStream,
) -> Result<Option<T>, CallError> {
    let mut prefix = [0u8; 4];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = rpc::frame_len(prefix)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await?;
    Ok(Some(wire::decode(&body)?))
}

pub(crate) async fn write_frame<T: serde::Serialize>(
    send: &mut SendStream,
    msg: &T,
) -> Result<(), CallError> {
    let bytes = rpc::frame(msg)?;
    send.write_all(&bytes).await?;
    Ok(())
}

/// Serves one call (its kind byte already read): reads the request, hands
/// it to its topic's handler, answers, finishes.
pub async fn serve_call(
    mut send: SendStream,
    mut recv: RecvStream,
    caller: Caller,
    handlers: &Handlers,
) {
    let request = tokio::time::timeout(REQUEST_TIMEOUT, async {
        read_frame::<Request>(&mut recv)
            .await?
            .ok_or(CallError::NoAnswer)
    })
    .await;
    let request = match request {
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
                let mut result = Ok(());
                while let Some(r) = s.next().await {
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
