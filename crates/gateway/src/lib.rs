//! The HTTP gateway: the one door people and programs use.
//!
//! It authenticates bearer tokens, turns each HTTP operation of [`api::operations`] into a
//! command or query sent over NATS to whichever service instance answers, and maps every failure
//! to `{ "code": ..., "message": ... }` with a stable code. It holds no business logic and no
//! state besides a short token cache and what the nodes announce of themselves ([`presence`]):
//! any number of gateways can run. `/health` and `/metrics` ([`metrics`]) say how the platform
//! stands.

pub mod api;
pub mod auth;
mod error;
pub mod health;
pub mod metrics;
mod openapi;
pub mod presence;
pub mod web;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use runtime::ServiceClient;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

pub use auth::{TokenRecord, TokenStore};
pub use error::ApiError;

/// The id of one HTTP request: logged on every line, returned as `x-request-id`, and used as
/// the correlation id of the commands it sends.
#[derive(Debug, Clone, Copy)]
pub struct RequestId(pub Uuid);

/// The id of the token a request came with: idempotency keys are scoped to it.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

#[derive(Clone)]
pub struct AppState {
    pub services: ServiceClient,
    pub tokens: Arc<TokenStore>,
    pub js: async_nats::jetstream::Context,
    /// How long the gateway waits for node status answers when it starts; three times this for
    /// replay answers (it stops as soon as every node expected has answered).
    pub health_wait: Duration,
    pub request_timeout: Duration,
    /// The nodes, from their announcements, and the streams' sizes.
    pub presence: Arc<presence::Presence>,
    pub metrics: Arc<metrics::Metrics>,
    /// The collective's time zone, for the web app (`/api/me`).
    pub time_zone: String,
    openapi: Arc<serde_json::Value>,
}

impl AppState {
    pub fn new(services: ServiceClient, tokens: Arc<TokenStore>, js: async_nats::jetstream::Context) -> Self {
        let operations = api::operations();
        let doc = openapi::document(&operations);
        AppState {
            services,
            tokens,
            js,
            health_wait: Duration::from_millis(250),
            request_timeout: Duration::from_secs(30),
            presence: Arc::default(),
            metrics: Arc::new(metrics::Metrics::new(&operations)),
            time_zone: values::Calendar::default().name().to_owned(),
            openapi: Arc::new(serde_json::to_value(doc).expect("openapi serialises")),
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(web::index))
        .route("/health", get(health::health))
        .route("/metrics", get(metrics::metrics))
        .route("/api/openapi.json", get(openapi_json))
        .route("/api/me", get(web::me))
        .route("/api/replays", axum::routing::post(health::replay))
        .merge(api::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), metrics::label))
        .fallback(web::asset)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), timeout))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), metrics::record))
        .layer(middleware::from_fn(request_id))
        .layer(axum::extract::DefaultBodyLimit::max(1024 * 1024))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled, then lets in-flight requests finish. Follows the nodes'
/// announcements meanwhile.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "http gateway listening");
    let stop = shutdown.child_token();
    let presence = tokio::spawn(state.presence.clone().run(
        state.services.clone(),
        state.js.clone(),
        state.health_wait,
        stop.clone(),
    ));
    let served = axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await;
    stop.cancel();
    if let Err(e) = presence.await {
        tracing::warn!(error = %e, "following node announcements ended abnormally");
    }
    served
}

async fn openapi_json(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json((*state.openapi).clone())
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint; see /api/openapi.json")
}

async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok())
        .unwrap_or_else(Uuid::now_v7);
    request.extensions_mut().insert(RequestId(id));
    let span = tracing::info_span!("http", request_id = %id, method = %request.method(), path = %request.uri().path());
    let mut response = async move {
        let started = std::time::Instant::now();
        let response = next.run(request).await;
        tracing::info!(status = response.status().as_u16(), ms = started.elapsed().as_millis() as u64, "request");
        response
    }
    .instrument(span)
    .await;
    response
        .headers_mut()
        .insert("x-request-id", HeaderValue::from_str(&id.to_string()).expect("uuid is a header value"));
    response
}

async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_owned());
    if let Some(token) = bearer {
        match state.tokens.authenticate(&token).await {
            Ok(Some(actor)) => {
                tracing::debug!(actor = %actor, "authenticated");
                request.extensions_mut().insert(actor);
                if let Some((id, _)) = token.strip_prefix("fa_").and_then(|t| t.split_once('_')) {
                    let caller = Caller(id.to_owned());
                    request.extensions_mut().insert(caller);
                }
            }
            Ok(None) => return ApiError::unauthenticated().into_response(),
            // The same code as any call while NATS is down: the app says "try again".
            Err(e) => return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", e).into_response(),
        }
    }
    next.run(request).await
}

async fn timeout(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(state.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", "the request took too long").into_response()
        }
    }
}

/// Rewrites framework-generated errors (405, 413, ...) into the API's JSON error shape.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !status.is_client_error() && !status.is_server_error() || is_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "this endpoint does not accept that method"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the body is larger than 1 MiB"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "send application/json"),
        StatusCode::NOT_FOUND => ("not_found", "no such endpoint"),
        s if s.is_client_error() => ("bad_request", "the request could not be read"),
        _ => ("internal", "internal error"),
    };
    ApiError::new(status, code, message).into_response()
}
