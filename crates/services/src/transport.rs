//! Transport service: the vehicles of the fleet, and their read model.

use chrono::{DateTime, NaiveDate, Utc};
use projections::{ApplyError, Engine, Projection, RecordedEvent, Tx};
use runtime::{Role, ServiceHost};
use serde::{Deserialize, Serialize};
use transport::{Vehicle, VehicleCommand, VehicleEvent, VehicleSpec};
use utoipa::ToSchema;
use values::Name;

use crate::common::{aggregate_command, new_id, parse_id, projection_query, storage, NoParams, ServiceContext};

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

pub struct VehiclesProjection;

impl Projection for VehiclesProjection {
    fn name(&self) -> &'static str {
        "vehicles"
    }

    fn streams(&self) -> &'static [&'static str] {
        &[SERVICE]
    }

    fn apply(&self, tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError> {
        if event.aggregate_kind != "vehicle" {
            return Ok(());
        }
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
}

pub fn build(ctx: &ServiceContext, engine: &mut Engine) -> ServiceHost {
    let mut host = ServiceHost::new(SERVICE);
    let vehicles = ctx.runner::<Vehicle>(SERVICE);
    let projection = engine.register(VehiclesProjection);

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
        &projection,
        Some(&[Role::Driver, Role::Warehouse]),
        |view, _: NoParams| {
            let mut rows: Vec<VehicleRow> = view.scan_json("vehicle", b"").map_err(storage)?;
            rows.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(rows)
        },
    );
    host
}
