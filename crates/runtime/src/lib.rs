//! How a foodaid service runs: commands and queries arrive over NATS request/reply, commands
//! are decided by a pure aggregate and committed to the event store, queries are answered from
//! projections.
//!
//! - [`CommandRunner`] loads an aggregate (from its cache or its subject), decides, appends with
//!   the concurrency check, and retries a bounded number of times on conflict. A command id seen
//!   before returns the first answer instead of deciding again.
//! - [`ServiceHost`] subscribes to `foodaid.cmd.<service>.*` and `foodaid.qry.<service>.*` in the
//!   queue group `foodaid.<service>`, so several instances share the work. With an
//!   [`AnswerJournal`], a caller's repeated idempotency key gets its first answer back before
//!   any handler runs.
//! - [`ServiceClient`] is the other end, used by the HTTP gateway, the CLI and sagas.
//! - [`Reactor`] lets a service act on another's events (saga steps), once per cluster.
//! - [`ServiceError`] is how every failure travels: a kind, a stable code, a message.
//! - [`serve_control`] answers the control subjects (status, replay) and announces the node on
//!   [`CTL_PRESENCE`] every second, so a gateway knows which nodes run without asking.
//!
//! Domain rules live in the service crates; storage details in `eventstore` and `projections`.

pub mod bounds;
mod client;
mod error;
mod failpoint;
mod host;
pub mod journal;
mod node;
mod reactor;
mod runner;
mod wire;

pub use client::{Broadcast, Collect, ServiceClient};
pub use error::{ErrorKind, ServiceError};
pub use failpoint::{failpoint, FAILPOINT_VAR};
pub use host::{parse_payload, CommandHandler, QueryHandler, ServiceHost};
pub use journal::AnswerJournal;
pub use node::{
    serve_control, Announcement, NodeInfo, NodeStatus, ReplayReply, ReplayRequest, ANNOUNCE_EVERY, CTL_PRESENCE,
    CTL_REPLAY, CTL_STATUS,
};
pub use reactor::{reactor_stats, Reaction, Reactor, ReactorHandler, ReactorSettings, ReactorStats};
pub use runner::{CommandRunner, RunnerConfig};
pub use wire::{Actor, CommandReply, CommandRequest, QueryRequest, ReplyEvent, Role};
