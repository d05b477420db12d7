//! Serving the API over HTTPS (`--api-tls`): TLS with tokio-rustls, HTTP/1.1
//! with hyper, one task per connection. A client certificate the handshake
//! verified against the cluster CA goes to every request of its connection
//! as a [`ClientCert`], which `auth` turns into the caller (or refuses: a
//! node's certificate is no API credential).

use std::sync::Arc;

use axum::Router;
use hyper_util::rt::TokioIo;
use mesh_protocol::auth::Caller;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower_service::Service;
use tracing::debug;

/// The client certificate a connection showed: the caller it stands for,
/// or why it is not an API credential.
#[derive(Debug, Clone)]
pub struct ClientCert(pub Result<Caller, String>);

/// Serves `app` on `listener` over TLS until `shutdown`; then stops
/// accepting and lets open connections finish their requests.
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(config);
    let mut connections = JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "API accept failed");
                    continue;
                }
            },
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let stop = shutdown.clone();
        connections.spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    debug!(%peer, error = %e, "API TLS handshake failed");
                    return;
                }
            };
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| {
                    ClientCert(mesh_protocol::pki::client_caller(leaf).map_err(|e| e.to_string()))
                });
            let service = hyper::service::service_fn(move |mut request| {
                if let Some(cert) = &cert {
                    request.extensions_mut().insert(cert.clone());
                }
                app.clone().call(request)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        debug!(%peer, error = %e, "API connection ended");
                    }
                }
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}
