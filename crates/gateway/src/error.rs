use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use runtime::{ErrorKind, ServiceError};
use serde::Serialize;
use utoipa::ToSchema;

/// Every failure the API returns: `{ "code": ..., "message": ... }` with a stable code.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    /// Stable, machine-readable, snake_case.
    pub code: String,
    /// For people; may change between versions.
    pub message: String,
    /// What went wrong item by item, when there is more than one thing: for an import, one
    /// `{line, column, code, message}` per error.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Self {
        ApiError { status, code: code.to_owned(), message: message.to_string(), details: None }
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid bearer token is required (Authorization: Bearer fa_...)",
        )
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let status = match e.kind {
            ErrorKind::Validation => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError { status, code: e.code, message: e.message, details: e.details }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = %self.code, message = %self.message, "request failed");
        }
        let code = crate::metrics::ErrorCode(self.code.clone());
        let mut response = (self.status, Json(self)).into_response();
        response.extensions_mut().insert(code);
        response
    }
}
