//! Who is calling: every request passes [`authenticate`], which turns its
//! credential into a [`Caller`] (or answers 401), checks the role the call
//! needs (`mesh_protocol::auth::needed_role`, else 403) and hands the
//! caller to the handler as a request extension. Owner checks (kill and
//! remove) are the handlers', where the record is.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mesh_protocol::auth::{Caller, needed_role};

use super::ApiError;
use super::serve::ClientCert;

/// What the API asks of its callers.
#[derive(Debug, Clone)]
pub enum Access {
    /// No credentials: every caller is the local admin. Only on loopback
    /// or under `--insecure-dev` on a private address (`config::open_guard`).
    Open,
    /// A bearer token from the tokens file (if there is one), or a client
    /// certificate from the cluster CA carrying a role (with `--api-tls`).
    Credentials {
        tokens: Option<Arc<super::tokens::TokenFile>>,
        certs: bool,
    },
}

impl Access {
    /// The caller a request's credentials stand for: its client
    /// certificate's, else its bearer token's.
    fn identify(&self, request: &Request) -> Result<Caller, ApiError> {
        let (tokens, certs) = match self {
            Access::Open => return Ok(Caller::local()),
            Access::Credentials { tokens, certs } => (tokens, *certs),
        };
        if let Some(ClientCert(shown)) = request.extensions().get::<ClientCert>() {
            let caller = shown.clone().map_err(ApiError::unauthorized)?;
            if tokens
                .as_ref()
                .is_some_and(|t| t.get().is_revoked(&caller.user))
            {
                return Err(ApiError::unauthorized(format!(
                    "the client certificate of {} is revoked (the agent's --api-tokens file)",
                    caller.user
                )));
            }
            return Ok(caller);
        }
        let header = request.headers().get(AUTHORIZATION);
        let Some(tokens) = tokens else {
            return Err(ApiError::unauthorized(if header.is_some() {
                "this agent takes no bearer tokens: show a client certificate (meshctl --ca, --cert and --key)"
            } else {
                "no credentials: this agent's API needs a client certificate (meshctl --ca, --cert and --key; make one with `meshctl tls cert create --client NAME --role ROLE`)"
            }));
        };
        let Some(header) = header else {
            return Err(ApiError::unauthorized(if certs {
                "no credentials: this agent's API needs a bearer token (meshctl: set MESH_TOKEN or --token-file) or a client certificate (meshctl --ca, --cert and --key)"
            } else {
                "no credentials: this agent's API needs a bearer token (meshctl: set MESH_TOKEN or --token-file)"
            }));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header is not `Bearer TOKEN`")
            })?;
        tokens.get().authenticate(token).ok_or_else(|| {
            ApiError::unauthorized(
                "the bearer token is not one this agent accepts: check MESH_TOKEN or --token-file against the agent's --api-tokens file",
            )
        })
    }
}

/// The middleware: 401 without a valid credential, 403 without the role
/// the call needs; otherwise the handler runs with the [`Caller`].
pub async fn authenticate(
    State(access): State<Arc<Access>>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = match access.identify(&request) {
        Ok(caller) => caller,
        Err(e) => {
            let mut response = e.into_response();
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            return response;
        }
    };
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let needed = needed_role(&method, &path);
    if !caller.has(needed) {
        return ApiError::forbidden(format!(
            "user {} has role {}; {method} {path} needs role {needed}",
            caller.user, caller.role
        ))
        .into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}
