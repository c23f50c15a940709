//! Transport service: the fleet (vehicles, drivers), the day's jobs, route plans, and what
//! drivers record on the road, with their read models.

mod planning;
mod road;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use eventcore::Aggregate;
use projections::{ApplyError, Engine, Projection, RecordedEvent, Tx};
use runtime::{Actor, QueryRequest, Role, ServiceError, ServiceHost};
use serde::{Deserialize, Serialize};
use transport::{
    Driver, DriverCommand, DriverEvent, DriverSpec, Job, JobCommand, JobEvent, JobKind, Plan, PlanEvent, PlannedStop,
    RouteState, Slot, Stop, StopAction, StopState, StopStatus, Unplanned, Vehicle, VehicleCommand, VehicleEvent,
    VehicleSpec,
};
use utoipa::ToSchema;
use values::{GeoPoint, Name};

use crate::common::{
    aggregate_command, enum_schema, meta, new_id, parse_id, process_command, projection_query, scoped_query, storage,
    NoParams, Position, ServiceContext,
};
use crate::donations::DonorRow;

pub use road::{CompleteStop, FailStop, PlanRoutes, RouteAction, SchedulePickups, StopBody};

pub const SERVICE: &str = "transport";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterVehicle {
    pub vehicle_id: Option<String>,
    #[schema(value_type = String, example = "Kangoo frigo")]
    pub name: Name,
    pub capacity_kg: u32,
    #[serde(default)]
    pub volume_l: u32,
    #[serde(default)]
    pub chilled_capacity_kg: u32,
    pub home_site: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetireVehicle {
    pub vehicle_id: String,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VehicleRow {
    pub vehicle_id: String,
    pub name: String,
    pub capacity_kg: u32,
    pub volume_l: u32,
    pub chilled_capacity_kg: u32,
    pub home_site: String,
    pub retired: bool,
    /// Days it is off the road.
    #[serde(default)]
    pub off_days: Vec<NaiveDate>,
    pub registered_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VehicleAvailability {
    pub vehicle_id: String,
    pub date: NaiveDate,
    /// false: off the road that day (servicing, lent out).
    pub available: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDriver {
    pub driver_id: Option<String>,
    #[schema(value_type = String, example = "Monique")]
    pub name: Name,
    /// Vehicles they may drive.
    pub vehicles: Vec<String>,
    /// Longest shift they take, minutes (60 to 840).
    pub max_shift_minutes: u32,
}

/// A stretch of a day when a driver is free, local time.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotBody {
    #[schema(value_type = String, example = "08:00")]
    pub from: NaiveTime,
    #[schema(value_type = String, example = "13:00")]
    pub to: NaiveTime,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DriverAvailability {
    pub driver_id: String,
    pub date: NaiveDate,
    /// When they are free that day; none: not available.
    pub slots: Vec<SlotBody>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetireDriver {
    pub driver_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DriverRow {
    pub driver_id: String,
    pub name: String,
    pub vehicles: BTreeSet<String>,
    pub max_shift_minutes: u32,
    /// Free slots per day.
    #[schema(value_type = Object)]
    pub availability: BTreeMap<NaiveDate, Vec<Slot>>,
    pub retired: bool,
}

/// A job a coordinator adds: a pickup at a donor, or a delivery (parcels join deliveries as
/// they ship). Address and position default to the donor's.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleJob {
    pub job_id: Option<String>,
    pub date: NaiveDate,
    /// The site whose vehicles do it.
    pub site_id: String,
    /// `pickup` or `delivery`.
    pub kind: String,
    /// The donor (pickup) or relay point (delivery).
    pub party_id: String,
    /// Expected kilograms (pickup), and the chilled or frozen ones among them.
    #[serde(default)]
    pub kg: u32,
    #[serde(default)]
    pub chilled_kg: u32,
    pub address: Option<String>,
    pub position: Option<Position>,
    #[serde(default)]
    pub contact: String,
    #[schema(value_type = String, example = "09:00")]
    pub opens: NaiveTime,
    #[schema(value_type = String, example = "11:00")]
    pub closes: NaiveTime,
    #[serde(default = "default_service_minutes")]
    pub service_minutes: u32,
}

fn default_service_minutes() -> u32 {
    15
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelJob {
    pub job_id: String,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobRow {
    pub job_id: String,
    pub date: NaiveDate,
    pub site_id: String,
    /// `pickup` or `delivery`.
    pub kind: String,
    /// The donor (pickup) or relay point (delivery).
    pub party_id: String,
    pub address: String,
    pub position: Option<Position>,
    pub contact: String,
    #[schema(value_type = String)]
    pub opens: NaiveTime,
    #[schema(value_type = String)]
    pub closes: NaiveTime,
    pub service_minutes: u32,
    /// Expected (pickup) or carried (delivery) grams, and the chilled or frozen ones.
    pub grams: u64,
    pub chilled_grams: u64,
    /// Parcels a delivery hands over.
    pub parcels: Vec<String>,
    pub chilled_lots: Vec<String>,
    pub cancelled: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListJobs {
    pub date: NaiveDate,
    pub site_id: Option<String>,
}

fn stop_status_schema() -> utoipa::openapi::Object {
    enum_schema(&["planned", "arrived", "completed", "failed"])
}

/// A stop as the driver sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StopRow {
    pub job_id: String,
    /// `load` (pickup at a donor) or `unload` (delivery at a relay point).
    #[schema(value_type = String)]
    pub action: StopAction,
    pub party_id: String,
    pub address: String,
    pub position: Position,
    /// Opens navigation on a phone.
    pub geo: String,
    pub contact: String,
    #[schema(value_type = String)]
    pub opens: NaiveTime,
    #[schema(value_type = String)]
    pub closes: NaiveTime,
    /// Planned arrival.
    #[schema(value_type = String)]
    pub arrival: NaiveTime,
    pub service_minutes: u32,
    /// Kilograms to load or unload, the chilled or frozen ones among them.
    pub kg: f64,
    pub chilled_kg: f64,
    pub parcels: u32,
    #[schema(schema_with = stop_status_schema)]
    pub status: StopStatus,
    pub arrived_at: Option<DateTime<Utc>>,
    pub done_at: Option<DateTime<Utc>>,
    /// What was actually loaded or unloaded.
    pub actual_kg: Option<f64>,
    pub partial: bool,
    pub fail_reason: Option<String>,
    /// Minutes chilled goods spent out of the cold, when over the rule.
    pub cold_chain_minutes: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RouteRow {
    pub route_id: String,
    pub plan_id: String,
    pub date: NaiveDate,
    pub site_id: String,
    pub vehicle_id: String,
    pub driver_id: String,
    pub refrigerated: bool,
    #[schema(value_type = String)]
    pub departure: NaiveTime,
    #[schema(value_type = String)]
    pub back: NaiveTime,
    pub km: f64,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub stops: Vec<StopRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UnplannedRow {
    pub job_id: String,
    /// `no_refrigerated_vehicle`, `capacity`, `window_unreachable`, `fleet_full`, `no_vehicle`
    /// or `no_position`.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PlanRow {
    pub plan_id: String,
    pub site_id: String,
    pub date: NaiveDate,
    /// 1 for the first plan, then one more per re-plan.
    pub revision: u32,
    pub planned_at: DateTime<Utc>,
    pub routes: Vec<RouteRow>,
    pub unplanned: Vec<UnplannedRow>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetPlan {
    pub site_id: String,
    pub date: NaiveDate,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListRoutes {
    pub date: NaiveDate,
    /// One driver's (a driver's token implies their own).
    pub driver_id: Option<String>,
}

/// The plan of a site and day: `<site>-<yyyymmdd>`.
pub fn plan_id(site_id: &str, date: NaiveDate) -> Result<eventcore::AggregateId, ServiceError> {
    parse_id(&format!("{site_id}-{}", date.format("%Y%m%d")), "plan")
}

/// The plan a route belongs to: its id up to the last `_`.
pub fn plan_of_route(route_id: &str) -> Result<eventcore::AggregateId, ServiceError> {
    let (plan, _) = route_id
        .rsplit_once('_')
        .ok_or_else(|| ServiceError::not_found("route_not_found", format!("no route {route_id}")))?;
    parse_id(plan, "route")
}

fn kg(grams: u64) -> f64 {
    grams as f64 / 1000.0
}

fn stop_row(s: PlannedStop, progress: StopState) -> StopRow {
    let position = Position::from(s.position);
    StopRow {
        geo: format!("geo:{:.6},{:.6}", position.lat, position.lon),
        job_id: s.job_id,
        action: s.action,
        party_id: s.party_id,
        address: s.address,
        position,
        contact: s.contact,
        opens: s.opens,
        closes: s.closes,
        arrival: s.arrival,
        service_minutes: s.service_minutes,
        kg: kg(s.grams),
        chilled_kg: kg(s.chilled_grams),
        parcels: s.parcels,
        status: progress.status,
        arrived_at: progress.arrived_at,
        done_at: progress.done_at,
        actual_kg: progress.grams.map(kg),
        partial: progress.partial,
        fail_reason: progress.fail_reason,
        cold_chain_minutes: progress.cold_chain_minutes,
    }
}

/// A plan as the transport projection keeps it: the aggregate's own state, folded by its own
/// `apply`, and when it was last planned.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredPlan {
    state: Plan,
    planned_at: Option<DateTime<Utc>>,
}

impl StoredPlan {
    fn row(self, plan_id: &str) -> PlanRow {
        let Plan { date, site_id, revision, routes, unplanned } = self.state;
        let date = date.unwrap_or_default();
        let mut routes: Vec<RouteRow> = routes
            .into_values()
            .map(|RouteState { route, started_at, ended_at, mut stops }| RouteRow {
                route_id: route.route_id,
                plan_id: plan_id.to_owned(),
                date,
                site_id: site_id.clone(),
                vehicle_id: route.vehicle_id,
                driver_id: route.driver_id,
                refrigerated: route.refrigerated,
                departure: route.departure,
                back: route.back,
                km: route.metres as f64 / 1000.0,
                started_at,
                ended_at,
                stops: route
                    .stops
                    .into_iter()
                    .map(|s| {
                        let progress = stops.remove(&s.job_id).unwrap_or_else(StopState::planned);
                        stop_row(s, progress)
                    })
                    .collect(),
            })
            .collect();
        routes.sort_by(|a, b| a.departure.cmp(&b.departure).then_with(|| a.route_id.cmp(&b.route_id)));
        PlanRow {
            plan_id: plan_id.to_owned(),
            site_id,
            date,
            revision,
            planned_at: self.planned_at.unwrap_or_default(),
            routes,
            unplanned: unplanned
                .into_iter()
                .map(|Unplanned { job_id, reason }| UnplannedRow { job_id, reason })
                .collect(),
        }
    }
}

/// A job as the day's list shows it.
fn job_row(job_id: &str, job: &Job) -> Option<JobRow> {
    let (stop, kind) = (job.stop.as_ref()?, job.kind.as_ref()?);
    let (kind, party_id) = match kind {
        JobKind::Pickup { donor_id, .. } => ("pickup", donor_id),
        JobKind::Delivery { relay_point_id } => ("delivery", relay_point_id),
    };
    let (grams, chilled_grams) = job.load();
    Some(JobRow {
        job_id: job_id.to_owned(),
        date: stop.date,
        site_id: stop.site_id.clone(),
        kind: kind.into(),
        party_id: party_id.clone(),
        address: stop.address.clone(),
        position: stop.position.map(Position::from),
        contact: stop.contact.clone(),
        opens: stop.opens,
        closes: stop.closes,
        service_minutes: stop.service_minutes,
        grams,
        chilled_grams,
        parcels: job.parcels.keys().cloned().collect(),
        chilled_lots: job.chilled_lots.iter().cloned().collect(),
        cancelled: job.cancelled,
    })
}

pub struct TransportProjection;

impl TransportProjection {
    fn vehicle(tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError> {
        let id = event.envelope.aggregate_id.as_bytes();
        match event.decode::<VehicleEvent>()? {
            VehicleEvent::VehicleRegistered { spec } => tx.put_json(
                "vehicle",
                id,
                &VehicleRow {
                    vehicle_id: event.envelope.aggregate_id.to_string(),
                    name: spec.name.into(),
                    capacity_kg: spec.capacity_kg,
                    volume_l: spec.volume_l,
                    chilled_capacity_kg: spec.chilled_capacity_kg,
                    home_site: spec.home_site,
                    retired: false,
                    off_days: Vec::new(),
                    registered_at: event.envelope.occurred_at,
                },
            ),
            VehicleEvent::VehicleRetired { .. } => {
                tx.update_json("vehicle", id, |row: &mut VehicleRow| row.retired = true)?;
            }
            VehicleEvent::VehicleAvailabilitySet { date, available } => {
                tx.update_json("vehicle", id, |row: &mut VehicleRow| {
                    row.off_days.retain(|d| *d != date);
                    if !available {
                        row.off_days.push(date);
                        row.off_days.sort();
                    }
                })?;
            }
        }
        Ok(())
    }

    fn driver(tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError> {
        let id = event.envelope.aggregate_id.as_bytes();
        match event.decode::<DriverEvent>()? {
            DriverEvent::DriverRegistered { spec } => tx.put_json(
                "driver",
                id,
                &DriverRow {
                    driver_id: event.envelope.aggregate_id.to_string(),
                    name: spec.name.into(),
                    vehicles: spec.vehicles,
                    max_shift_minutes: spec.max_shift_minutes,
                    availability: BTreeMap::new(),
                    retired: false,
                },
            ),
            DriverEvent::AvailabilitySet { date, slots } => {
                tx.update_json("driver", id, |row: &mut DriverRow| {
                    if slots.is_empty() {
                        row.availability.remove(&date);
                    } else {
                        row.availability.insert(date, slots);
                    }
                })?;
            }
            DriverEvent::DriverRetired {} => {
                tx.update_json("driver", id, |row: &mut DriverRow| row.retired = true)?;
            }
        }
        Ok(())
    }

    /// Jobs are listed by day (`job`, keys `<date>/<job>`), from the aggregate's state.
    fn job(tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError> {
        let id = event.envelope.aggregate_id.as_ref();
        let mut job: Job = tx.get_json("job_state", id.as_bytes())?.unwrap_or_default();
        job.apply(&event.decode::<JobEvent>()?);
        if let Some(row) = job_row(id, &job) {
            tx.put_json("job", format!("{}/{id}", row.date).as_bytes(), &row);
        }
        tx.put_json("job_state", id.as_bytes(), &job);
        Ok(())
    }

    /// Plans, with an index by day (`plan_day`, keys `<date>/<plan>`).
    fn plan(tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError> {
        let id = event.envelope.aggregate_id.as_ref();
        let mut stored: StoredPlan = tx.get_json("plan", id.as_bytes())?.unwrap_or_default();
        let event_data = event.decode::<PlanEvent>()?;
        if let PlanEvent::PlanMade { date, .. } = &event_data {
            stored.planned_at = Some(event.envelope.occurred_at);
            tx.put("plan_day", format!("{date}/{id}").as_bytes(), id.as_bytes().to_vec());
        }
        stored.state.apply(&event_data);
        tx.put_json("plan", id.as_bytes(), &stored);
        Ok(())
    }
}

impl Projection for TransportProjection {
    fn name(&self) -> &'static str {
        "transport"
    }

    /// Bump when what `apply` writes changes: the rows are then rebuilt on start.
    fn version(&self) -> u32 {
        1
    }

    fn streams(&self) -> &'static [&'static str] {
        &[SERVICE]
    }

    fn apply(&self, tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError> {
        match event.aggregate_kind {
            "vehicle" => Self::vehicle(tx, event),
            "driver" => Self::driver(tx, event),
            "job" => Self::job(tx, event),
            "plan" => Self::plan(tx, event),
            _ => Ok(()),
        }
    }
}

fn geo_point(p: Position) -> Result<GeoPoint, ServiceError> {
    GeoPoint::new(p.lat, p.lon).map_err(|e| ServiceError::validation("invalid_position", e))
}

pub fn build(ctx: &ServiceContext, engine: &mut Engine) -> ServiceHost {
    let mut host = ServiceHost::new(SERVICE);
    let vehicles = ctx.runner::<Vehicle>(SERVICE);
    let drivers = ctx.runner::<Driver>(SERVICE);
    let jobs = ctx.runner::<Job>(SERVICE);
    let view = engine.register(TransportProjection);

    let sites = ctx.runner::<stock::Site>(crate::stock::SERVICE);
    process_command(
        &mut host,
        "register_vehicle",
        &[],
        (vehicles.clone(), sites.clone()),
        |(vehicles, sites), request, body: RegisterVehicle| async move {
            let id = new_id(body.vehicle_id, &request, "vehicle")?;
            if let Some(first) = vehicles.answered(&id, &request.command_id).await? {
                return Ok(first);
            }
            let home_site = crate::stock::known_site(&sites, &body.home_site).await?.to_string();
            let spec = VehicleSpec {
                name: body.name,
                capacity_kg: body.capacity_kg,
                volume_l: body.volume_l,
                chilled_capacity_kg: body.chilled_capacity_kg,
                home_site,
            };
            vehicles.execute(id, VehicleCommand::Register(spec), meta(&request)).await
        },
    );
    aggregate_command(&mut host, "set_vehicle_availability", &vehicles, &[], |body: VehicleAvailability, _| {
        let command = VehicleCommand::SetAvailability { date: body.date, available: body.available };
        Ok((parse_id(&body.vehicle_id, "vehicle")?, command))
    });
    aggregate_command(&mut host, "retire_vehicle", &vehicles, &[], |body: RetireVehicle, _| {
        Ok((parse_id(&body.vehicle_id, "vehicle")?, VehicleCommand::Retire { reason: body.reason }))
    });
    projection_query(
        &mut host,
        "list_vehicles",
        ctx,
        &view,
        Some(&[Role::Driver, Role::Warehouse]),
        |view, _: NoParams| {
            let mut rows: Vec<VehicleRow> = view.scan_json("vehicle", b"").map_err(storage)?;
            rows.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(rows)
        },
    );

    process_command(
        &mut host,
        "register_driver",
        &[],
        (drivers.clone(), vehicles.clone()),
        |(drivers, vehicles), request, body: RegisterDriver| async move {
            let id = new_id(body.driver_id, &request, "driver")?;
            if let Some(first) = drivers.answered(&id, &request.command_id).await? {
                return Ok(first);
            }
            // Only vehicles the fleet has, and still drives.
            for vehicle in &body.vehicles {
                let missing = || ServiceError::not_found("vehicle_not_found", format!("no vehicle {vehicle}"));
                let vehicle_id = vehicle.parse().map_err(|_| missing())?;
                let (found, _) = vehicles.load(&vehicle_id).await?;
                if found.spec.is_none() || found.retired {
                    return Err(missing());
                }
            }
            let spec = DriverSpec {
                name: body.name,
                vehicles: body.vehicles.into_iter().collect(),
                max_shift_minutes: body.max_shift_minutes,
            };
            drivers.execute(id, DriverCommand::Register(spec), meta(&request)).await
        },
    );
    aggregate_command(&mut host, "set_driver_availability", &drivers, &[], |body: DriverAvailability, _| {
        let slots = body.slots.into_iter().map(|s| Slot { from: s.from, to: s.to }).collect();
        Ok((parse_id(&body.driver_id, "driver")?, DriverCommand::SetAvailability { date: body.date, slots }))
    });
    aggregate_command(&mut host, "retire_driver", &drivers, &[], |body: RetireDriver, _| {
        Ok((parse_id(&body.driver_id, "driver")?, DriverCommand::Retire))
    });
    scoped_query(&mut host, "list_drivers", ctx, &view, Some(&[Role::Driver]), |view, actor, _: NoParams| {
        let mut rows: Vec<DriverRow> = view.scan_json("driver", b"").map_err(storage)?;
        // A driver sees themself only.
        rows.retain(|r| actor.is_privileged() || actor.scope.as_deref() == Some(r.driver_id.as_str()));
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rows)
    });

    let client = ctx.client.clone();
    process_command(
        &mut host,
        "schedule_job",
        &[],
        (jobs.clone(), client, sites, ctx.runner::<donations::Donor>(crate::donations::SERVICE), ctx.clone()),
        |(jobs, client, sites, donors, ctx), request, body: ScheduleJob| async move {
            let id = new_id(body.job_id, &request, "job")?;
            if let Some(first) = jobs.answered(&id, &request.command_id).await? {
                return Ok(first);
            }
            let site_id = crate::stock::known_site(&sites, &body.site_id).await?.to_string();
            let kind = match body.kind.as_str() {
                "pickup" => {
                    JobKind::Pickup { donor_id: body.party_id.clone(), kg: body.kg, chilled_kg: body.chilled_kg }
                }
                "delivery" => JobKind::Delivery { relay_point_id: body.party_id.clone() },
                other => {
                    return Err(ServiceError::validation(
                        "invalid_kind",
                        format!("a job is a pickup or a delivery, not {other:?}"),
                    ))
                }
            };
            // The party is there: a donor for a pickup, a relay point for a delivery.
            match &kind {
                JobKind::Pickup { donor_id, .. } => {
                    let missing = || ServiceError::not_found("donor_not_found", format!("no donor {donor_id}"));
                    let id = donor_id.parse().map_err(|_| missing())?;
                    if donors.load(&id).await?.0.registered.is_none() {
                        return Err(missing());
                    }
                }
                JobKind::Delivery { relay_point_id } => {
                    // Read once the associations read model holds every change acknowledged: a
                    // relay point added a moment ago counts.
                    let mut ask = QueryRequest::new(Actor::system(SERVICE), serde_json::json!({}));
                    let last = ctx
                        .events
                        .last_sequence(crate::distribution::SERVICE)
                        .await
                        .map_err(|e| ServiceError::unavailable("nats_unavailable", e))?;
                    ask.min_seq.insert(crate::distribution::SERVICE.to_owned(), last);
                    let associations: Vec<crate::distribution::AssociationRow> =
                        client.query(crate::distribution::SERVICE, "list_associations", &ask).await?;
                    if !associations.iter().flat_map(|a| &a.relay_points).any(|r| r.relay_id == *relay_point_id) {
                        return Err(ServiceError::not_found(
                            "relay_point_not_found",
                            format!("no relay point {relay_point_id}"),
                        ));
                    }
                }
            }
            // A pickup goes to the donor's address unless told otherwise.
            let (address, position) = match (&kind, body.address.is_some() && body.position.is_some()) {
                (JobKind::Pickup { donor_id, .. }, false) => {
                    let ask = QueryRequest::new(Actor::system(SERVICE), serde_json::json!({ "donor_id": donor_id }));
                    let donor: DonorRow = client.query(crate::donations::SERVICE, "get_donor", &ask).await?;
                    (body.address.unwrap_or(donor.address), body.position.or(donor.position))
                }
                _ => (body.address.unwrap_or_default(), body.position),
            };
            let stop = Stop {
                date: body.date,
                site_id,
                position: position.map(geo_point).transpose()?,
                address,
                contact: body.contact,
                opens: body.opens,
                closes: body.closes,
                service_minutes: body.service_minutes,
            };
            jobs.execute(id, JobCommand::Schedule { stop, kind }, meta(&request)).await
        },
    );
    aggregate_command(&mut host, "cancel_job", &jobs, &[], |body: CancelJob, _| {
        Ok((parse_id(&body.job_id, "job")?, JobCommand::Cancel { reason: body.reason }))
    });
    projection_query(&mut host, "list_jobs", ctx, &view, Some(&[Role::Warehouse]), |view, p: ListJobs| {
        let mut rows: Vec<JobRow> = view.scan_json("job", format!("{}/", p.date).as_bytes()).map_err(storage)?;
        rows.retain(|r| p.site_id.as_ref().is_none_or(|s| *s == r.site_id));
        Ok(rows)
    });

    projection_query(&mut host, "get_plan", ctx, &view, Some(&[Role::Warehouse]), |view, p: GetPlan| {
        let id = plan_id(&p.site_id, p.date)?;
        let stored = view.get_json::<StoredPlan>("plan", id.as_str().as_bytes()).map_err(storage)?;
        stored.map(|s| s.row(id.as_str())).ok_or_else(|| {
            ServiceError::not_found("plan_not_found", format!("no plan for {} on {}", p.site_id, p.date))
        })
    });
    scoped_query(&mut host, "list_routes", ctx, &view, Some(&[Role::Driver]), |view, actor, p: ListRoutes| {
        // A driver sees their own; an admin anyone's.
        let driver = match (actor.role, p.driver_id) {
            (Role::Driver, Some(asked)) if actor.scope.as_ref() != Some(&asked) => {
                return Err(ServiceError::forbidden("forbidden", "a driver sees their own routes"))
            }
            (Role::Driver, _) => actor.scope.clone(),
            (_, asked) => asked,
        };
        let mut routes = Vec::new();
        for item in view.scan("plan_day", format!("{}/", p.date).as_bytes()) {
            let (_, id) = item.map_err(storage)?;
            let Some(stored) = view.get_json::<StoredPlan>("plan", &id).map_err(storage)? else { continue };
            let plan = stored.row(&String::from_utf8_lossy(&id));
            routes.extend(plan.routes.into_iter().filter(|r| driver.as_ref().is_none_or(|d| *d == r.driver_id)));
        }
        routes.sort_by(|a, b| a.departure.cmp(&b.departure).then_with(|| a.route_id.cmp(&b.route_id)));
        Ok(routes)
    });

    road::register(&mut host, ctx, &view);
    host
}
