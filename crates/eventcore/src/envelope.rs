use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::EncodedEvent;

/// Version of the [`Commit`] wire format itself (not of the events inside).
pub const COMMIT_FORMAT: u32 = 1;

/// One stored event with everything needed to audit it later.
///
/// `data` stays as raw JSON text until someone decodes it into its event type: readers that
/// only route or count events do not pay for building a JSON tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub event_id: Uuid,
    pub aggregate_id: String,
    /// Number of events of this aggregate up to and including this one (first event = 1).
    pub aggregate_version: u64,
    pub event_type: String,
    pub schema_version: u32,
    /// When it happened in the world; may be supplied by a client (a driver working offline).
    pub occurred_at: DateTime<Utc>,
    /// When the platform stored it.
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub data: Box<RawValue>,
}

impl PartialEq for EventEnvelope {
    fn eq(&self, other: &Self) -> bool {
        self.event_id == other.event_id
            && self.aggregate_id == other.aggregate_id
            && self.aggregate_version == other.aggregate_version
            && self.event_type == other.event_type
            && self.schema_version == other.schema_version
            && self.occurred_at == other.occurred_at
            && self.recorded_at == other.recorded_at
            && self.actor == other.actor
            && self.correlation_id == other.correlation_id
            && self.causation_id == other.causation_id
            && self.data.get() == other.data.get()
    }
}

/// Who asked for a command, why, and under which idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandMeta {
    /// Idempotency key: the same key on the same aggregate is committed at most once.
    pub command_id: String,
    pub actor: String,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub occurred_at: Option<DateTime<Utc>>,
}

impl CommandMeta {
    /// Metadata for a command that starts a new piece of work.
    pub fn new(command_id: impl Into<String>, actor: impl Into<String>) -> Self {
        let id = Uuid::now_v7();
        CommandMeta {
            command_id: command_id.into(),
            actor: actor.into(),
            correlation_id: id,
            causation_id: id,
            occurred_at: None,
        }
    }
}

/// The events one command produced for one aggregate: stored as one JetStream message, so a
/// commit is all-or-nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    pub format: u32,
    pub command_id: String,
    pub aggregate_kind: String,
    pub aggregate_id: String,
    pub events: Vec<EventEnvelope>,
}

impl Commit {
    /// Wraps freshly decided events; `version` is the aggregate version before them.
    pub fn new(
        meta: &CommandMeta,
        aggregate_kind: &str,
        aggregate_id: &str,
        version: u64,
        events: Vec<EncodedEvent>,
        now: DateTime<Utc>,
    ) -> Commit {
        let events = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| EventEnvelope {
                event_id: Uuid::now_v7(),
                aggregate_id: aggregate_id.to_owned(),
                aggregate_version: version + 1 + i as u64,
                event_type: e.event_type,
                schema_version: e.schema_version,
                occurred_at: meta.occurred_at.unwrap_or(now),
                recorded_at: now,
                actor: meta.actor.clone(),
                correlation_id: meta.correlation_id,
                causation_id: meta.causation_id,
                data: serde_json::value::to_raw_value(&e.data).expect("JSON values serialise"),
            })
            .collect();
        Commit {
            format: COMMIT_FORMAT,
            command_id: meta.command_id.clone(),
            aggregate_kind: aggregate_kind.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            events,
        }
    }

    /// The aggregate version after this commit.
    pub fn last_version(&self) -> u64 {
        self.events.last().map_or(0, |e| e.aggregate_version)
    }
}
