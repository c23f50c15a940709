use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use bytes::Bytes;
use runtime::{Actor, NodeStatus, ReplayRequest, Role};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
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
    /// The version of what the projection writes (0: a node of a build that does not say).
    pub version: u32,
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

/// `GET /health`, from what the gateway already knows (see [`crate::presence`]): the nodes'
/// latest announcements, at most a second or two old, and the streams' sizes read every second.
/// No call waits for nodes to answer.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let connected = state.services.nats().connection_state() == async_nats::connection::State::Connected;
    state.presence.primed(state.health_wait * 4).await;
    let (streams, nodes) = if connected {
        let streams = state.presence.streams().into_iter().map(|(name, s)| (name, s.last_seq)).collect();
        (streams, state.presence.nodes())
    } else {
        (BTreeMap::new(), Vec::new())
    };
    let projections = projections(&nodes, &streams);
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

/// Each node's projections with their lag against the streams' last sequences.
pub(crate) fn projections(nodes: &[NodeStatus], heads: &BTreeMap<String, u64>) -> Vec<ProjectionHealth> {
    let mut out = Vec::new();
    for node in nodes {
        for p in &node.projections {
            // Every stream it reads: a projection being rebuilt has no checkpoint yet, and all to do.
            let lag = p
                .streams
                .iter()
                .chain(p.checkpoints.keys().filter(|s| !p.streams.contains(s)))
                .map(|s| {
                    let done = p.checkpoints.get(s).copied().unwrap_or(0);
                    (s.clone(), heads.get(s).copied().unwrap_or(0).saturating_sub(done))
                })
                .collect();
            out.push(ProjectionHealth {
                node: node.node.clone(),
                name: p.name.clone(),
                version: p.version,
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
    out
}

/// A projection to rebuild from the streams.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// A projection's name (`lots`, `households`, ...), or `all`.
    pub projection: String,
}

/// What each running node started rebuilding; `/health` shows the progress (lag, state).
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayStarted {
    pub nodes: Vec<ReplayOnNode>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayOnNode {
    pub node: String,
    pub started: Vec<String>,
}

/// Asks every running node to rebuild a projection (what `foodaid replay` does), for the
/// coordinator's screen.
pub async fn replay(
    State(state): State<AppState>,
    actor: Option<Extension<Actor>>,
    body: Bytes,
) -> Result<(StatusCode, Json<ReplayStarted>), ApiError> {
    let Some(Extension(actor)) = actor else {
        return Err(ApiError::unauthenticated());
    };
    if actor.role != Role::Admin {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "only a coordinator rebuilds projections"));
    }
    let body: Replay = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_payload", e))?;
    // A node answers only for the projections it has: its announcements say which it has.
    state.presence.primed(state.health_wait * 4).await;
    let nodes = state.presence.nodes();
    if nodes.is_empty() {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_node", "no node is running"));
    }
    let all = body.projection == "all";
    let expected: Vec<String> = nodes
        .iter()
        .filter(|n| n.projections.iter().any(|p| all || p.name == body.projection))
        .map(|n| n.node.clone())
        .collect();
    if expected.is_empty() && !all {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "projection_not_found",
            format!("no projection {:?} on any node", body.projection),
        ));
    }
    tracing::info!(actor = %actor, projection = %body.projection, "replay asked");
    let request = ReplayRequest { projection: body.projection.clone(), node: None };
    let answers = state.services.replay_on(&request, &expected, state.health_wait * 3).await?;
    if answers.is_empty() {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_node", "no node answered"));
    }
    // Each node marked the projections as rebuilding before it answered: its status now says
    // so, and /health shows it at once rather than at the next announcement.
    let answered: Vec<String> = answers.iter().map(|a| a.node.clone()).collect();
    if let Ok(statuses) = state.services.node_statuses_on(&answered, state.health_wait).await {
        for status in statuses {
            state.presence.record(status);
        }
    }
    let nodes = answers.into_iter().map(|a| ReplayOnNode { node: a.node, started: a.started }).collect();
    Ok((StatusCode::ACCEPTED, Json(ReplayStarted { nodes })))
}
