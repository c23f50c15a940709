//! Transport service: the fleet (vehicles, drivers), the day's jobs, route plans, and what
//! drivers record on the road, with their read models.

mod planning;
mod road;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use projections::{ApplyError, Engine, Projection, RecordedEvent, Tx};
use runtime::{Actor, QueryRequest, Role, ServiceError, ServiceHost};

use crate::donations::DonorRow;
use serde::{Deserialize, Serialize};
use transport::{
    Driver, DriverCommand, DriverEvent, DriverSpec, Job, JobCommand, JobEvent, JobKind, PlanEvent, PlannedStop, Slot,
    Stop, StopAction, StopStatus, Unplanned, Vehicle, VehicleCommand, VehicleEvent, VehicleSpec,
};
use utoipa::ToSchema;
use values::{GeoPoint, Name};

use crate::common::{
    aggregate_command, enum_schema, meta, new_id, parse_id, process_command, projection_query, scoped_query, storage,
    NoParams, Position, ServiceContext,
};

pub use planning::{crews, plan_day, Crew, Day};
pub use road::{CompleteStop, FailStop, PlanRoutes, RouteAction, StopBody};

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

fn stop_row(s: PlannedStop) -> StopRow {
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
        status: StopStatus::Planned,
        arrived_at: None,
        done_at: None,
        actual_kg: None,
        partial: false,
        fail_reason: None,
        cold_chain_minutes: None,
    }
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

    fn job(tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError> {
        let id = event.envelope.aggregate_id.as_ref();
        // Listed by day: keys `<date>/<job>`; `job_day` finds a job's key.
        let day_key = |date: NaiveDate| format!("{date}/{id}");
        match event.decode::<JobEvent>()? {
            JobEvent::JobScheduled { stop, kind } => {
                let (kind, party_id, grams, chilled_grams) = match kind {
                    JobKind::Pickup { donor_id, kg, chilled_kg } => {
                        ("pickup", donor_id, u64::from(kg) * 1000, u64::from(chilled_kg) * 1000)
                    }
                    JobKind::Delivery { relay_point_id } => ("delivery", relay_point_id, 0, 0),
                };
                let row = JobRow {
                    job_id: id.to_owned(),
                    date: stop.date,
                    site_id: stop.site_id,
                    kind: kind.into(),
                    party_id,
                    address: stop.address,
                    position: stop.position.map(Position::from),
                    contact: stop.contact,
                    opens: stop.opens,
                    closes: stop.closes,
                    service_minutes: stop.service_minutes,
                    grams,
                    chilled_grams,
                    parcels: vec![],
                    chilled_lots: vec![],
                    cancelled: false,
                };
                tx.put_json("job", day_key(stop.date).as_bytes(), &row);
                tx.put_json("job_day", id.as_bytes(), &stop.date);
            }
            other => {
                let date: NaiveDate = tx
                    .get_json("job_day", id.as_bytes())?
                    .ok_or_else(|| ApplyError(format!("event of unknown job {id}")))?;
                tx.update_json("job", day_key(date).as_bytes(), |row: &mut JobRow| match other {
                    JobEvent::ParcelAdded { parcel_id, grams, chilled_grams, chilled_lots } => {
                        row.parcels.push(parcel_id);
                        row.grams += grams;
                        row.chilled_grams += chilled_grams;
                        for lot in chilled_lots {
                            if !row.chilled_lots.contains(&lot) {
                                row.chilled_lots.push(lot);
                            }
                        }
                    }
                    JobEvent::JobCancelled { .. } => row.cancelled = true,
                    JobEvent::JobScheduled { .. } => unreachable!("matched above"),
                })?;
            }
        }
        Ok(())
    }

    fn plan(tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError> {
        let id = event.envelope.aggregate_id.as_ref();
        let decoded = event.decode::<PlanEvent>()?;
        if let PlanEvent::PlanMade { revision, date, site_id, routes, unplanned, replaced } = decoded {
            let mut row: PlanRow = tx.get_json("plan", id.as_bytes())?.unwrap_or_else(|| PlanRow {
                plan_id: id.to_owned(),
                site_id: site_id.clone(),
                date,
                revision: 0,
                planned_at: event.envelope.occurred_at,
                routes: vec![],
                unplanned: vec![],
            });
            row.revision = revision;
            row.planned_at = event.envelope.occurred_at;
            row.routes.retain(|r| !replaced.contains(&r.route_id));
            row.routes.extend(routes.into_iter().map(|r| RouteRow {
                route_id: r.route_id,
                plan_id: id.to_owned(),
                date,
                site_id: site_id.clone(),
                vehicle_id: r.vehicle_id,
                driver_id: r.driver_id,
                refrigerated: r.refrigerated,
                departure: r.departure,
                back: r.back,
                km: r.metres as f64 / 1000.0,
                started_at: None,
                ended_at: None,
                stops: r.stops.into_iter().map(stop_row).collect(),
            }));
            row.unplanned =
                unplanned.into_iter().map(|Unplanned { job_id, reason }| UnplannedRow { job_id, reason }).collect();
            tx.put_json("plan", id.as_bytes(), &row);
            tx.put("plan_day", format!("{date}/{id}").as_bytes(), id.as_bytes().to_vec());
            return Ok(());
        }
        tx.update_json("plan", id.as_bytes(), |row: &mut PlanRow| {
            let route_id = match &decoded {
                PlanEvent::RouteStarted { route_id, .. }
                | PlanEvent::RouteEnded { route_id, .. }
                | PlanEvent::StopArrived { route_id, .. }
                | PlanEvent::StopCompleted { route_id, .. }
                | PlanEvent::StopFailed { route_id, .. }
                | PlanEvent::ColdChainExceeded { route_id, .. } => route_id,
                PlanEvent::PlanMade { .. } => unreachable!("handled above"),
            };
            let Some(route) = row.routes.iter_mut().find(|r| r.route_id == *route_id) else { return };
            fn stop<'a>(route: &'a mut RouteRow, job_id: &str) -> Option<&'a mut StopRow> {
                route.stops.iter_mut().find(|s| s.job_id == job_id)
            }
            match decoded {
                PlanEvent::RouteStarted { at, .. } => route.started_at = Some(at),
                PlanEvent::RouteEnded { at, .. } => route.ended_at = Some(at),
                PlanEvent::StopArrived { job_id, at, .. } => {
                    if let Some(s) = stop(route, &job_id) {
                        s.status = StopStatus::Arrived;
                        s.arrived_at = Some(at);
                    }
                }
                PlanEvent::StopCompleted { job_id, at, grams, partial, .. } => {
                    if let Some(s) = stop(route, &job_id) {
                        s.status = StopStatus::Completed;
                        s.done_at = Some(at);
                        s.actual_kg = Some(kg(grams));
                        s.partial = partial;
                    }
                }
                PlanEvent::StopFailed { job_id, at, reason, .. } => {
                    if let Some(s) = stop(route, &job_id) {
                        s.status = StopStatus::Failed;
                        s.done_at = Some(at);
                        s.fail_reason = Some(reason);
                    }
                }
                PlanEvent::ColdChainExceeded { job_id, minutes, .. } => {
                    if let Some(s) = stop(route, &job_id) {
                        s.cold_chain_minutes = Some(minutes);
                    }
                }
                PlanEvent::PlanMade { .. } => {}
            }
        })?;
        Ok(())
    }
}

impl Projection for TransportProjection {
    fn name(&self) -> &'static str {
        "transport"
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

    aggregate_command(&mut host, "register_vehicle", &vehicles, &[], |body: RegisterVehicle, request| {
        let id = new_id(body.vehicle_id, request, "vehicle")?;
        let spec = VehicleSpec {
            name: body.name,
            capacity_kg: body.capacity_kg,
            volume_l: body.volume_l,
            chilled_capacity_kg: body.chilled_capacity_kg,
            home_site: body.home_site,
        };
        Ok((id, VehicleCommand::Register(spec)))
    });
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

    aggregate_command(&mut host, "register_driver", &drivers, &[], |body: RegisterDriver, request| {
        let id = new_id(body.driver_id, request, "driver")?;
        let spec = DriverSpec {
            name: body.name,
            vehicles: body.vehicles.into_iter().collect(),
            max_shift_minutes: body.max_shift_minutes,
        };
        Ok((id, DriverCommand::Register(spec)))
    });
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
        (jobs.clone(), client),
        |(jobs, client), request, body: ScheduleJob| async move {
            let id = new_id(body.job_id, &request, "job")?;
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
                site_id: body.site_id,
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
        view.get_json::<PlanRow>("plan", id.as_str().as_bytes()).map_err(storage)?.ok_or_else(|| {
            ServiceError::not_found("plan_not_found", format!("no plan for {} on {}", p.site_id, p.date))
        })
    });
    scoped_query(&mut host, "list_routes", ctx, &view, Some(&[Role::Driver]), |view, actor, p: ListRoutes| {
        let driver = match (&actor.scope, p.driver_id) {
            (Some(own), Some(asked)) if *own != asked => {
                return Err(ServiceError::forbidden("forbidden", "a driver sees their own routes"))
            }
            (Some(own), _) if actor.role == Role::Driver => Some(own.clone()),
            (_, asked) => asked,
        };
        let mut routes = Vec::new();
        for item in view.scan("plan_day", format!("{}/", p.date).as_bytes()) {
            let (_, id) = item.map_err(storage)?;
            let Some(plan) = view.get_json::<PlanRow>("plan", &id).map_err(storage)? else { continue };
            routes.extend(plan.routes.into_iter().filter(|r| driver.as_ref().is_none_or(|d| *d == r.driver_id)));
        }
        routes.sort_by(|a, b| a.departure.cmp(&b.departure).then_with(|| a.route_id.cmp(&b.route_id)));
        Ok(routes)
    });

    road::register(&mut host, ctx, &view);
    host
}
