use std::fmt;

use eventcore::{Rejection, RejectionKind};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Validation,
    NotFound,
    Conflict,
    Forbidden,
    /// The platform cannot answer now (NATS down, no instance of the service, time-out).
    Unavailable,
    /// A bug or corrupt data: logged in full, reported without details.
    Internal,
}

/// A failure as it travels between services and out of the API: a kind, a stable snake_case
/// code, and a message a person can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServiceError {
    pub kind: ErrorKind,
    pub code: String,
    pub message: String,
    /// What went wrong, item by item, when there is more than one thing (the lines of an import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ServiceError {
    pub fn new(kind: ErrorKind, code: impl Into<String>, message: impl fmt::Display) -> Self {
        ServiceError { kind, code: code.into(), message: message.to_string(), details: None }
    }

    pub fn validation(code: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Validation, code, message)
    }

    pub fn not_found(code: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NotFound, code, message)
    }

    pub fn conflict(code: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Conflict, code, message)
    }

    pub fn forbidden(code: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Forbidden, code, message)
    }

    pub fn unavailable(code: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Unavailable, code, message)
    }

    /// The same error, with what went wrong item by item.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Logs the details and returns an error that does not leak them.
    pub fn internal(context: &str, detail: impl fmt::Display) -> Self {
        tracing::error!(context, detail = %detail, "internal error");
        Self::new(ErrorKind::Internal, "internal", format!("internal error while {context}"))
    }
}

impl From<Rejection> for ServiceError {
    fn from(r: Rejection) -> Self {
        let kind = match r.kind {
            RejectionKind::Validation => ErrorKind::Validation,
            RejectionKind::NotFound => ErrorKind::NotFound,
            RejectionKind::Conflict => ErrorKind::Conflict,
            RejectionKind::Forbidden => ErrorKind::Forbidden,
        };
        ServiceError { kind, code: r.code, message: r.message, details: None }
    }
}
