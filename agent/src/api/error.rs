//! Error answers: a status code and `{"error": "..."}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mesh_protocol::api::{BodyError, ErrorBody};

use mesh_protocol::rpc::ErrorKind;

use crate::supervisor::SupervisorError;
use crate::tasks::TaskError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        let status = match e {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, e.to_string())
    }
}

/// The status code of a failure of this kind, whichever node it happened
/// on.
pub fn status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Impossible => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Busy | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        // A peer refused this node: the mesh is misconfigured, not the
        // request.
        ErrorKind::Unauthenticated => StatusCode::BAD_GATEWAY,
        // The node's disk failed: nothing was kept.
        ErrorKind::Storage => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<TaskError> for ApiError {
    fn from(e: TaskError) -> Self {
        Self {
            status: status(e.kind()),
            message: e.to_string(),
        }
    }
}

impl From<SupervisorError> for ApiError {
    fn from(e: SupervisorError) -> Self {
        TaskError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_protocol::rpc::RemoteError;

    #[test]
    fn a_failure_has_one_status_here_or_on_a_peer() {
        let here = TaskError::from(SupervisorError::NotFound("t1".into()));
        let there = TaskError::There {
            node: mesh_protocol::NodeId::new("n2").unwrap(),
            error: SupervisorError::NotFound("t1".into()).to_remote(),
        };
        assert_eq!(ApiError::from(here).status, StatusCode::NOT_FOUND);
        assert_eq!(ApiError::from(there).status, StatusCode::NOT_FOUND);
        let busy = TaskError::There {
            node: mesh_protocol::NodeId::new("n2").unwrap(),
            error: RemoteError::new(ErrorKind::Impossible, "asks 9 cores"),
        };
        assert_eq!(
            ApiError::from(busy).status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}
