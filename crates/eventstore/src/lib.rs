//! The event store: where every fact of foodaid is written, on NATS JetStream.
//!
//! Each service owns one stream (`donations`, `stock`, `distribution`, `transport`) holding the
//! subjects `<service>.<aggregate kind>.<aggregate id>`. One message is one [`Commit`]: the
//! events one command produced for one aggregate. [`EventStore::append`] writes a commit with
//! `Nats-Expected-Last-Subject-Sequence` (optimistic concurrency: a stale writer gets
//! [`StoreError::Conflict`]) and `Nats-Msg-Id` (idempotency: the same command twice is stored
//! once). [`EventStore::load`] reads an aggregate's commits back with direct gets on its subject.
//!
//! This crate does not decide anything (see `eventcore` and the service crates) and does not
//! build read models (see `projections`).

mod store;

pub use store::{
    check_format, check_format_header, connection_lost, decode_commit, AggregateRef, Appended, EventStore, Expected,
    StoreConfig, StoreError, StoredCommit, COMMIT_FORMAT_HEADER, SERVICES,
};
