use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DomainEvent;

/// A consistency boundary: all the facts about one donor, one lot, one household.
///
/// Both methods are pure. `decide` looks at the current state and a command and answers with
/// the events that record what happened, or a [`Rejection`] saying why nothing happened. `apply`
/// folds one event into the state; it never fails, because an event is a fact that already
/// happened.
pub trait Aggregate: Default + Clone + Send + Sync + 'static {
    /// The aggregate kind, used as the middle token of its subject (`<service>.<kind>.<id>`).
    const KIND: &'static str;
    type Command: Send + Sync;
    type Event: DomainEvent;

    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Rejection>;

    fn apply(&mut self, event: &Self::Event);

    /// Rebuilds a state from a history of events.
    fn replay<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self {
        let mut state = Self::default();
        for event in events {
            state.apply(event);
        }
        state
    }
}

/// Why a command was refused: a domain answer, not an infrastructure failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionKind {
    /// The command itself is malformed or breaks a rule (quantity ≤ 0, date passed).
    Validation,
    /// The command refers to something that does not exist.
    NotFound,
    /// The command contradicts the current state (already registered, not enough stock).
    Conflict,
    /// The actor may not do this.
    Forbidden,
}

/// A command refused by the domain, with a stable machine-readable `code` (snake_case) and a
/// message meant for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    pub kind: RejectionKind,
    pub code: String,
    pub message: String,
}

impl Rejection {
    pub fn new(kind: RejectionKind, code: impl Into<String>, message: impl fmt::Display) -> Self {
        Rejection { kind, code: code.into(), message: message.to_string() }
    }

    pub fn validation(code: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::new(RejectionKind::Validation, code, message)
    }

    pub fn not_found(code: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::new(RejectionKind::NotFound, code, message)
    }

    pub fn conflict(code: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::new(RejectionKind::Conflict, code, message)
    }

    pub fn forbidden(code: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::new(RejectionKind::Forbidden, code, message)
    }
}
