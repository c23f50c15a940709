//! Control subjects every node answers (no queue group: each node keeps its own projections).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use projections::{Engine, ProjectionStatus};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::wire::Reply;
use crate::ServiceError;

pub const CTL_STATUS: &str = "foodaid.ctl.status";
pub const CTL_REPLAY: &str = "foodaid.ctl.replay";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub version: String,
    pub services: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub projections: Vec<ProjectionStatus>,
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

impl NodeInfo {
    pub async fn status(&self, engine: &Engine, digests: bool) -> NodeStatus {
        NodeStatus {
            node: self.node.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            services: self.services.clone(),
            started_at: self.started_at,
            projections: if digests { engine.statuses_with_digests().await } else { engine.statuses() },
        }
    }
}

/// Answers `foodaid.ctl.status` and `foodaid.ctl.replay` until `cancel`.
pub async fn serve_control(
    client: async_nats::Client,
    engine: Arc<Engine>,
    info: NodeInfo,
    cancel: CancellationToken,
) -> Result<(), async_nats::Error> {
    let mut status = client.subscribe(CTL_STATUS).await?;
    let mut replay = client.subscribe(CTL_REPLAY).await?;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(m) = status.next() => {
                if let Some(reply) = m.reply {
                    let request: StatusRequest = serde_json::from_slice(&m.payload).unwrap_or_default();
                    let status = info.status(&engine, request.digests).await;
                    let body = serde_json::to_vec(&Reply::Ok(status)).expect("status serialises");
                    if let Err(e) = client.publish(reply, body.into()).await {
                        tracing::warn!(error = %e, "status answer not sent");
                    }
                }
            }
            Some(m) = replay.next() => {
                let answer = replay_here(&engine, &info, &m.payload).await;
                if let (Some(reply), Some(answer)) = (m.reply, answer) {
                    let body = serde_json::to_vec(&answer).expect("replay answer serialises");
                    if let Err(e) = client.publish(reply, body.into()).await {
                        tracing::warn!(error = %e, "replay answer not sent");
                    }
                }
            }
            else => break,
        }
    }
    Ok(())
}

async fn replay_here(engine: &Engine, info: &NodeInfo, payload: &[u8]) -> Option<Reply<ReplayReply>> {
    let request: ReplayRequest = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => return Some(Reply::Error(ServiceError::validation("malformed_request", e))),
    };
    if request.node.as_ref().is_some_and(|n| n != &info.node) {
        return None;
    }
    let names: Vec<String> = engine
        .handles()
        .iter()
        .map(|h| h.name().to_owned())
        .filter(|n| request.projection == "all" || *n == request.projection)
        .collect();
    if names.is_empty() {
        return None;
    }
    for name in &names {
        if let Err(e) = engine.replay(name).await {
            return Some(Reply::Error(ServiceError::internal("starting a replay", e)));
        }
    }
    Some(Reply::Ok(ReplayReply { node: info.node.clone(), started: names }))
}
