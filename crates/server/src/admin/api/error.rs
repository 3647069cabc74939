//! [`ApiError`]: every API error is an HTTP status and a JSON body, `{"error": "...", "hint": "..."}`,
//! saying what went wrong and what to do.
//!
//! Left out: which error each handler answers (the handlers decide).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// An API error: an HTTP status and a JSON body saying what went wrong and what to do.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) body: ErrorBody,
}

#[derive(Debug, Serialize)]
pub(super) struct ErrorBody {
    pub(super) error: String,
    pub(super) hint: String,
}

impl ApiError {
    /// An error with its status, message and hint.
    pub fn new(status: StatusCode, error: impl Into<String>, hint: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                error: error.into(),
                hint: hint.into(),
            },
        }
    }

    /// A bad request (400).
    pub fn bad_request(error: impl Into<String>, hint: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, error, hint)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// The result of a handler.
pub type ApiResult<T> = Result<Json<T>, ApiError>;
