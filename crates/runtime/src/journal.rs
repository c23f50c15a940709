//! The answer journal: the first answer of every command a caller sent, kept by idempotency key,
//! so that a retry gets that answer back whatever has changed since.
//!
//! The runner's per-aggregate command ids already make a repeated command on one aggregate
//! commit once. That is not enough for what a caller sees: a handler may refuse a repeat
//! before it reaches the aggregate (a parcel already requested), and a process over several
//! aggregates (a wave, an import, a list of requests) has no single aggregate to remember it.
//! So every accepted command's answer is written here, keyed by service, command, caller and
//! key, and the host looks here first, before any handler runs.
//!
//! It is a JetStream stream of its own (`answers`), one subject per key holding one message:
//! `answers.<service>.<command>.<hash of caller and key>`. Only accepted commands are written: a
//! refused command writes nothing anywhere, and its retry is decided again.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{CommandReply, CommandRequest, ServiceError};

pub const STREAM: &str = "answers";

/// One remembered answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// Hash of the request's payload: the same key with another body is not a retry.
    pub fingerprint: String,
    pub reply: CommandReply,
    pub answered_at: DateTime<Utc>,
}

/// Where one caller's key of one command is remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerKey {
    subject: String,
}

impl AnswerKey {
    pub fn new(service: &str, command: &str, request: &CommandRequest) -> AnswerKey {
        let mut hash = Sha256::new();
        hash.update(request.caller().as_bytes());
        hash.update([0]);
        hash.update(request.command_id.as_bytes());
        // 128 bits: a collision between two keys of one command is not a concern.
        let digest = hex::encode(&hash.finalize()[..16]);
        AnswerKey { subject: format!("{STREAM}.{service}.{command}.{digest}") }
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }
}

/// The hash of a request's payload that decides whether a repeat is the same request.
pub fn fingerprint(request: &CommandRequest) -> String {
    let body = serde_json::to_vec(&request.payload).expect("json values serialise");
    hex::encode(Sha256::digest(&body))
}

/// Handle on the `answers` stream; cheap to clone.
#[derive(Clone)]
pub struct AnswerJournal {
    js: jetstream::Context,
    client: async_nats::Client,
    stream: stream::Stream,
}

fn unavailable(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::unavailable("event_store_unavailable", format!("answer journal: {e}"))
}

impl AnswerJournal {
    /// Opens (creating or updating) the `answers` stream. `max_age` zero keeps answers for ever.
    pub async fn open(
        js: &jetstream::Context,
        replicas: usize,
        max_age: Duration,
        duplicate_window: Duration,
    ) -> Result<AnswerJournal, ServiceError> {
        js.create_or_update_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec![format!("{STREAM}.>")],
            description: Some("foodaid: the first answer of each command, by caller and idempotency key".into()),
            max_messages_per_subject: 1,
            max_age,
            duplicate_window: if max_age.is_zero() { duplicate_window } else { duplicate_window.min(max_age) },
            num_replicas: replicas,
            storage: stream::StorageType::File,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .map_err(unavailable)?;
        let stream = js.get_stream(STREAM).await.map_err(unavailable)?;
        Ok(AnswerJournal { js: js.clone(), client: js.client(), stream })
    }

    /// The answer remembered under `key`, if any.
    pub async fn get(&self, key: &AnswerKey) -> Result<Option<Answer>, ServiceError> {
        let found = tokio::select! {
            biased;
            found = self.stream.direct_get_last_for_subject(key.subject()) => found,
            () = eventstore::connection_lost(&self.client) => return Err(unavailable("the NATS connection is lost")),
        };
        match found {
            Ok(message) => serde_json::from_slice(&message.payload)
                .map(Some)
                .map_err(|e| ServiceError::internal("reading a remembered answer", e)),
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Remembers `answer` under `key` unless an answer is there already (another instance
    /// answered the same request first), in which case that one is returned.
    pub async fn put(&self, key: &AnswerKey, answer: &Answer) -> Result<Option<Answer>, ServiceError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, key.subject());
        headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
        let body = serde_json::to_vec(answer).expect("answers serialise");
        // Not waited for past the connection: a command committed meanwhile is answered all
        // the same, and its retry finds its first commit.
        let publish =
            async { self.js.publish_with_headers(key.subject().to_owned(), headers, body.into()).await?.await };
        let ack = tokio::select! {
            biased;
            ack = publish => ack,
            () = eventstore::connection_lost(&self.client) => return Err(unavailable("the NATS connection is lost")),
        };
        match ack {
            Ok(ack) if ack.duplicate => self.get(key).await,
            Ok(_) => Ok(None),
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => self.get(key).await,
            Err(e) => Err(unavailable(e)),
        }
    }
}
