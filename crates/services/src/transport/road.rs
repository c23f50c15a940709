//! Planning a site's day, what drivers record on the road, and the sagas around them: a shipped
//! parcel joins its relay point's delivery; a completed delivery puts its parcels at the relay
//! point; a completed pickup becomes an incoming donation waiting to be checked in; chilled
//! goods out of the cold too long get their lots (or the incoming donation) flagged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike, Utc};
use distribution::ParcelEvent;
use eventcore::{AggregateId, CommandMeta, EventEnvelope};
use projections::ProjectionHandle;
use runtime::{
    Actor, CommandReply, CommandRequest, CommandRunner, ErrorKind, QueryRequest, Reaction, Reactor, Role, ServiceError,
    ServiceHost,
};
use serde::Deserialize;
use serde_json::json;
use transport::{Job, JobCommand, JobKind, Plan, PlanCommand, PlanEvent, Stop};
use utoipa::ToSchema;
use uuid::Uuid;
use values::GeoPoint;

use super::planning::{self, Crew, Day};
use super::{plan_id, plan_of_route, DriverRow, JobRow, VehicleRow, SERVICE};
use crate::common::{
    caught_up, combine, meta, not_in_future, parse_id, process_command, storage, with_view, ServiceContext,
    TransportRules,
};
use crate::donations::DonorRow;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRoutes {
    pub site_id: String,
    pub date: NaiveDate,
    /// Seconds to search (default: the collective's `plan_seconds`), at most 60.
    pub seconds: Option<f64>,
}

/// Makes the pickup jobs of a day from donors' weekly collections.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulePickups {
    pub date: NaiveDate,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteAction {
    pub route_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopBody {
    pub route_id: String,
    pub job_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteStop {
    pub route_id: String,
    pub job_id: String,
    /// What was actually loaded (less than planned: a partial pickup); none: as planned.
    pub kg: Option<f64>,
    pub chilled_kg: Option<f64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailStop {
    pub route_id: String,
    pub job_id: String,
    /// Why: closed, nobody there, nothing to collect, no access...
    pub reason: String,
}

#[derive(Clone)]
struct Road {
    plans: Arc<CommandRunner<Plan>>,
    jobs: Arc<CommandRunner<Job>>,
    ctx: ServiceContext,
    view: ProjectionHandle,
}

fn system() -> Actor {
    Actor::system(SERVICE)
}

fn grams(kg: Option<f64>, what: &str) -> Result<Option<u64>, ServiceError> {
    match kg {
        Some(kg) if !kg.is_finite() || !(0.0..=100_000.0).contains(&kg) => {
            Err(ServiceError::validation("invalid_quantity", format!("{what} is between 0 and 100000 kg")))
        }
        Some(kg) => Ok(Some((kg * 1000.0).round() as u64)),
        None => Ok(None),
    }
}

impl Road {
    fn rules(&self) -> &TransportRules {
        &self.ctx.policies.transport
    }

    /// Plans the routes of a site's day that have not started; stops done or on a route on the
    /// road stay where they are.
    async fn plan(&self, request: CommandRequest, body: PlanRoutes) -> Result<CommandReply, ServiceError> {
        let seconds = body.seconds.unwrap_or(self.rules().plan_seconds);
        if !(seconds.is_finite() && (0.05..=60.0).contains(&seconds)) {
            return Err(ServiceError::validation("invalid_seconds", "plan for 0.05 to 60 seconds"));
        }
        let id = plan_id(&body.site_id, body.date)?;
        let (plan, _) = self.plans.load(&id).await?;
        let ask = QueryRequest::new(system(), json!({ "site_id": body.site_id }));
        let site: crate::stock::SiteRow = self.ctx.client.query(crate::stock::SERVICE, "get_site", &ask).await?;
        let depot = site
            .position
            .and_then(|p| GeoPoint::new(p.lat, p.lon).ok())
            .ok_or_else(|| ServiceError::validation("site_without_position", "give the site a position first"))?;
        // The day as it is: every job, vehicle and driver acknowledged before this command.
        caught_up(&self.ctx, std::slice::from_ref(&self.view), SERVICE).await?;
        let (site_id, date) = (body.site_id.clone(), body.date);
        let (jobs, vehicles, drivers) = with_view(&self.ctx.projections, self.view.name(), move |view| {
            let jobs: Vec<JobRow> = view.scan_json("job", format!("{date}/").as_bytes()).map_err(storage)?;
            let vehicles: Vec<VehicleRow> = view.scan_json("vehicle", b"").map_err(storage)?;
            let drivers: Vec<DriverRow> = view.scan_json("driver", b"").map_err(storage)?;
            Ok((
                jobs.into_iter().filter(|j| j.site_id == site_id).collect::<Vec<_>>(),
                vehicles.into_iter().filter(|v| v.home_site == site_id).collect::<Vec<_>>(),
                drivers,
            ))
        })
        .await?;
        // What stays: stops done, and the routes on the road with their vehicles and drivers.
        let done = plan.done_jobs();
        let on_road: Vec<_> = plan.routes_on_the_road().map(|r| &r.route).collect();
        let kept: BTreeSet<&str> = on_road.iter().flat_map(|r| r.stops.iter().map(|s| s.job_id.as_str())).collect();
        let pool: Vec<JobRow> = jobs
            .into_iter()
            .filter(|j| !j.cancelled && !done.contains(j.job_id.as_str()) && !kept.contains(j.job_id.as_str()))
            .filter(|j| j.kind == "pickup" || !j.parcels.is_empty())
            .collect();
        let busy_vehicles: BTreeSet<&str> = on_road.iter().map(|r| r.vehicle_id.as_str()).collect();
        let busy_drivers: BTreeSet<&str> = on_road.iter().map(|r| r.driver_id.as_str()).collect();
        let vehicles: Vec<VehicleRow> =
            vehicles.into_iter().filter(|v| !busy_vehicles.contains(v.vehicle_id.as_str())).collect();
        let drivers: Vec<DriverRow> =
            drivers.into_iter().filter(|d| !busy_drivers.contains(d.driver_id.as_str())).collect();
        let crews: Vec<Crew> = planning::crews(&vehicles, &drivers, date);
        // A same-day re-plan starts from now, read on the collective's clock (windows and shifts
        // are local times).
        let (calendar, now) = (self.ctx.calendar, Utc::now());
        let not_before =
            if calendar.day_of(now) == date { i64::from(calendar.time_of(now).num_seconds_from_midnight()) } else { 0 };
        let day = Day { plan_id: id.to_string(), revision: plan.revision + 1, depot, jobs: pool, crews, not_before };
        let points = day.points();
        let matrices = match &self.rules().osrm_url {
            Some(url) => match planning::osrm(url, &points).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "OSRM did not answer: great-circle estimate instead");
                    planning::estimated(&points, self.rules())
                }
            },
            None => planning::estimated(&points, self.rules()),
        };
        let seed = u64::from(date.num_days_from_ce().unsigned_abs());
        let budget = Duration::from_secs_f64(seconds);
        let planned = tokio::task::spawn_blocking(move || planning::plan_day(day, matrices, budget, seed))
            .await
            .map_err(|e| ServiceError::internal("planning routes", e))?
            .map_err(|e| ServiceError::internal("planning routes", e))?;
        tracing::info!(plan = %id, routes = planned.routes.len(), unplanned = planned.unplanned.len(),
            iterations = planned.iterations, "routes planned");
        let command = PlanCommand::Make {
            date: body.date,
            site_id: body.site_id,
            routes: planned.routes,
            unplanned: planned.unplanned,
        };
        self.plans.execute(id, command, meta(&request)).await
    }

    /// A driver's action on one of their routes, at the time the device recorded it.
    async fn act(
        &self,
        request: CommandRequest,
        route_id: &str,
        command: impl FnOnce(DateTime<Utc>) -> PlanCommand,
    ) -> Result<CommandReply, ServiceError> {
        let at = request.occurred_at.unwrap_or_else(Utc::now);
        not_in_future(at, "occurred_in_future")?;
        let id = plan_of_route(route_id)?;
        // A route's driver never changes (a re-plan makes new routes): a cached plan that has
        // the route answers; one that has not is read afresh.
        let cached = self.plans.load_cached(&id).await?;
        let (driver, day) = match cached.routes.get(route_id) {
            Some(route) => (route.route.driver_id.clone(), cached.date),
            None => {
                let (plan, _) = self.plans.load(&id).await?;
                let route = plan
                    .routes
                    .get(route_id)
                    .ok_or_else(|| ServiceError::not_found("route_not_found", format!("no route {route_id}")))?;
                (route.route.driver_id.clone(), plan.date)
            }
        };
        if !request.actor.is_privileged() && request.actor.scope.as_deref() != Some(driver.as_str()) {
            return Err(ServiceError::forbidden("forbidden", "a driver acts on their own routes"));
        }
        // A phone's clock set a day back, or an action queued for another route: nothing done
        // on a route happens before its day (in the collective's time zone).
        if let Some(day) = day.filter(|d| self.ctx.calendar.day_of(at) < *d) {
            return Err(ServiceError::validation(
                "occurred_before_route_day",
                format!("{at} is before this route's day, {day}"),
            ));
        }
        self.plans.execute(id, command(at), meta(&request)).await
    }
}

/// Metadata of a command a reaction issues: idempotent by the event's id.
fn caused_by(envelope: &EventEnvelope, what: &str, occurred_at: Option<DateTime<Utc>>) -> CommandMeta {
    CommandMeta {
        command_id: format!("{what}/{}", envelope.event_id),
        actor: format!("system/{SERVICE}"),
        correlation_id: envelope.correlation_id,
        causation_id: envelope.event_id,
        occurred_at,
    }
}

/// A request to another service on behalf of a reaction.
fn asked(envelope: &EventEnvelope, what: &str, payload: serde_json::Value) -> CommandRequest {
    CommandRequest {
        correlation_id: Some(envelope.correlation_id),
        causation_id: Some(envelope.event_id),
        ..CommandRequest::new(format!("{what}/{}", envelope.event_id), system(), payload)
    }
}

/// A conflict no retry will change (the parcel was cancelled, or the association marked it at
/// the relay point first) is logged and the saga goes on; anything else is retried, and a
/// refusal that persists shows in the reactor's log and pending count.
fn tolerate(result: Result<CommandReply, ServiceError>, what: &str) -> Result<(), ServiceError> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.kind == ErrorKind::Conflict => {
            tracing::warn!(error = %e, "{what}: refused, left as it is");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// What a completed stop sets off in the other services.
async fn on_the_road(road: &Road, reaction: Reaction) -> Result<(), ServiceError> {
    let events = reaction.events::<PlanEvent>()?;
    let cold: BTreeMap<&str, u32> = events
        .iter()
        .filter_map(|(_, e)| match e {
            PlanEvent::ColdChainExceeded { job_id, minutes, .. } => Some((job_id.as_str(), *minutes)),
            _ => None,
        })
        .collect();
    for (envelope, event) in &events {
        let PlanEvent::StopCompleted { job_id, at, grams, chilled_grams, .. } = event else { continue };
        let (job, _) = road.jobs.load(&parse_id(job_id, "job")?).await?;
        let (Some(stop), Some(kind)) = (&job.stop, &job.kind) else { continue };
        let out = cold.get(job_id.as_str()).map(|m| format!("cold chain: {m} min out of refrigeration at {job_id}"));
        match kind {
            JobKind::Delivery { .. } => {
                for parcel in job.parcels.keys() {
                    let mut ask = asked(envelope, &format!("at-relay/{parcel}"), json!({ "parcel_id": parcel }));
                    ask.occurred_at = Some(*at);
                    let result = road.ctx.client.command(crate::distribution::SERVICE, "parcel_at_relay", &ask).await;
                    tolerate(result, "a delivered parcel")?;
                }
                if let Some(reason) = &out {
                    for lot in &job.chilled_lots {
                        let ask = asked(envelope, &format!("flag/{lot}"), json!({ "lot_id": lot, "reason": reason }));
                        tolerate(
                            road.ctx.client.command(crate::stock::SERVICE, "flag_lot", &ask).await,
                            "a lot to flag",
                        )?;
                    }
                }
            }
            JobKind::Pickup { donor_id, .. } => {
                let donation = Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("foodaid/collected/{job_id}").as_bytes());
                let ask = asked(
                    envelope,
                    "collected",
                    json!({
                        "donation_id": donation.to_string(),
                        "donor_id": donor_id,
                        "site_id": stop.site_id,
                        "collected_at": at,
                        "grams": grams,
                        "chilled_grams": chilled_grams,
                        "job_id": job_id,
                        "inspect": out,
                    }),
                );
                let result = road.ctx.client.command(crate::donations::SERVICE, "expect_donation", &ask).await;
                tolerate(result, "a collected donation")?;
            }
        }
    }
    Ok(())
}

/// The window of a relay point on `date`: its first opening slot that weekday, or office
/// hours when it recorded none.
fn window(relay: &crate::distribution::RelayPointRow, date: NaiveDate) -> (NaiveTime, NaiveTime) {
    relay.opening.iter().filter(|s| s.day == date.weekday()).min_by_key(|s| s.opens).map_or_else(
        || (NaiveTime::from_hms_opt(9, 0, 0).expect("a time"), NaiveTime::from_hms_opt(17, 0, 0).expect("a time")),
        |s| (s.opens, s.closes),
    )
}

/// A shipped parcel joins its relay point's delivery of that day from its site.
async fn on_shipped(road: &Road, reaction: Reaction) -> Result<(), ServiceError> {
    for (envelope, event) in reaction.events::<ParcelEvent>()? {
        if !matches!(event, ParcelEvent::ParcelShipped {}) {
            continue;
        }
        let parcel_id = envelope.aggregate_id.to_string();
        let mut ask = QueryRequest::new(system(), json!({ "parcel_id": parcel_id }));
        ask.min_seq.insert(reaction.stream.clone(), reaction.seq);
        let parcel: crate::distribution::ParcelRow =
            road.ctx.client.query(crate::distribution::SERVICE, "get_parcel", &ask).await?;
        let (mut site, mut chilled, mut chilled_lots, mut total) = (None, 0, Vec::new(), 0);
        let mut storage = BTreeMap::new();
        for line in &parcel.lines {
            if !storage.contains_key(&line.lot_id) {
                let ask = QueryRequest::new(system(), json!({ "lot_id": line.lot_id }));
                let lot: crate::stock::LotRow = road.ctx.client.query(crate::stock::SERVICE, "get_lot", &ask).await?;
                site.get_or_insert(lot.site_id.clone());
                storage.insert(line.lot_id.clone(), lot.storage);
            }
            total += line.grams;
            if storage[&line.lot_id] != values::StorageClass::Ambient {
                chilled += line.grams;
                if !chilled_lots.contains(&line.lot_id) {
                    chilled_lots.push(line.lot_id.clone());
                }
            }
        }
        let Some(site_id) = site else {
            tracing::warn!(parcel = %parcel_id, "an empty parcel shipped: nothing to deliver");
            continue;
        };
        let ask = QueryRequest::new(system(), json!({ "association_id": parcel.association_id }));
        let association: crate::distribution::AssociationRow =
            road.ctx.client.query(crate::distribution::SERVICE, "get_association", &ask).await?;
        let Some(relay) = association.relay_points.iter().find(|r| r.relay_id == parcel.relay_point_id) else {
            tracing::warn!(parcel = %parcel_id, relay = %parcel.relay_point_id, "a parcel for an unknown relay point");
            continue;
        };
        let key = format!("foodaid/delivery/{}/{site_id}/{}", relay.relay_id, parcel.date);
        let job_id = AggregateId::try_from(Uuid::new_v5(&Uuid::NAMESPACE_OID, key.as_bytes()).to_string())
            .expect("uuids are valid ids");
        let (job, _) = road.jobs.load(&job_id).await?;
        if job.stop.is_none() {
            let (opens, closes) = window(relay, parcel.date);
            let stop = Stop {
                date: parcel.date,
                site_id,
                position: relay.position.and_then(|p| GeoPoint::new(p.lat, p.lon).ok()),
                address: format!("{}, {}", relay.address, relay.commune),
                contact: format!("{} ({})", relay.name, association.name),
                opens,
                closes,
                service_minutes: road.rules().delivery_minutes,
            };
            let kind = JobKind::Delivery { relay_point_id: relay.relay_id.clone() };
            let command = JobCommand::Schedule { stop, kind };
            tolerate(
                road.jobs.execute(job_id.clone(), command, caused_by(envelope, "delivery", None)).await,
                "a delivery",
            )?;
        }
        let command = JobCommand::AddParcel { parcel_id, grams: total, chilled_grams: chilled, chilled_lots };
        tolerate(road.jobs.execute(job_id, command, caused_by(envelope, "join", None)).await, "a shipped parcel")?;
    }
    Ok(())
}

/// The pickup jobs a donor's weekly collections make on `date`; a job's id derives from donor,
/// day and window, so asking again (or from several nodes) makes each once. A job already
/// scheduled keeps what it was given (a coordinator may have cancelled or changed it).
async fn schedule_pickups(
    road: &Road,
    donor: &DonorRow,
    date: NaiveDate,
    meta: &CommandMeta,
) -> Result<Vec<CommandReply>, ServiceError> {
    let mut replies = Vec::new();
    for c in donor.collections.iter().filter(|c| c.day == date.weekday()) {
        let key = format!("foodaid/collection/{}/{date}/{}", donor.donor_id, c.opens);
        let id = AggregateId::try_from(Uuid::new_v5(&Uuid::NAMESPACE_OID, key.as_bytes()).to_string())
            .expect("uuids are valid ids");
        let stop = Stop {
            date,
            site_id: c.site_id.clone(),
            position: donor.position.and_then(|p| GeoPoint::new(p.lat, p.lon).ok()),
            address: donor.address.clone(),
            contact: donor.name.clone(),
            opens: c.opens,
            closes: c.closes,
            service_minutes: road.rules().pickup_minutes,
        };
        let kind = JobKind::Pickup { donor_id: donor.donor_id.clone(), kg: c.kg, chilled_kg: c.chilled_kg };
        let meta = CommandMeta { command_id: format!("collection/{id}"), ..meta.clone() };
        match road.jobs.execute(id, JobCommand::Schedule { stop, kind }, meta).await {
            Ok(reply) => replies.push(reply),
            Err(e) if e.kind == ErrorKind::Conflict => {
                tracing::info!(donor = %donor.donor_id, %date, "a collection's job exists otherwise: kept as it is")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(replies)
}

/// A donor's collections changed: the days ahead get their pickups.
async fn on_donor(road: &Road, reaction: Reaction) -> Result<(), ServiceError> {
    for (envelope, event) in reaction.events::<donations::DonorEvent>()? {
        if !matches!(event, donations::DonorEvent::CollectionsSet { .. }) {
            continue;
        }
        let mut ask = QueryRequest::new(system(), json!({ "donor_id": envelope.aggregate_id.as_str() }));
        ask.min_seq.insert(reaction.stream.clone(), reaction.seq);
        let donor: DonorRow = road.ctx.client.query(crate::donations::SERVICE, "get_donor", &ask).await?;
        let today = road.ctx.today();
        for ahead in 0..=i64::from(road.rules().pickup_days_ahead) {
            let date = today + chrono::Duration::days(ahead);
            schedule_pickups(road, &donor, date, &caused_by(envelope, "collections", None)).await?;
        }
    }
    Ok(())
}

pub fn register(host: &mut ServiceHost, ctx: &ServiceContext, view: &ProjectionHandle) {
    let road = Road {
        plans: ctx.runner::<Plan>(SERVICE),
        jobs: ctx.runner::<Job>(SERVICE),
        ctx: ctx.clone(),
        view: view.clone(),
    };
    process_command(host, "plan_routes", &[], road.clone(), |road, request, body: PlanRoutes| async move {
        road.plan(request, body).await
    });
    process_command(host, "schedule_pickups", &[], road.clone(), |road, request, body: SchedulePickups| async move {
        let ask = QueryRequest::new(system(), json!({}));
        let donors: Vec<DonorRow> = road.ctx.client.query(crate::donations::SERVICE, "list_donors", &ask).await?;
        let mut replies = Vec::new();
        for donor in donors.iter().filter(|d| !d.collections.is_empty()) {
            replies.extend(schedule_pickups(&road, donor, body.date, &meta(&request)).await?);
        }
        Ok(combine(format!("pickups-{}", body.date), SERVICE, replies))
    });
    let driver: &'static [Role] = &[Role::Driver];
    process_command(host, "start_route", driver, road.clone(), |road, request, body: RouteAction| async move {
        let route_id = body.route_id.clone();
        road.act(request, &body.route_id, |at| PlanCommand::StartRoute { route_id, at }).await
    });
    process_command(host, "end_route", driver, road.clone(), |road, request, body: RouteAction| async move {
        let route_id = body.route_id.clone();
        road.act(request, &body.route_id, |at| PlanCommand::EndRoute { route_id, at }).await
    });
    process_command(host, "arrive_stop", driver, road.clone(), |road, request, body: StopBody| async move {
        let StopBody { route_id, job_id } = body;
        road.act(request, &route_id.clone(), |at| PlanCommand::Arrive { route_id, job_id, at }).await
    });
    process_command(host, "complete_stop", driver, road.clone(), |road, request, body: CompleteStop| async move {
        let (grams, chilled_grams) = (grams(body.kg, "kg")?, grams(body.chilled_kg, "chilled_kg")?);
        let cold_limit_minutes = road.rules().cold_chain_minutes;
        let CompleteStop { route_id, job_id, .. } = body;
        road.act(request, &route_id.clone(), |at| PlanCommand::Complete {
            route_id,
            job_id,
            at,
            grams,
            chilled_grams,
            cold_limit_minutes,
        })
        .await
    });
    process_command(host, "fail_stop", driver, road.clone(), |road, request, body: FailStop| async move {
        let FailStop { route_id, job_id, reason } = body;
        road.act(request, &route_id.clone(), |at| PlanCommand::Fail { route_id, job_id, at, reason }).await
    });

    let r = road.clone();
    host.reactor(Reactor::new(
        "transport_donor_collections",
        crate::donations::SERVICE,
        format!("{}.donor.>", crate::donations::SERVICE),
        move |reaction| {
            let road = r.clone();
            async move { on_donor(&road, reaction).await }
        },
    ));
    let r = road.clone();
    host.reactor(Reactor::new("transport_road_effects", SERVICE, format!("{SERVICE}.plan.>"), move |reaction| {
        let road = r.clone();
        async move { on_the_road(&road, reaction).await }
    }));
    host.reactor(Reactor::new(
        "transport_shipped_parcels",
        crate::distribution::SERVICE,
        format!("{}.parcel.>", crate::distribution::SERVICE),
        move |reaction| {
            let road = road.clone();
            async move { on_shipped(&road, reaction).await }
        },
    ));
}
