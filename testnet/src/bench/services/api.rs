//! One agent's services API as the benchmark uses it: define a service, and
//! read every node's figures.

use std::time::Duration;

use mesh_protocol::api::ServiceView;
use mesh_protocol::service::ServiceRequest;

use crate::bench::BenchError;

/// One call (a list asks every peer, which may take its 3 s timeout).
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub(super) struct ServiceApi {
    http: reqwest::Client,
    base: String,
}

impl ServiceApi {
    pub(super) fn new(base: String) -> Result<Self, BenchError> {
        let http = reqwest::Client::builder()
            // The agents are on a local bridge; no proxy.
            .no_proxy()
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(BenchError::Client)?;
        Ok(Self { http, base })
    }

    /// `POST /v1/services`.
    pub(super) async fn create(&self, request: &ServiceRequest) -> Result<(), BenchError> {
        let url = format!("{}/v1/services", self.base);
        let response = self.http.post(&url).json(request).send().await;
        check(response, "POST", &url).await.map(drop)
    }

    /// `GET /v1/services`: every service with every reachable node's figures.
    pub(super) async fn list(&self) -> Result<Vec<ServiceView>, BenchError> {
        let url = format!("{}/v1/services", self.base);
        let response = check(self.http.get(&url).send().await, "GET", &url).await?;
        response.json().await.map_err(|source| BenchError::Http {
            request: format!("GET {url}"),
            source,
        })
    }
}

async fn check(
    response: reqwest::Result<reqwest::Response>,
    method: &str,
    url: &str,
) -> Result<reqwest::Response, BenchError> {
    let request = || format!("{method} {url}");
    let response = response.map_err(|source| BenchError::Http {
        request: request(),
        source,
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    Err(BenchError::Status {
        request: request(),
        status,
        body: response.text().await.unwrap_or_default(),
    })
}
