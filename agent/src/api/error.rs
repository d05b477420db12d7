//! Error answers: a status code and `{"error": "..."}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mesh_protocol::api::ErrorBody;

use crate::supervisor::SupervisorError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
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

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

impl From<SupervisorError> for ApiError {
    fn from(e: SupervisorError) -> Self {
        let status = match &e {
            SupervisorError::NotFound(_) => StatusCode::NOT_FOUND,
            SupervisorError::Invalid(_) => StatusCode::BAD_REQUEST,
            SupervisorError::Impossible(_) => StatusCode::UNPROCESSABLE_ENTITY,
            SupervisorError::Conflict(_) => StatusCode::CONFLICT,
            SupervisorError::Busy(_) | SupervisorError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self {
            status,
            message: e.to_string(),
        }
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
