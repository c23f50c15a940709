//! Projections: the read models foodaid answers queries from.
//!
//! A [`Projection`] turns recorded events into rows of its own tables. The [`Engine`] feeds each
//! projection from durable JetStream pull consumers, applies events in batches, and writes each
//! batch together with the projection's checkpoint (the last stream sequence seen, per stream) in
//! one atomic write — so a crash can neither lose nor repeat an event. A projection that meets an
//! event it cannot decode stops at that event and reports it; nothing is skipped silently.
//!
//! The storage is sled, but only this crate knows it: projections see a [`Tx`] (writes of one
//! batch) and queries a [`View`] (reads), both keyed by table name and key. sled is a cache here —
//! every projection can be dropped and rebuilt from the streams ([`Engine::replay`]). Each
//! projection declares the version of what it writes ([`Projection::version`]), stored beside its
//! checkpoints: a build whose projection changed rebuilds it on start instead of serving rows of
//! the old shape.

mod engine;
mod store;

pub use engine::{Engine, EngineConfig, ProjectionHandle, ProjectionState, ProjectionStatus, Stuck, WaitError};
pub use store::{
    ApplyError, Projection, ProjectionStore, RecordedEvent, StoreError, StoredEvent, Tx, VersionCheck, View,
};
