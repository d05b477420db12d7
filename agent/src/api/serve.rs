//! Serving the API over HTTP/1, plain or over TLS (`--api-tls`, with
//! tokio-rustls), with bounds on what one client can hold: the TLS
//! handshake and a request's head must arrive within `HEADER_TIMEOUT` and
//! its body within `BODY_TIMEOUT` and `MAX_BODY` bytes, so a slow or
//! endless client is cut (408, 413, or the connection closed) instead of
//! holding a connection, a task and memory for as long as it likes. A
//! client certificate the handshake verified against the cluster CA goes
//! to every request of its connection as a [`ClientCert`], which `auth`
//! turns into the caller (or refuses: a node's certificate is no API
//! credential). Shutdown stops accepting and lets the connections in
//! flight finish.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use mesh_protocol::api::MAX_BODY;
use mesh_protocol::auth::Caller;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use tracing::{debug, info, warn};

use super::ApiError;

/// How long a client may take to send a request's line and headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's body (at most
/// `MAX_BODY` bytes).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(20);
/// The pause after a failed accept (out of file descriptors, say) before
/// the next, so the loop does not spin while connections close.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The client certificate a connection showed: the caller it stands for,
/// or why it is not an API credential.
#[derive(Debug, Clone)]
pub struct ClientCert(pub Result<Caller, String>);

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown`, then
/// waits for the connections in flight to finish.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let acceptor = tls.map(TlsAcceptor::from);
    let connections = TaskTracker::new();
    // Accept errors recur every try while they last: said once a reason.
    let mut failing = crate::repeat::RepeatGate::default();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    match failing.failed(&e.to_string()) {
                        Some(None) => warn!(error = %e, "the API could not accept a connection; retrying (said again when the reason changes)"),
                        Some(Some(before)) => warn!(error = %e, before = %before.reason, repeats = before.repeats, "the API could not accept a connection, for another reason now; retrying"),
                        None => {}
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        if let Some(last) = failing.cleared() {
            info!(last_error = %last.reason, repeats = last.repeats, "the API accepts connections again");
        }
        let (app, http, stop) = (app.clone(), http.clone(), shutdown.clone());
        let Some(acceptor) = acceptor.clone() else {
            connections.spawn(connection(stream, None, app, http, stop, peer));
            continue;
        };
        connections.spawn(async move {
            let tls = match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return debug!(%peer, error = %e, "API TLS handshake failed"),
                Err(_) => return debug!(%peer, "API TLS handshake too slow"),
            };
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| {
                    ClientCert(mesh_protocol::pki::client_caller(leaf).map_err(|e| e.to_string()))
                });
            connection(tls, cert, app, http, stop, peer).await;
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Serves one connection's requests, each with the connection's client
/// certificate, if any; at `stop`, finishes the request in flight.
async fn connection<I>(
    io: I,
    cert: Option<ClientCert>,
    app: Router,
    http: hyper::server::conn::http1::Builder,
    stop: CancellationToken,
    peer: std::net::SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request| {
        if let Some(cert) = &cert {
            request.extensions_mut().insert(cert.clone());
        }
        app.clone().call(request)
    });
    let conn = http.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(%peer, error = %e, "API connection ended with an error");
    }
}

/// Middleware: reads the whole body within `BODY_TIMEOUT` and `MAX_BODY`
/// before the handler runs (408 if it is too slow, 413 if too large, 400
/// if the client breaks it off).
pub async fn bounded_body(request: Request, next: Next) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let read = tokio::time::timeout(BODY_TIMEOUT, read_bounded(body)).await;
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            ));
        }
    };
    Ok(next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await)
}

/// The body's bytes, refused once past `MAX_BODY`.
async fn read_bounded(body: Body) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        if buf.len() + chunk.len() > MAX_BODY {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is over the {MAX_BODY}-byte limit"),
    )
}
