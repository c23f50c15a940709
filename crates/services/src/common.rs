use std::sync::Arc;
use std::time::Duration;

use eventcore::{Aggregate, AggregateId, CommandMeta};
use eventstore::EventStore;
use projections::{ProjectionHandle, ProjectionStore, View, WaitError};
use runtime::{
    parse_payload, Actor, CommandRequest, CommandRunner, QueryRequest, Role, RunnerConfig, ServiceError, ServiceHost,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;
use uuid::Uuid;

pub const SERVICE_NAMES: [&str; 4] = ["donations", "stock", "distribution", "transport"];

/// What every service needs to run.
#[derive(Clone)]
pub struct ServiceContext {
    pub events: EventStore,
    pub projections: ProjectionStore,
    pub runner: RunnerConfig,
    /// How long a query waits for `min_seq` before answering `projection_lagging`.
    pub query_wait: Duration,
    pub policies: Policies,
    /// Keys of personal data, outside the event streams.
    pub vault: vault::Vault,
    /// For processes that ask another service (a wave reserving its parcels in stock).
    pub client: runtime::ServiceClient,
    /// The collective's time zone: every rule about days, months, years and times of day.
    pub calendar: values::Calendar,
}

/// The collective's configurable rules, as the services apply them.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// What reception accepts (use-by delay, best-before grace, cold chain).
    pub reception: donations::ReceptionRules,
    /// Grams of food counted as one meal in statements and reports.
    pub meal_grams: u32,
    /// Available stock per food group below which `low_stock` warns, kg.
    pub stock_minimum_kg: values::PerGroup<f64>,
    /// Eligibility of households for associations that set no rule of their own.
    pub eligibility: distribution::EligibilityRule,
    /// What a person needs per food group and week, by age band (source in the type's docs).
    pub needs: distribution::NeedsReference,
    /// Days after its distribution day that a parcel still not collected counts as not
    /// collected (then returned or redistributed).
    pub collection_days: u32,
    /// How routes are planned and the cold chain kept on the road.
    pub transport: TransportRules,
    /// Minutes after which a reservation planned and never settled (its request died with its
    /// process and was not retried) fails and gives back what it held. Longer than any request
    /// runs (a fraction of a minute is for tests).
    pub reservation_timeout_minutes: f64,
}

/// The transport service's rules.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportRules {
    /// Longest time chilled or frozen goods may spend out of refrigeration at a stop, minutes;
    /// beyond it the lots (or the incoming donation) are flagged for inspection.
    pub cold_chain_minutes: u32,
    /// Road distance ÷ great-circle distance, when no road network is configured.
    pub detour_factor: f64,
    /// Average speed on the road, km/h, when no road network is configured.
    pub speed_kmh: f64,
    /// An OSRM server (`http://host:5000`): its table API gives road distances and times;
    /// the great-circle estimate stands in when it fails.
    pub osrm_url: Option<String>,
    /// Seconds the planner searches for a day's routes.
    pub plan_seconds: f64,
    /// Minutes a driver spends at a relay point handing over parcels.
    pub delivery_minutes: u32,
    /// Minutes a driver spends loading at a donor's weekly collection.
    pub pickup_minutes: u32,
    /// Days ahead that donors' weekly collections are made into pickup jobs.
    pub pickup_days_ahead: u32,
}

impl Default for TransportRules {
    fn default() -> Self {
        TransportRules {
            cold_chain_minutes: 30,
            detour_factor: 1.3,
            speed_kmh: 30.0,
            osrm_url: None,
            plan_seconds: 2.0,
            delivery_minutes: 15,
            pickup_minutes: 20,
            pickup_days_ahead: 7,
        }
    }
}

impl Default for Policies {
    fn default() -> Self {
        use values::FoodGroup::*;
        Policies {
            reception: donations::ReceptionRules::default(),
            meal_grams: 500,
            stock_minimum_kg: values::PerGroup {
                default: 100.0,
                groups: [
                    (Starches, 500.0),
                    (FruitVegetables, 200.0),
                    (Dairy, 150.0),
                    (MeatFishEggs, 150.0),
                    (BabyFood, 30.0),
                    (Hygiene, 50.0),
                ]
                .into(),
            },
            eligibility: distribution::EligibilityRule { threshold_cents: 1_000, validity_days: 183 },
            needs: distribution::NeedsReference::default(),
            collection_days: 2,
            transport: TransportRules::default(),
            reservation_timeout_minutes: 15.0,
        }
    }
}

impl ServiceContext {
    /// Today, in the collective's time zone (never the UTC day by accident).
    pub fn today(&self) -> chrono::NaiveDate {
        self.calendar.day_of(chrono::Utc::now())
    }

    pub fn runner<A: Aggregate>(&self, service: &'static str) -> Arc<CommandRunner<A>> {
        Arc::new(CommandRunner::new(self.events.clone(), service, self.runner.clone()))
    }
}

pub fn meta(request: &CommandRequest) -> CommandMeta {
    let correlation = request.correlation_id.unwrap_or_else(Uuid::now_v7);
    CommandMeta {
        command_id: request.command_id.clone(),
        actor: request.actor.to_string(),
        correlation_id: correlation,
        causation_id: request.causation_id.unwrap_or(correlation),
        occurred_at: request.occurred_at,
    }
}

/// The id of a new aggregate: the client's, or one derived from the idempotency key so that a
/// retried creation lands on the same aggregate instead of creating a twin.
pub fn new_id(given: Option<String>, request: &CommandRequest, kind: &str) -> Result<AggregateId, ServiceError> {
    match given {
        Some(id) => parse_id(&id, kind),
        None => {
            let derived =
                Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("foodaid/{kind}/{}", request.command_id).as_bytes());
            Ok(AggregateId::try_from(derived.to_string()).expect("uuids are valid ids"))
        }
    }
}

pub fn parse_id(id: &str, kind: &str) -> Result<AggregateId, ServiceError> {
    id.parse().map_err(|e| ServiceError::validation(format!("invalid_{kind}_id"), e))
}

/// Refuses unless the actor has one of `roles` (admins and the platform always may).
pub fn require(actor: &Actor, roles: &[Role]) -> Result<(), ServiceError> {
    if actor.is_privileged() || roles.contains(&actor.role) {
        Ok(())
    } else {
        Err(ServiceError::forbidden("forbidden", format!("role {} may not do this", actor.role.as_str())))
    }
}

/// Refuses unless the actor is privileged or acts for `scope` with `role`. The refusal does not
/// name `scope`: it is often the owner of what was aimed at (a household's association), which
/// the caller must not learn.
pub fn require_scope(actor: &Actor, role: Role, scope: &str) -> Result<(), ServiceError> {
    if actor.is_privileged() || (actor.role == role && actor.scope.as_deref() == Some(scope)) {
        Ok(())
    } else {
        Err(ServiceError::forbidden("forbidden", format!("{actor} may not act for this {}", role.as_str())))
    }
}

/// Registers a command on one aggregate type: checks that the actor has one of `roles` (admins
/// and the platform always may), parses the payload as `P`, lets `to_command` pick the aggregate
/// and build its command (and refuse, e.g. for a scope), then runs it.
pub fn aggregate_command<A, P, F>(
    host: &mut ServiceHost,
    name: &str,
    runner: &Arc<CommandRunner<A>>,
    roles: &'static [Role],
    to_command: F,
) where
    A: Aggregate,
    P: DeserializeOwned + Send + 'static,
    F: Fn(P, &CommandRequest) -> Result<(AggregateId, A::Command), ServiceError> + Send + Sync + 'static,
{
    let (runner, to_command) = (runner.clone(), Arc::new(to_command));
    host.command(name, move |request| {
        let (runner, to_command) = (runner.clone(), to_command.clone());
        async move {
            require(&request.actor, roles)?;
            let body: P = parse_payload(&request.payload)?;
            let (id, command) = to_command(body, &request)?;
            runner.execute(id, command, meta(&request)).await
        }
    });
}

/// Registers a command run by a process over several aggregates: checks `roles`, parses the
/// payload as `P`, then hands both to `run` with its own copy of `state`.
pub fn process_command<S, P, F, Fut>(host: &mut ServiceHost, name: &str, roles: &'static [Role], state: S, run: F)
where
    S: Clone + Send + Sync + 'static,
    P: DeserializeOwned + Send + 'static,
    F: Fn(S, CommandRequest, P) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<runtime::CommandReply, ServiceError>> + Send + 'static,
{
    let run = Arc::new(run);
    host.command(name, move |request| {
        let (state, run) = (state.clone(), run.clone());
        async move {
            require(&request.actor, roles)?;
            let body: P = parse_payload(&request.payload)?;
            run(state, request, body).await
        }
    });
}

/// Registers a query answered from one projection: checks `roles` (`None`: every role may),
/// parses the parameters as `P`, waits for `min_seq`, then runs `answer` on the projection's
/// rows off the async executor.
pub fn projection_query<P, T, F>(
    host: &mut ServiceHost,
    name: &str,
    ctx: &ServiceContext,
    projection: &ProjectionHandle,
    roles: Option<&'static [Role]>,
    answer: F,
) where
    P: DeserializeOwned + Send + 'static,
    T: Serialize + Send + 'static,
    F: Fn(&View, P) -> Result<T, ServiceError> + Send + Sync + 'static,
{
    scoped_query(host, name, ctx, projection, roles, move |view, _: &Actor, params| answer(view, params));
}

/// Like [`projection_query`], for answers that depend on who asks (an association sees its own).
pub fn scoped_query<P, T, F>(
    host: &mut ServiceHost,
    name: &str,
    ctx: &ServiceContext,
    projection: &ProjectionHandle,
    roles: Option<&'static [Role]>,
    answer: F,
) where
    P: DeserializeOwned + Send + 'static,
    T: Serialize + Send + 'static,
    F: Fn(&View, &Actor, P) -> Result<T, ServiceError> + Send + Sync + 'static,
{
    let (ctx, projection, answer) = (ctx.clone(), projection.clone(), Arc::new(answer));
    host.query(name, move |request| {
        let (ctx, projection, answer) = (ctx.clone(), projection.clone(), answer.clone());
        async move {
            if let Some(roles) = roles {
                require(&request.actor, roles)?;
            }
            let params: P = query_params(&request)?;
            wait_for_min_seq(&ctx, &projection, &request).await?;
            let actor = request.actor.clone();
            with_view(&ctx.projections, projection.name(), move |view| answer(view, &actor, params)).await
        }
    });
}

/// A query's parameters as `P`; none given reads as `{}`.
pub fn query_params<P: DeserializeOwned>(request: &QueryRequest) -> Result<P, ServiceError> {
    match &request.params {
        serde_json::Value::Null => parse_payload(&serde_json::json!({})),
        given => parse_payload(given),
    }
}

/// How far ahead of the platform's clock a given time may be (devices' clocks drift).
pub const CLOCK_SKEW_MINUTES: i64 = 10;

/// Refuses, with `code`, a time that has not come yet (beyond the clocks' drift).
pub fn not_in_future(at: chrono::DateTime<chrono::Utc>, code: &str) -> Result<(), ServiceError> {
    if at > chrono::Utc::now() + chrono::Duration::minutes(CLOCK_SKEW_MINUTES) {
        return Err(ServiceError::validation(code, format!("{at} has not come yet")));
    }
    Ok(())
}

fn waited(e: WaitError) -> ServiceError {
    match e {
        WaitError::Timeout { .. } => ServiceError::unavailable("projection_lagging", e),
        WaitError::Stuck { .. } => ServiceError::unavailable("projection_stuck", e),
    }
}

/// Waits (bounded) until each of `projections` has applied everything `stream` holds now: a
/// process that decides from read models sees every commit acknowledged before it started.
pub async fn caught_up(
    ctx: &ServiceContext,
    projections: &[ProjectionHandle],
    stream: &str,
) -> Result<(), ServiceError> {
    let seq = ctx.events.last_sequence(stream).await.map_err(|e| ServiceError::unavailable("nats_unavailable", e))?;
    for projection in projections {
        projection.wait_for(stream, seq, ctx.query_wait).await.map_err(waited)?;
    }
    Ok(())
}

/// Waits (bounded) until `projection` has recorded the request's `min_seq` on its streams.
pub async fn wait_for_min_seq(
    ctx: &ServiceContext,
    projection: &ProjectionHandle,
    request: &QueryRequest,
) -> Result<(), ServiceError> {
    for (stream, seq) in &request.min_seq {
        if !projection.streams().contains(&stream.as_str()) || projection.reached(stream, *seq) {
            continue;
        }
        // A sequence the stream has not reached yet never will be in time: say so at once
        // rather than hold a request slot for the whole wait.
        let last =
            ctx.events.last_sequence(stream).await.map_err(|e| ServiceError::unavailable("nats_unavailable", e))?;
        if *seq > last {
            return Err(ServiceError::validation(
                "min_seq_unreachable",
                format!("min_seq {stream}:{seq} is beyond the stream's last commit ({last})"),
            ));
        }
        projection.wait_for(stream, *seq, ctx.query_wait).await.map_err(waited)?;
    }
    Ok(())
}

/// Runs `f` on a projection's rows off the async executor (sled reads block).
pub async fn with_view<T: Send + 'static>(
    store: &ProjectionStore,
    projection: &str,
    f: impl FnOnce(&View) -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    let view = store.view(projection).map_err(|e| ServiceError::internal("opening a projection", e))?;
    tokio::task::spawn_blocking(move || f(&view))
        .await
        .map_err(|e| ServiceError::internal("reading a projection", e))?
}

/// One answer for a command that changed several aggregates of `stream`: every event, and the
/// last sequence (which covers the others, as they share the stream).
pub fn combine(id: String, stream: &str, replies: Vec<runtime::CommandReply>) -> runtime::CommandReply {
    runtime::CommandReply {
        aggregate_id: id,
        stream: stream.to_owned(),
        seq: replies.iter().map(|r| r.seq).max().unwrap_or(0),
        version: 0,
        duplicate: !replies.is_empty() && replies.iter().all(|r| r.duplicate),
        events: replies.into_iter().flat_map(|r| r.events).collect(),
    }
}

pub fn storage(e: projections::StoreError) -> ServiceError {
    ServiceError::internal("reading a projection", e)
}

/// A position as it appears in the API.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Position {
    /// Latitude, decimal degrees (WGS84).
    pub lat: f64,
    /// Longitude, decimal degrees (WGS84).
    pub lon: f64,
}

impl From<values::GeoPoint> for Position {
    fn from(p: values::GeoPoint) -> Self {
        Position { lat: p.lat(), lon: p.lon() }
    }
}

/// A string schema limited to `values`, for domain enums that carry no schema of their own.
pub fn enum_schema(values: &[&str]) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

/// Parameters of a query that takes none (any given is an error).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// Deserialises a number given as a JSON number or as text: query-string and path parameters
/// arrive as text.
pub fn number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr + serde::Deserialize<'de>,
    T::Err: std::fmt::Display,
{
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Given<T> {
        Number(T),
        Text(String),
    }
    match Given::<T>::deserialize(deserializer)? {
        Given::Number(n) => Ok(n),
        Given::Text(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}

/// Deserialises an optional month, `YYYY-MM`: anything else (`mars`, `2026-13`) is refused
/// rather than matching nothing.
pub fn month<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let Some(given) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let day = chrono::NaiveDate::parse_from_str(&format!("{}-01", given.trim()), "%Y-%m-%d")
        .map_err(|_| serde::de::Error::custom(format!("month {given:?} is not YYYY-MM")))?;
    Ok(Some(day.format("%Y-%m").to_string()))
}

/// A CSV field, quoted when it must be (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}
