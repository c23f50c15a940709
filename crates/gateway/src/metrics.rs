//! `/metrics`: what operators watch, in the Prometheus text format (0.0.4), encoded by
//! `prometheus-client`.
//!
//! Two kinds of figures. Requests are counted as they are served, per operation of the API table
//! (service and name) and per answer code, with their latency. Everything else is read when the
//! scrape comes in: projection lag and stuck projections, reactor and NATS counters (from the
//! nodes' announcements, see [`crate::presence`]), stream sizes, and open reservations (a stock
//! query). Those are built afresh each time, so a node that left leaves no stale series behind.
//! Nothing here names a person: operation names, codes, node and stream names, counts.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use runtime::{Actor, QueryRequest};

use crate::api::Op;
use crate::AppState;

/// The stable error code an answer carries (`ApiError` puts it in the response's extensions).
#[derive(Debug, Clone)]
pub(crate) struct ErrorCode(pub String);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: &'static str,
    operation: &'static str,
    status: u16,
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabels {
    node: String,
    projection: String,
    stream: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectionLabels {
    node: String,
    projection: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReactorLabels {
    node: String,
    reactor: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReactorFailureLabels {
    node: String,
    reactor: String,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

type Latency = Family<RequestLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

/// Reservation statuses that still hold units on lots (or are being settled).
const OPEN_RESERVATIONS: [&str; 3] = ["planned", "confirmed", "picked"];

/// The request figures of this gateway, and which operation each route is.
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: Latency,
    operations: HashMap<(Method, &'static str), (&'static str, &'static str)>,
}

impl Metrics {
    pub fn new(operations: &[Op]) -> Metrics {
        Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            operations: operations.iter().map(|op| ((op.method.clone(), op.path), (op.service, op.name))).collect(),
        }
    }

    /// The (service, operation) of a matched route: the API table's, or the gateway's own.
    fn operation(&self, method: &Method, path: &str) -> (&'static str, &'static str) {
        if let Some(op) = self.operations.get(&(method.clone(), path)) {
            return *op;
        }
        let own = match path {
            "/health" => "health",
            "/metrics" => "metrics",
            "/api/replays" => "replay",
            "/api/me" => "me",
            "/api/openapi.json" => "openapi",
            "/" => "app",
            _ => "other",
        };
        ("gateway", own)
    }

    fn observe(&self, labels: RequestLabels, elapsed: Duration) {
        self.latency.get_or_create(&labels).observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&labels).inc();
    }
}

/// Where the operation of a request is written once the router has matched it: the recording
/// middleware sits outside the timeout, which drops the inner future when it fires.
#[derive(Clone, Default)]
pub(crate) struct OperationSlot(Arc<OnceLock<(&'static str, &'static str)>>);

/// Counts every request with its latency, its operation and its answer's code (`ok` when it
/// succeeded). Requests no route matched (the web app's files, unknown paths, a token refused
/// before routing) count as the gateway's `other`.
pub(crate) async fn record(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let slot = OperationSlot::default();
    request.extensions_mut().insert(slot.clone());
    let started = Instant::now();
    let response = next.run(request).await;
    let (service, operation) = slot.0.get().copied().unwrap_or(("gateway", "other"));
    let status = response.status();
    let code = match response.extensions().get::<ErrorCode>() {
        Some(code) => code.0.clone(),
        None if status.is_client_error() || status.is_server_error() => "error".to_owned(),
        None => "ok".to_owned(),
    };
    state.metrics.observe(RequestLabels { service, operation, status: status.as_u16(), code }, started.elapsed());
    response
}

/// Names the operation of a matched route (runs inside the router, where the route is known).
pub(crate) async fn label(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let (Some(slot), Some(path)) =
        (request.extensions().get::<OperationSlot>(), request.extensions().get::<MatchedPath>())
    {
        let _ = slot.0.set(state.metrics.operation(request.method(), path.as_str()));
    }
    next.run(request).await
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    state.presence.primed(state.health_wait * 4).await;
    let mut registry = Registry::default();
    registry.register(
        "foodaid_http_requests",
        "HTTP requests served by this gateway, by operation, status and code",
        state.metrics.requests.clone(),
    );
    registry.register_with_unit(
        "foodaid_http_request_duration",
        "Time to answer HTTP requests, by operation, status and code",
        Unit::Seconds,
        state.metrics.latency.clone(),
    );

    let nodes = state.presence.nodes();
    let streams = state.presence.streams();
    let heads = streams.iter().map(|(name, s)| (name.clone(), s.last_seq)).collect();

    let live: Gauge = Gauge::default();
    live.set(nodes.len() as i64);
    registry.register("foodaid_nodes", "Nodes that announced themselves within the last three seconds", live);

    let lag = Family::<LagLabels, Gauge>::default();
    let stuck = Family::<ProjectionLabels, Gauge>::default();
    for p in crate::health::projections(&nodes, &heads) {
        for (stream, behind) in &p.lag {
            let labels = LagLabels { node: p.node.clone(), projection: p.name.clone(), stream: stream.clone() };
            lag.get_or_create(&labels).set(*behind as i64);
        }
        stuck
            .get_or_create(&ProjectionLabels { node: p.node.clone(), projection: p.name.clone() })
            .set(i64::from(p.stuck.is_some()));
    }
    registry.register("foodaid_projection_lag", "Events of a stream a projection has not recorded yet", lag);
    registry.register("foodaid_projection_stuck", "1 when a projection stopped at an event it cannot apply", stuck);

    let messages = Family::<StreamLabels, Gauge>::default();
    let bytes = Family::<StreamLabels, Gauge>::default();
    let last_seq = Family::<StreamLabels, Gauge>::default();
    for (name, size) in &streams {
        let labels = StreamLabels { stream: name.clone() };
        messages.get_or_create(&labels).set(size.messages as i64);
        bytes.get_or_create(&labels).set(size.bytes as i64);
        last_seq.get_or_create(&labels).set(size.last_seq as i64);
    }
    registry.register("foodaid_stream_messages", "Messages (commits) a service stream holds", messages);
    registry.register_with_unit("foodaid_stream", "Size of a service stream", Unit::Bytes, bytes);
    registry.register("foodaid_stream_last_seq", "Last sequence of a service stream", last_seq);

    let handled = Family::<ReactorLabels, Counter>::default();
    let retries = Family::<ReactorLabels, Counter>::default();
    let failures = Family::<ReactorFailureLabels, Counter>::default();
    let restarts = Family::<ReactorLabels, Counter>::default();
    let reconnects = Family::<NodeLabels, Counter>::default();
    for node in &nodes {
        for r in &node.reactors {
            let labels = ReactorLabels { node: node.node.clone(), reactor: r.name.clone() };
            handled.get_or_create(&labels).inc_by(r.handled);
            retries.get_or_create(&labels).inc_by(r.retries);
            restarts.get_or_create(&labels).inc_by(r.restarts);
            for (kind, n) in [("unavailable", r.unavailable), ("refused", r.refused)] {
                let labels = ReactorFailureLabels { node: node.node.clone(), reactor: r.name.clone(), kind };
                failures.get_or_create(&labels).inc_by(n);
            }
        }
        reconnects.get_or_create(&NodeLabels { node: node.node.clone() }).inc_by(node.nats_reconnects);
    }
    registry.register("foodaid_reactor_handled", "Commits a reactor handled, since its node started", handled);
    registry.register(
        "foodaid_reactor_retries",
        "Attempts at a commit delivered before (after a failure or a lost instance)",
        retries,
    );
    registry.register(
        "foodaid_reactor_failures",
        "Failed attempts of a reactor, by kind: unavailable (something was down) or refused (by the service)",
        failures,
    );
    registry.register("foodaid_reactor_restarts", "Times a reactor lost its consumer and started again", restarts);
    registry.register("foodaid_nats_reconnects", "Times a node's NATS connection was established again", reconnects);

    if let Some(counts) = reservation_counts(&state).await {
        let open = Family::<StatusLabels, Gauge>::default();
        for status in OPEN_RESERVATIONS {
            let n = counts.get(status).copied().unwrap_or(0);
            open.get_or_create(&StatusLabels { status }).set(n as i64);
        }
        registry.register(
            "foodaid_open_reservations",
            "Reservations still holding stock (planned, confirmed, picked), by status",
            open,
        );
    }

    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
        tracing::error!(error = %e, "encoding metrics");
        return crate::ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", "metrics not encoded")
            .into_response();
    }
    ([(header::CONTENT_TYPE, prometheus_client::encoding::prometheus_text::CONTENT_TYPE)], text).into_response()
}

/// Reservations by status from the stock service; none when no stock service answers soon.
async fn reservation_counts(state: &AppState) -> Option<HashMap<String, u64>> {
    let request = QueryRequest::new(Actor::system("metrics"), serde_json::json!({}));
    let query = state.services.query::<HashMap<String, u64>>("stock", "count_reservations", &request);
    match tokio::time::timeout(Duration::from_secs(2), query).await {
        Ok(Ok(counts)) => Some(counts),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "open reservations not counted");
            None
        }
        Err(_) => {
            tracing::debug!("open reservations not counted in time");
            None
        }
    }
}
