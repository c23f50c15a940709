//! What the gateway knows of the platform without asking: the running nodes, from the
//! announcements they publish every second on `foodaid.ctl.presence`, and the size of each
//! service stream, read every second. `/health`, `/metrics` and replays read it, so no HTTP
//! request waits for nodes to answer, and a node that died drops out after three silent periods
//! instead of costing every caller a timeout.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use runtime::{Announcement, NodeStatus, ServiceClient, ANNOUNCE_EVERY, CTL_PRESENCE};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

/// A node is forgotten after this many announcement periods without one.
const SILENT_PERIODS: u32 = 3;

/// The size of one stream when last read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct StreamSize {
    pub messages: u64,
    pub bytes: u64,
    pub last_seq: u64,
}

struct Seen {
    status: NodeStatus,
    expires: Instant,
}

#[derive(Default)]
struct Known {
    nodes: BTreeMap<String, Seen>,
    streams: BTreeMap<String, StreamSize>,
}

pub struct Presence {
    known: RwLock<Known>,
    /// Becomes true once the first status answers and stream sizes are in.
    primed: watch::Sender<bool>,
}

impl Default for Presence {
    fn default() -> Self {
        Presence { known: RwLock::default(), primed: watch::Sender::new(false) }
    }
}

impl Presence {
    /// The nodes heard of recently, by name.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        let now = Instant::now();
        let known = self.known.read().expect("presence lock");
        known.nodes.values().filter(|s| s.expires > now).map(|s| s.status.clone()).collect()
    }

    /// Each service stream's size when last read.
    pub fn streams(&self) -> BTreeMap<String, StreamSize> {
        self.known.read().expect("presence lock").streams.clone()
    }

    /// Waits, at most `limit`, for the first round of answers: only the calls that come in while
    /// the gateway starts ever wait here.
    pub async fn primed(&self, limit: Duration) {
        if *self.primed.borrow() {
            return;
        }
        let mut primed = self.primed.subscribe();
        let _ = tokio::time::timeout(limit, primed.wait_for(|p| *p)).await;
    }

    /// Keeps a status a node gave in answer to a request, as if it had announced it.
    pub fn record(&self, status: NodeStatus) {
        self.record_for(status, ANNOUNCE_EVERY * SILENT_PERIODS);
    }

    /// Keeps a node's latest status: statuses can arrive out of order (an announcement and an
    /// answer to a request travel on different subscriptions), so an older one never replaces a
    /// newer one. A node that restarted has a later `started_at`.
    fn record_for(&self, status: NodeStatus, valid_for: Duration) {
        let expires = Instant::now() + valid_for;
        let mut known = self.known.write().expect("presence lock");
        match known.nodes.get_mut(&status.node) {
            Some(seen) if (seen.status.started_at, seen.status.seq) > (status.started_at, status.seq) => {}
            Some(seen) => *seen = Seen { status, expires },
            None => {
                tracing::info!(node = %status.node, services = ?status.services, "node announced");
                known.nodes.insert(status.node.clone(), Seen { status, expires });
            }
        }
    }

    fn leave(&self, status: &NodeStatus) {
        let mut known = self.known.write().expect("presence lock");
        if known.nodes.get(&status.node).is_some_and(|s| s.status.started_at <= status.started_at) {
            tracing::info!(node = %status.node, "node left");
            known.nodes.remove(&status.node);
        }
    }

    fn forget_silent(&self) {
        let now = Instant::now();
        let mut known = self.known.write().expect("presence lock");
        known.nodes.retain(|name, seen| {
            let alive = seen.expires > now;
            if !alive {
                tracing::warn!(node = %name, "node fell silent, forgotten");
            }
            alive
        });
    }

    async fn read_streams(&self, js: &async_nats::jetstream::Context) {
        let mut streams = BTreeMap::new();
        for name in services::SERVICE_NAMES {
            match js.get_stream(name).await {
                Ok(stream) => {
                    let state = &stream.cached_info().state;
                    streams.insert(
                        name.to_owned(),
                        StreamSize { messages: state.messages, bytes: state.bytes, last_seq: state.last_sequence },
                    );
                }
                Err(e) => tracing::debug!(stream = name, error = %e, "stream size not read"),
            }
        }
        self.known.write().expect("presence lock").streams = streams;
    }

    /// Asks every node for its status once (the gateway may start after a node's announcement),
    /// then follows announcements and reads the streams every second, until `cancel`.
    pub async fn run(
        self: Arc<Self>,
        services: ServiceClient,
        js: async_nats::jetstream::Context,
        first_wait: Duration,
        cancel: CancellationToken,
    ) {
        let mut announcements = match services.nats().subscribe(CTL_PRESENCE).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot follow node announcements; /health will list no node");
                None
            }
        };
        match services.node_statuses(first_wait).await {
            Ok(nodes) => nodes.into_iter().for_each(|n| self.record(n)),
            Err(e) => tracing::warn!(error = %e, "first node statuses not gathered"),
        }
        self.read_streams(&js).await;
        self.primed.send_replace(true);
        let mut tick = tokio::time::interval(ANNOUNCE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {
                    self.forget_silent();
                    self.read_streams(&js).await;
                }
                Some(message) = async { announcements.as_mut()?.next().await } => {
                    match serde_json::from_slice::<Announcement>(&message.payload) {
                        Ok(a) if a.leaving => self.leave(&a.status),
                        Ok(a) => {
                            let period = Duration::from_millis(a.every_ms.max(1));
                            self.record_for(a.status, period * SILENT_PERIODS);
                        }
                        Err(e) => tracing::warn!(error = %e, "unreadable node announcement"),
                    }
                }
            }
        }
    }
}
