//! The event-sourcing vocabulary every foodaid service speaks, with no I/O.
//!
//! A service's domain is an [`Aggregate`]: it *decides* a command into events (or rejects it
//! with a [`Rejection`]) and *applies* events to rebuild its state. Events travel inside an
//! [`EventEnvelope`], several of them grouped into one [`Commit`] — the unit that is stored as one
//! JetStream message. Old event shapes are turned into the current one by [`Upcasters`] when they
//! are read back.
//!
//! This crate is not the event store (see `eventstore`) nor the projection engine (see
//! `projections`): it only holds the types and pure functions they share, so that domain crates
//! can depend on it without pulling in tokio, NATS or sled.

mod aggregate;
mod codec;
mod envelope;
mod ident;
pub mod testing;

pub use aggregate::{Aggregate, Rejection, RejectionKind};
pub use codec::{
    decode_event, decode_event_raw, encode_event, DecodeError, DomainEvent, EncodedEvent, Upcaster, Upcasters,
};
pub use envelope::{CommandMeta, Commit, EventEnvelope, COMMIT_FORMAT};
pub use ident::{AggregateId, InvalidId};
