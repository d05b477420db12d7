//! Serving and making agent-to-agent calls on the mesh's QUIC connections
//! (the framing is in `mesh_protocol::rpc`). A call that the handler answers
//! with a stream (logs) sends one frame per chunk and ends with `LogEnd`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use mesh_protocol::rpc::{self, KIND_RPC, Request, Response};
use mesh_protocol::wire;
use quinn::{Connection, RecvStream, SendStream};
use tracing::{debug, warn};

/// How the handler answers a call.
pub enum Reply {
    One(Response),
    Stream(BoxStream<'static, Response>),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::One(r) => f.debug_tuple("One").field(r).finish(),
            Reply::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// Answers calls; gets the caller's certificate name (None: unknown).
pub type RpcHandler =
    Arc<dyn Fn(Option<String>, Request) -> BoxFuture<'static, Reply> + Send + Sync>;

/// How long a peer may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot reach the peer: {0}")]
    Connect(String),
    #[error("the call failed on the way: {0}")]
    Stream(String),
    #[error("the peer sent a malformed answer: {0}")]
    Wire(#[from] wire::WireError),
}

pub(crate) async fn read_frame<T: serde::de::DeserializeOwned>(
    recv: &mut RecvStream,
) -> Result<Option<T>, CallError> {
    let mut prefix = [0u8; 4];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(CallError::Stream(e.to_string())),
    }
    let len = rpc::frame_len(prefix)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| CallError::Stream(e.to_string()))?;
    Ok(Some(wire::decode(&body)?))
}

pub(crate) async fn write_frame<T: serde::Serialize>(
    send: &mut SendStream,
    msg: &T,
) -> Result<(), CallError> {
    let bytes = rpc::frame(msg)?;
    send.write_all(&bytes)
        .await
        .map_err(|e| CallError::Stream(e.to_string()))
}

/// Serves one call (its kind byte already read): reads the request,
/// answers, finishes.
pub async fn serve_call(
    mut send: SendStream,
    mut recv: RecvStream,
    caller: Option<String>,
    handler: RpcHandler,
) {
    let request = tokio::time::timeout(REQUEST_TIMEOUT, async {
        read_frame::<Request>(&mut recv)
            .await?
            .ok_or_else(|| CallError::Stream("no request".into()))
    })
    .await;
    let request = match request {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            warn!(caller = ?caller, error = %e, "refused a malformed call");
            let _ = write_frame(&mut send, &Response::Error(e.to_string())).await;
            let _ = send.finish();
            return;
        }
        Err(_) => {
            warn!(caller = ?caller, "a caller sent no request in time");
            return;
        }
    };
    debug!(caller = ?caller, ?request, "call");
    let result = match handler(caller, request).await {
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

async fn open(conn: &Connection, request: &Request) -> Result<RecvStream, CallError> {
    let (mut send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| CallError::Connect(e.to_string()))?;
    send.write_all(&[KIND_RPC])
        .await
        .map_err(|e| CallError::Stream(e.to_string()))?;
    write_frame(&mut send, request).await?;
    send.finish()
        .map_err(|e| CallError::Stream(e.to_string()))?;
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
        read_frame(&mut recv)
            .await?
            .ok_or_else(|| CallError::Stream("the peer closed without answering".into()))
    })
    .await
    .map_err(|_| CallError::Stream(format!("no answer within {timeout:?}")))?
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
