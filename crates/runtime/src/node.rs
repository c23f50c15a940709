//! Control subjects every node answers (no queue group: each node keeps its own projections),
//! and the announcement every node makes of itself.
//!
//! A node publishes its status on [`CTL_PRESENCE`] every [`ANNOUNCE_EVERY`], and once more,
//! marked `leaving`, when it stops: whoever listens (the gateway) knows which nodes run and how
//! their projections stand without asking, and forgets a node not heard of for three periods.
//! The control loop never waits on a replay: the rebuild runs as a task of its own, so status
//! requests and announcements go on while projections are stopped, cleared and rebuilt.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use projections::{Engine, ProjectionState, ProjectionStatus, Stuck};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::reactor::{reactor_stats, ReactorStats};
use crate::wire::Reply;
use crate::ServiceError;

pub const CTL_STATUS: &str = "foodaid.ctl.status";
pub const CTL_REPLAY: &str = "foodaid.ctl.replay";
/// Where nodes announce themselves (an [`Announcement`]).
pub const CTL_PRESENCE: &str = "foodaid.ctl.presence";
/// How often a node announces itself.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub version: String,
    pub services: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub projections: Vec<ProjectionStatus>,
    /// What this node's reactors did since it started.
    #[serde(default)]
    pub reactors: Vec<ReactorStats>,
    /// Times this node's NATS connection was established again after the first.
    #[serde(default)]
    pub nats_reconnects: u64,
    /// Grows with every status this node gives (announced or answered), so that a reader
    /// receiving two keeps the later one.
    #[serde(default)]
    pub seq: u64,
}

/// What a node publishes on [`CTL_PRESENCE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    pub status: NodeStatus,
    /// The period of its announcements, in milliseconds: a node silent for three is gone.
    pub every_ms: u64,
    /// The node is stopping: forget it now rather than when it falls silent.
    #[serde(default)]
    pub leaving: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayRequest {
    /// A projection name, or `all`.
    pub projection: String,
    /// Only this node; every node when absent.
    #[serde(default)]
    pub node: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayReply {
    pub node: String,
    pub started: Vec<String>,
}

/// What a node is, for its status answers.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: String,
    pub services: Vec<String>,
    pub started_at: DateTime<Utc>,
}

/// The body of a status request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusRequest {
    /// Also hash every projection's rows.
    #[serde(default)]
    pub digests: bool,
}

/// Replays asked of this node and not yet under way.
#[derive(Debug, Default)]
struct Replays {
    /// Projections being stopped and cleared: reported as rebuilding from nothing, so that
    /// nobody following the rebuild takes the old checkpoints for its end.
    pending: BTreeSet<String>,
    /// Projections whose last replay could not start, with why (they are stopped).
    failed: BTreeMap<String, String>,
}

/// A replay request this node takes.
struct Accepted {
    /// Its projections that match, all reported as started.
    started: Vec<String>,
    /// Those not already waiting to be cleared: the work to start.
    start: Vec<String>,
}

/// Everything the control loop and its tasks share.
struct Control {
    client: async_nats::Client,
    engine: Arc<Engine>,
    info: NodeInfo,
    replays: Mutex<Replays>,
    /// Held by the replay under way: requests are carried out one after another, so the engine
    /// never stops, clears and restarts the same projection twice at once.
    replaying: tokio::sync::Mutex<()>,
    /// The `seq` of the last status given.
    seq: AtomicU64,
}

impl NodeInfo {
    fn status_of(&self, projections: Vec<ProjectionStatus>, nats_reconnects: u64, seq: u64) -> NodeStatus {
        NodeStatus {
            node: self.node.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            services: self.services.clone(),
            started_at: self.started_at,
            projections,
            reactors: reactor_stats(),
            nats_reconnects,
            seq,
        }
    }
}

impl Control {
    async fn status(&self, digests: bool) -> NodeStatus {
        // Statuses are built one at a time by the control loop (those with digests aside, which
        // nobody keeps), so a later number describes a later state.
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut projections = if digests { self.engine.statuses_with_digests().await } else { self.engine.statuses() };
        {
            let replays = self.replays.lock().expect("replays lock");
            for p in &mut projections {
                if replays.pending.contains(&p.name) {
                    p.state = ProjectionState::Rebuilding;
                    p.checkpoints.clear();
                    p.stuck = None;
                } else if let Some(reason) = replays.failed.get(&p.name) {
                    p.state = ProjectionState::Stuck;
                    p.stuck = Some(Stuck {
                        stream: p.streams.first().cloned().unwrap_or_default(),
                        seq: 0,
                        reason: format!("replay failed: {reason}"),
                    });
                }
            }
        }
        let connects = self.client.statistics().connects.load(Ordering::Relaxed);
        self.info.status_of(projections, connects.saturating_sub(1), seq)
    }

    async fn announce(&self, leaving: bool) {
        let announcement =
            Announcement { status: self.status(false).await, every_ms: ANNOUNCE_EVERY.as_millis() as u64, leaving };
        let body = serde_json::to_vec(&announcement).expect("announcements serialise");
        if let Err(e) = self.client.publish(CTL_PRESENCE, body.into()).await {
            tracing::debug!(error = %e, "announcement not sent");
        }
    }

    async fn answer_status(&self, reply: async_nats::Subject, digests: bool) {
        let body = serde_json::to_vec(&Reply::Ok(self.status(digests).await)).expect("status serialises");
        if let Err(e) = self.client.publish(reply, body.into()).await {
            tracing::warn!(error = %e, "status answer not sent");
        }
    }

    /// Checks a replay request and marks its projections as rebuilding; the caller answers at
    /// once and starts the work. `None`: not for this node (another node answers).
    fn accept_replay(&self, payload: &[u8]) -> Option<Result<Accepted, ServiceError>> {
        let request: ReplayRequest = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => return Some(Err(ServiceError::validation("malformed_request", e))),
        };
        if request.node.as_ref().is_some_and(|n| n != &self.info.node) {
            return None;
        }
        let names: Vec<String> = self
            .engine
            .handles()
            .iter()
            .map(|h| h.name().to_owned())
            .filter(|n| request.projection == "all" || *n == request.projection)
            .collect();
        if names.is_empty() {
            return None;
        }
        let mut replays = self.replays.lock().expect("replays lock");
        let mut start = Vec::new();
        for name in &names {
            replays.failed.remove(name);
            if replays.pending.insert(name.clone()) {
                start.push(name.clone());
            }
        }
        Some(Ok(Accepted { started: names, start }))
    }

    /// Stops, clears and restarts each projection; each is reported as rebuilding meanwhile.
    async fn replay(&self, names: Vec<String>) {
        let _turn = self.replaying.lock().await;
        let runs = names.iter().map(|name| async move {
            let outcome = self.engine.replay(name).await;
            let mut replays = self.replays.lock().expect("replays lock");
            replays.pending.remove(name);
            if let Err(e) = outcome {
                tracing::error!(projection = %name, error = %e, "replay could not start");
                replays.failed.insert(name.clone(), e.to_string());
            }
        });
        futures::future::join_all(runs).await;
    }
}

/// Answers `foodaid.ctl.status` and `foodaid.ctl.replay`, and announces this node on
/// `foodaid.ctl.presence`, until `cancel`; then announces that it leaves and waits for the
/// replays it started.
pub async fn serve_control(
    client: async_nats::Client,
    engine: Arc<Engine>,
    info: NodeInfo,
    cancel: CancellationToken,
) -> Result<(), async_nats::Error> {
    let mut status = client.subscribe(CTL_STATUS).await?;
    let mut replay = client.subscribe(CTL_REPLAY).await?;
    let control = Arc::new(Control {
        client: client.clone(),
        engine,
        info,
        replays: Mutex::default(),
        replaying: tokio::sync::Mutex::new(()),
        seq: AtomicU64::new(0),
    });
    let tasks = TaskTracker::new();
    let mut announce = tokio::time::interval(ANNOUNCE_EVERY);
    announce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = announce.tick() => control.announce(false).await,
            Some(m) = status.next() => {
                let Some(reply) = m.reply else { continue };
                let request: StatusRequest = serde_json::from_slice(&m.payload).unwrap_or_default();
                if request.digests {
                    // Reads every row: not in the loop, which must keep answering.
                    let control = control.clone();
                    tasks.spawn(async move { control.answer_status(reply, true).await });
                } else {
                    control.answer_status(reply, false).await;
                }
            }
            Some(m) = replay.next() => {
                let Some(accepted) = control.accept_replay(&m.payload) else { continue };
                let answer = match accepted {
                    Ok(Accepted { started, start }) => {
                        if !start.is_empty() {
                            let control = control.clone();
                            tasks.spawn(async move { control.replay(start).await });
                        }
                        Reply::Ok(ReplayReply { node: control.info.node.clone(), started })
                    }
                    Err(e) => Reply::Error(e),
                };
                if let Some(reply) = m.reply {
                    let body = serde_json::to_vec(&answer).expect("replay answer serialises");
                    if let Err(e) = client.publish(reply, body.into()).await {
                        tracing::warn!(error = %e, "replay answer not sent");
                    }
                }
            }
            else => break,
        }
    }
    control.announce(true).await;
    if let Err(e) = client.flush().await {
        tracing::debug!(error = %e, "flushing the last announcement failed");
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}
