//! A typed client for the agent's HTTP+JSON control API: one method per
//! endpoint of `mesh_protocol::api`, each returning the protocol's own types
//! or a [`ClientError`] that carries what the agent said and, for a refusal,
//! its HTTP status ([`ClientError::status`]). meshctl uses it, and so do the
//! tests and benchmarks: it is the one client of the API.

use std::error::Error as StdError;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use mesh_protocol::api::{CopyStatus, ErrorBody, Health, NodeView, SubmitRequest, SubmitResponse};
use mesh_protocol::attempts::TaskView;
use mesh_protocol::gossip::PeerView;
use mesh_protocol::{TaskId, TaskRecord};
use reqwest::{Method, Response, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::node_url::NodeUrl;

/// The HTTP status of a refusal, as [`ClientError::status`] gives it.
pub use reqwest::StatusCode;

/// How long to wait for the agent to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one non-streaming request may take in all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a non-JSON error body is worth showing.
const MAX_SHOWN_BODY: usize = 2_000;
/// How often [`Client::wait_for`] asks for the task's state.
const WAIT_POLL: Duration = Duration::from_millis(200);

mod error;
mod events;
pub use error::ClientError;
pub use events::EventsAsk;

/// Which tasks `GET /v1/tasks` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every node's tasks: the agent asks its live peers.
    Mesh,
    /// Only the tasks of the node asked.
    Local,
}

/// What meshctl needs to talk HTTPS to an agent started with `--api-tls`.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The cluster CA (PEM): the agent's certificate must chain to it.
    pub ca_pem: Vec<u8>,
    /// A client certificate and its key (PEM, one after the other), shown
    /// as the caller's credential; None: a bearer token or nothing.
    pub identity_pem: Option<Vec<u8>>,
}

/// A client of one agent.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    node: NodeUrl,
    /// How long one non-streaming request may take in all.
    request_timeout: Duration,
    /// The bearer token sent with every request, if any.
    token: Option<String>,
}

impl Client {
    /// A client that waits 5 s for a connection and 30 s for an answer.
    pub fn new(node: NodeUrl) -> Result<Self, ClientError> {
        Self::with_timeouts(node, CONNECT_TIMEOUT, REQUEST_TIMEOUT)
    }

    /// A client with its own time limits, for callers that poll and would
    /// rather give up on an agent soon and ask again (the testnet harness).
    /// Following logs has no limit either way.
    pub fn with_timeouts(
        node: NodeUrl,
        connect: Duration,
        request: Duration,
    ) -> Result<Self, ClientError> {
        Self::build(node, base(connect), request)
    }

    /// A client that talks HTTPS to an agent started with `--api-tls`,
    /// trusting the cluster CA only, and shows a client certificate if
    /// given one; otherwise as [`Client::new`].
    pub fn with_tls(node: NodeUrl, tls: &ClientTls) -> Result<Self, ClientError> {
        let setup = |e: reqwest::Error| ClientError::Setup(causes(&e));
        let ca = reqwest::Certificate::from_pem(&tls.ca_pem).map_err(setup)?;
        let mut builder = base(CONNECT_TIMEOUT)
            .tls_certs_only([ca])
            // An agent's certificate names its node, not the address
            // dialled: what is checked is that it chains to the cluster CA.
            .tls_danger_accept_invalid_hostnames(true);
        if let Some(pem) = &tls.identity_pem {
            builder = builder.identity(reqwest::Identity::from_pem(pem).map_err(setup)?);
        }
        Self::build(node.secure(), builder, REQUEST_TIMEOUT)
    }

    fn build(
        node: NodeUrl,
        builder: reqwest::ClientBuilder,
        request: Duration,
    ) -> Result<Self, ClientError> {
        let http = builder
            .build()
            .map_err(|e| ClientError::Setup(causes(&e)))?;
        Ok(Self {
            http,
            node,
            request_timeout: request,
            token: None,
        })
    }

    /// The same client, sending `token` (if any) as its bearer token.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// `POST /v1/tasks`
    pub async fn submit(&self, request: &SubmitRequest) -> Result<SubmitResponse, ClientError> {
        let url = self.node.endpoint(&["v1", "tasks"]);
        self.json(
            self.http.post(url.clone()).json(request),
            Method::POST,
            &url,
        )
        .await
    }

    /// `POST /v1/tasks` with `body` sent as it is, for callers that check
    /// how the agent answers a body that is not a valid `SubmitRequest`.
    pub async fn submit_body(&self, body: &str) -> Result<SubmitResponse, ClientError> {
        self.post_body(&["v1", "tasks"], body).await
    }

    /// `GET /v1/tasks`: the whole mesh's tasks.
    pub async fn tasks(&self) -> Result<Vec<TaskRecord>, ClientError> {
        self.tasks_in(Scope::Mesh).await
    }

    /// `GET /v1/tasks?scope=…`, every page.
    pub async fn tasks_in(&self, scope: Scope) -> Result<Vec<TaskRecord>, ClientError> {
        self.all_pages(scope, None).await
    }

    /// `GET /v1/tasks`, every page, as the agent sent it.
    pub async fn tasks_raw(&self) -> Result<Vec<Value>, ClientError> {
        self.all_pages(Scope::Mesh, None).await
    }

    /// `GET /v1/tasks?limit=…&after=…`: one page in id order, and the id to
    /// pass as `after` for the next one, if there is one.
    pub async fn tasks_page(
        &self,
        scope: Scope,
        limit: Option<u32>,
        after: Option<&TaskId>,
    ) -> Result<(Vec<TaskRecord>, Option<TaskId>), ClientError> {
        self.page(scope, limit, after).await
    }

    /// Follows the pages from the start to the end.
    async fn all_pages<T: DeserializeOwned>(
        &self,
        scope: Scope,
        limit: Option<u32>,
    ) -> Result<Vec<T>, ClientError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = self.page(scope, limit, after.as_ref()).await?;
            all.extend(page);
            match next {
                Some(next) if Some(&next) != after.as_ref() => after = Some(next),
                _ => return Ok(all),
            }
        }
    }

    async fn page<T: DeserializeOwned>(
        &self,
        scope: Scope,
        limit: Option<u32>,
        after: Option<&TaskId>,
    ) -> Result<(Vec<T>, Option<TaskId>), ClientError> {
        let mut url = self.node.endpoint(&["v1", "tasks"]);
        {
            let mut q = url.query_pairs_mut();
            if scope == Scope::Local {
                q.append_pair("scope", "local");
            }
            if let Some(n) = limit {
                q.append_pair("limit", &n.to_string());
            }
            if let Some(a) = after {
                q.append_pair("after", a.as_str());
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let request = describe(&Method::GET, &url);
        let response = self
            .send(self.http.get(url.clone()).timeout(self.request_timeout))
            .await?;
        let response = self.check(response, &request).await?;
        let next = response
            .headers()
            .get(mesh_protocol::api::NEXT_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| TaskId::new(v).ok());
        Ok((self.decode(response, &request).await?, next))
    }

    /// `GET /v1/tasks/{id}`
    pub async fn task(&self, id: &TaskId) -> Result<TaskRecord, ClientError> {
        self.get(&["v1", "tasks", id.as_str()]).await
    }

    /// `GET /v1/tasks/{id}/copy`: what the task's keeper holds.
    pub async fn task_copy(&self, id: &TaskId) -> Result<CopyStatus, ClientError> {
        self.get(&["v1", "tasks", id.as_str(), "copy"]).await
    }

    /// `GET /v1/tasks/{id}`, with the other attempts still running.
    pub async fn task_view(&self, id: &TaskId) -> Result<TaskView, ClientError> {
        self.get(&["v1", "tasks", id.as_str()]).await
    }

    /// `GET /v1/tasks/{id}`, as the agent sent it.
    pub async fn task_raw(&self, id: &TaskId) -> Result<Value, ClientError> {
        self.get(&["v1", "tasks", id.as_str()]).await
    }

    /// `GET /v1/tasks/{id}/logs?follow=…`: the container's output as it
    /// arrives. Without a time limit, since following may take hours.
    pub async fn logs(
        &self,
        id: &TaskId,
        follow: bool,
    ) -> Result<impl Stream<Item = Result<Bytes, ClientError>> + use<>, ClientError> {
        let mut url = self.node.endpoint(&["v1", "tasks", id.as_str(), "logs"]);
        url.query_pairs_mut()
            .append_pair("follow", if follow { "true" } else { "false" });
        let response = self.send(self.http.get(url.clone())).await?;
        let response = self.check(response, &describe(&Method::GET, &url)).await?;
        let node = self.node.to_string();
        let request = describe(&Method::GET, &url);
        Ok(response.bytes_stream().map(move |chunk| {
            chunk.map_err(|e| ClientError::Body {
                node: node.clone(),
                request: request.clone(),
                cause: causes(&e),
            })
        }))
    }

    /// `GET /v1/tasks/{id}/logs?follow=…`, read to its end: all the output
    /// so far, or with `follow` all of it once the task has ended.
    pub async fn logs_text(&self, id: &TaskId, follow: bool) -> Result<String, ClientError> {
        let mut stream = std::pin::pin!(self.logs(id, follow).await?);
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Polls `GET /v1/tasks/{id}` until `done` holds for the record, which
    /// it returns; after `timeout` (if any) gives up with
    /// [`ClientError::WaitTimeout`]. A failed poll ends the wait too.
    pub async fn wait_for(
        &self,
        id: &TaskId,
        timeout: Option<Duration>,
        done: impl Fn(&TaskRecord) -> bool,
    ) -> Result<TaskRecord, ClientError> {
        let mut last = None;
        let poll = async {
            loop {
                let record = self.task(id).await?;
                last = Some(record.state);
                if done(&record) {
                    return Ok(record);
                }
                tokio::time::sleep(WAIT_POLL).await;
            }
        };
        let Some(limit) = timeout else {
            return poll.await;
        };
        match tokio::time::timeout(limit, poll).await {
            Ok(answer) => answer,
            Err(_) => Err(ClientError::WaitTimeout {
                id: id.clone(),
                limit,
                last,
            }),
        }
    }

    /// Waits until the task has ended (see [`Client::wait_for`]).
    pub async fn wait(
        &self,
        id: &TaskId,
        timeout: Option<Duration>,
    ) -> Result<TaskRecord, ClientError> {
        self.wait_for(id, timeout, |r| r.state.is_terminal()).await
    }

    /// `POST /v1/tasks/{id}/kill`
    /// Kills a task, or every member of an array (the agent then answers
    /// with a list).
    pub async fn kill(&self, id: &TaskId) -> Result<Killed, ClientError> {
        let url = self.node.endpoint(&["v1", "tasks", id.as_str(), "kill"]);
        self.json(self.http.post(url.clone()), Method::POST, &url)
            .await
    }

    /// `POST /v1/nodes/{node}/drain` or `/undrain`.
    pub async fn set_draining(
        &self,
        node: &str,
        on: bool,
        migrate: bool,
    ) -> Result<Value, ClientError> {
        let verb = if on { "drain" } else { "undrain" };
        let mut url = self.node.endpoint(&["v1", "nodes", node, verb]);
        if migrate {
            url.set_query(Some("migrate=true"));
        }
        self.json(self.http.post(url.clone()), Method::POST, &url)
            .await
    }

    /// `POST /v1/services`
    pub async fn create_service(
        &self,
        request: &mesh_protocol::service::ServiceRequest,
    ) -> Result<mesh_protocol::service::ServiceDef, ClientError> {
        let url = self.node.endpoint(&["v1", "services"]);
        self.json(
            self.http.post(url.clone()).json(request),
            Method::POST,
            &url,
        )
        .await
    }

    /// `POST /v1/services` with `body` sent as it is, for callers that check
    /// how the agent answers a body that is not a valid `ServiceRequest`.
    pub async fn create_service_body(
        &self,
        body: &str,
    ) -> Result<mesh_protocol::service::ServiceDef, ClientError> {
        self.post_body(&["v1", "services"], body).await
    }

    /// `DELETE /v1/services/{name}`
    pub async fn remove_service(
        &self,
        name: &str,
    ) -> Result<mesh_protocol::service::ServiceDef, ClientError> {
        let url = self.node.endpoint(&["v1", "services", name]);
        self.json(self.http.delete(url.clone()), Method::DELETE, &url)
            .await
    }

    /// `GET /v1/services`, typed or (`T = Value`) as the agent sent it.
    pub async fn services<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        self.get(&["v1", "services"]).await
    }

    /// `GET /v1/services/{name}`
    pub async fn service<T: DeserializeOwned>(&self, name: &str) -> Result<T, ClientError> {
        self.get(&["v1", "services", name]).await
    }

    /// `GET /v1/connections`
    pub async fn connections<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        self.get(&["v1", "connections"]).await
    }

    /// `GET /v1/node`
    pub async fn node(&self) -> Result<NodeView, ClientError> {
        self.get(&["v1", "node"]).await
    }

    /// `GET /v1/node`, as the agent sent it.
    pub async fn node_raw(&self) -> Result<Value, ClientError> {
        self.get(&["v1", "node"]).await
    }

    /// `GET /v1/peers`.
    pub async fn peers(&self) -> Result<Vec<PeerView>, ClientError> {
        self.get(&["v1", "peers"]).await
    }

    /// `GET /v1/peers`, as the agent sent it.
    pub async fn peers_raw(&self) -> Result<Value, ClientError> {
        self.get(&["v1", "peers"]).await
    }

    /// `GET /v1/health`. The agent answers 503 with a `Health` body when it
    /// cannot reach Docker; that is an answer, not an error.
    pub async fn health(&self) -> Result<Health, ClientError> {
        let url = self.node.endpoint(&["v1", "health"]);
        let request = describe(&Method::GET, &url);
        let response = self
            .send(self.http.get(url).timeout(self.request_timeout))
            .await?;
        let status = response.status();
        if status != StatusCode::SERVICE_UNAVAILABLE {
            let response = self.check(response, &request).await?;
            return self.decode(response, &request).await;
        }
        let body = self.body(response, &request).await?;
        serde_json::from_slice(&body).map_err(|_| agent_error(status, &request, &body))
    }

    async fn get<T: DeserializeOwned>(&self, path: &[&str]) -> Result<T, ClientError> {
        let url = self.node.endpoint(path);
        self.json(self.http.get(url.clone()), Method::GET, &url)
            .await
    }

    /// POSTs `body` as JSON text, unchecked.
    async fn post_body<T: DeserializeOwned>(
        &self,
        path: &[&str],
        body: &str,
    ) -> Result<T, ClientError> {
        let url = self.node.endpoint(path);
        let builder = self
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_owned());
        self.json(builder, Method::POST, &url).await
    }

    /// Sends a request and decodes its successful JSON answer.
    async fn json<T: DeserializeOwned>(
        &self,
        builder: reqwest::RequestBuilder,
        method: Method,
        url: &Url,
    ) -> Result<T, ClientError> {
        let request = describe(&method, url);
        let response = self.send(builder.timeout(self.request_timeout)).await?;
        let response = self.check(response, &request).await?;
        self.decode(response, &request).await
    }

    async fn send(&self, builder: reqwest::RequestBuilder) -> Result<Response, ClientError> {
        let builder = match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        };
        builder.send().await.map_err(|e| ClientError::Unreachable {
            node: self.node.to_string(),
            cause: causes(&e),
        })
    }

    /// Passes a 2xx answer through; turns any other into the agent's error.
    async fn check(&self, response: Response, request: &str) -> Result<Response, ClientError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = self.body(response, request).await?;
        Err(agent_error(status, request, &body))
    }

    async fn decode<T: DeserializeOwned>(
        &self,
        response: Response,
        request: &str,
    ) -> Result<T, ClientError> {
        let body = self.body(response, request).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
            request: request.to_owned(),
            cause: e.to_string(),
        })
    }

    async fn body(&self, response: Response, request: &str) -> Result<Bytes, ClientError> {
        response.bytes().await.map_err(|e| ClientError::Body {
            node: self.node.to_string(),
            request: request.to_owned(),
            cause: causes(&e),
        })
    }
}

/// The HTTP client's settings common to plain and TLS clients.
fn base(connect: Duration) -> reqwest::ClientBuilder {
    // reqwest builds its rustls configuration, plain clients included, from
    // the process's default provider (it panics without one): ring, as
    // everywhere in Ganger. An error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(connect)
        // Agents are on the local network; a proxy set for the web in the
        // environment would only get in the way.
        .no_proxy()
}

/// The error an answer with a failure status stands for: the agent's own
/// message when it sent an `ErrorBody`, else the status and the raw body.
fn agent_error(status: StatusCode, request: &str, body: &[u8]) -> ClientError {
    if let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) {
        return ClientError::Agent {
            status,
            message: error,
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let body = match text.char_indices().nth(MAX_SHOWN_BODY) {
        _ if text.is_empty() => "(empty body)".to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    };
    ClientError::Status {
        request: request.to_owned(),
        status,
        body,
    }
}

/// `GET /v1/tasks/t1/logs?follow=true`, for messages.
fn describe(method: &Method, url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{method} {}?{q}", url.path()),
        None => format!("{method} {}", url.path()),
    }
}

/// What really went wrong behind an error: reqwest's and hyper's outer
/// messages only repeat the URL or the layer (`client error (Connect)`), the
/// innermost source says `Connection refused` or `operation timed out`.
fn causes(e: &(dyn StdError + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

/// What a kill answers: one task, or an array's members.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum Killed {
    One(Box<TaskRecord>),
    Array(Vec<TaskRecord>),
}

#[cfg(test)]
mod tests;
