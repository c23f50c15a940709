use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `degraded` (a projection is stuck), or `unavailable` (NATS unreachable).
    pub status: String,
    pub nats_connected: bool,
    /// Last sequence of each service stream.
    pub streams: BTreeMap<String, u64>,
    /// Nodes that answered the status call.
    pub nodes: Vec<String>,
    pub projections: Vec<ProjectionHealth>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionHealth {
    pub node: String,
    pub name: String,
    /// starting, running, stuck, rebuilding or stopped.
    pub state: String,
    /// Events of each stream not yet recorded.
    pub lag: BTreeMap<String, u64>,
    /// Where and why a stuck projection stopped.
    pub stuck: Option<StuckAt>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StuckAt {
    pub stream: String,
    pub seq: u64,
    pub reason: String,
}

pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let connected = state.services.nats().connection_state() == async_nats::connection::State::Connected;
    let mut streams = BTreeMap::new();
    if connected {
        for name in services::SERVICE_NAMES {
            if let Ok(mut stream) = state.js.get_stream(name).await {
                if let Ok(info) = stream.info().await {
                    streams.insert(name.to_owned(), info.state.last_sequence);
                }
            }
        }
    }
    let nodes =
        if connected { state.services.node_statuses(state.health_wait).await.unwrap_or_default() } else { Vec::new() };
    let mut projections = Vec::new();
    for node in &nodes {
        for p in &node.projections {
            let lag = p
                .checkpoints
                .iter()
                .map(|(s, seq)| (s.clone(), streams.get(s).copied().unwrap_or(0).saturating_sub(*seq)))
                .collect();
            projections.push(ProjectionHealth {
                node: node.node.clone(),
                name: p.name.clone(),
                state: serde_json::to_value(p.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                lag,
                stuck: p.stuck.as_ref().map(|s| StuckAt {
                    stream: s.stream.clone(),
                    seq: s.seq,
                    reason: s.reason.clone(),
                }),
            });
        }
    }
    let status = if !connected {
        "unavailable"
    } else if projections.iter().any(|p| p.stuck.is_some()) {
        "degraded"
    } else {
        "ok"
    };
    let code = if connected { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let health = Health {
        status: status.to_owned(),
        nats_connected: connected,
        streams,
        nodes: nodes.iter().map(|n| n.node.clone()).collect(),
        projections,
    };
    (code, Json(health))
}
