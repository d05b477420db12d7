//! The agent's HTTP API as tests use it: `meshctl`'s client, with the
//! test's way of failing (a panic that says what the agent answered).
//!
//! Every request the client cannot make yet (bodies that are not valid
//! requests, `scope=local`, ids that are not task ids) is a raw call here
//! and nowhere else, so moving them onto the client is one file.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use mesh_protocol::api::{
    ConnectionView, Health, NodeView, ServiceView, SubmitRequest, SubmitResponse,
};
use mesh_protocol::gossip::PeerView;
use mesh_protocol::service::{ServiceDef, ServiceRequest};
use mesh_protocol::{TaskId, TaskRecord, TaskState};
use meshctl::client::{Client, ClientError, Killed};

use super::wait::wait_until;

/// What the agent refused a request with.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

/// The refusal a request met; fails the test if it was accepted or never
/// got an answer.
pub fn refusal<T: Debug>(answer: Result<T, ClientError>) -> Refusal {
    match answer {
        Err(ClientError::Agent { status, message }) => Refusal {
            status: status.as_u16(),
            message,
        },
        Err(ClientError::Status { status, body, .. }) => Refusal {
            status: status.as_u16(),
            message: body,
        },
        other => panic!("expected the agent to refuse, got {other:?}"),
    }
}

/// One agent's API.
#[derive(Debug, Clone)]
pub struct Api {
    client: Client,
    base: String,
    raw: reqwest::Client,
    token: Option<String>,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api::with_token(addr, None)
    }

    /// An API whose calls send `token` as their bearer token.
    pub fn with_token(addr: SocketAddr, token: Option<String>) -> Api {
        let base = format!("http://{addr}");
        let client = Client::new(base.parse().expect("an API address is a node URL"))
            .expect("meshctl's HTTP client")
            .with_token(token.clone());
        Api {
            client,
            base,
            raw: reqwest::Client::new(),
            token,
        }
    }

    /// The client itself, for requests whose refusal is the point.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn submit(&self, req: &SubmitRequest) -> SubmitResponse {
        self.client
            .submit(req)
            .await
            .unwrap_or_else(|e| panic!("submit refused: {e}"))
    }

    /// A submission the agent must refuse, and how it did.
    pub async fn submit_refused(&self, req: &SubmitRequest) -> Refusal {
        refusal(self.client.submit(req).await)
    }

    pub async fn task(&self, id: &TaskId) -> TaskRecord {
        self.client
            .task(id)
            .await
            .unwrap_or_else(|e| panic!("task {id}: {e}"))
    }

    pub async fn tasks(&self) -> Vec<TaskRecord> {
        self.client.tasks().await.expect("the mesh's tasks")
    }

    pub async fn node(&self) -> NodeView {
        self.client.node().await.expect("the node view")
    }

    pub async fn health(&self) -> Health {
        self.client.health().await.expect("the agent's health")
    }

    pub async fn peers(&self) -> Vec<PeerView> {
        self.client.peers().await.expect("the agent's peers")
    }

    pub async fn kill(&self, id: &TaskId) -> Killed {
        self.client
            .kill(id)
            .await
            .unwrap_or_else(|e| panic!("kill {id}: {e}"))
    }

    /// The task's output so far (or, following, until it ends).
    pub async fn logs(&self, id: &TaskId, follow: bool) -> String {
        let mut stream = self
            .client
            .logs(id, follow)
            .await
            .unwrap_or_else(|e| panic!("logs of {id}: {e}"));
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.expect("the log stream"));
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    pub async fn set_draining(&self, node: &str, on: bool, migrate: bool) {
        self.client
            .set_draining(node, on, migrate)
            .await
            .unwrap_or_else(|e| panic!("drain {node} {on}: {e}"));
    }

    pub async fn create_service(&self, req: &ServiceRequest) -> ServiceDef {
        self.client
            .create_service(req)
            .await
            .unwrap_or_else(|e| panic!("service {} refused: {e}", req.name))
    }

    pub async fn remove_service(&self, name: &str) {
        self.client
            .remove_service(name)
            .await
            .unwrap_or_else(|e| panic!("removing service {name} refused: {e}"));
    }

    pub async fn services(&self) -> Vec<ServiceView> {
        self.client.services().await.expect("the services")
    }

    pub async fn connections(&self) -> Vec<ConnectionView> {
        self.client.connections().await.expect("the connections")
    }

    /// Polls until the task is in `state`; fails the test after `secs`.
    pub async fn wait_state(&self, id: &TaskId, state: TaskState, secs: u64) -> TaskRecord {
        wait_until(
            &format!("task {id} {state}"),
            Duration::from_secs(secs),
            || async {
                let t = self.task(id).await;
                if t.state == state { Ok(t) } else { Err(t) }
            },
        )
        .await
    }

    /// This node's own tasks (`scope=local`), every page.
    pub async fn local_tasks(&self) -> Vec<TaskRecord> {
        self.client
            .tasks_in(meshctl::client::Scope::Local)
            .await
            .expect("this node's tasks")
    }

    // Raw calls: requests the client cannot express.

    /// A raw request, with the token if there is one.
    fn raw(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.raw.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// GETs `path`: the status, the `mesh-next-after` header, the body.
    pub async fn get_raw(&self, path: &str) -> (u16, Option<String>, String) {
        let r = self
            .raw(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let next = r
            .headers()
            .get(mesh_protocol::api::NEXT_AFTER)
            .map(|v| v.to_str().expect("a text header").to_owned());
        (
            r.status().as_u16(),
            next,
            r.text().await.expect("the answer's body"),
        )
    }

    /// POSTs `body` as JSON to `path`, whatever it holds.
    pub async fn post_raw(&self, path: &str, body: &str) -> (u16, String) {
        let r = self
            .raw(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = r.status().as_u16();
        (status, r.text().await.expect("the answer's body"))
    }
}
