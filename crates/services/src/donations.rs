//! Donations service: donors (registration, updates) and their read model.

use chrono::{DateTime, Utc};
use donations::{Donor, DonorCommand, DonorEvent, DonorKind};
use projections::{ApplyError, Engine, Projection, RecordedEvent, Tx};
use runtime::{Role, ServiceError, ServiceHost};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use values::{GeoPoint, Name};

use crate::common::{
    aggregate_command, enum_schema, new_id, parse_id, projection_query, storage, Position, ServiceContext,
};

pub const SERVICE: &str = "donations";

fn donor_kind_schema() -> utoipa::openapi::Object {
    enum_schema(&["retailer", "producer", "wholesaler", "public_programme", "food_drive", "individual"])
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDonor {
    /// Optional client-chosen id; derived from the idempotency key when absent.
    pub donor_id: Option<String>,
    #[schema(schema_with = donor_kind_schema)]
    pub kind: DonorKind,
    #[schema(value_type = String, example = "Carrefour Vénissieux")]
    pub name: Name,
    #[serde(default)]
    pub address: String,
    #[schema(value_type = Option<Position>)]
    pub position: Option<GeoPoint>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDonor {
    pub donor_id: String,
    #[schema(value_type = Option<String>)]
    pub name: Option<Name>,
    pub address: Option<String>,
    #[schema(value_type = Option<Position>)]
    pub position: Option<GeoPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DonorRow {
    pub donor_id: String,
    #[schema(schema_with = donor_kind_schema)]
    pub kind: DonorKind,
    pub name: String,
    pub address: String,
    pub position: Option<Position>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListDonors {
    #[schema(schema_with = donor_kind_schema)]
    pub kind: Option<DonorKind>,
    /// Case-insensitive part of the name.
    pub q: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetDonor {
    pub donor_id: String,
}

/// Donors by id.
pub struct DonorsProjection;

impl Projection for DonorsProjection {
    fn name(&self) -> &'static str {
        "donors"
    }

    fn streams(&self) -> &'static [&'static str] {
        &[SERVICE]
    }

    fn apply(&self, tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError> {
        if event.aggregate_kind != "donor" {
            return Ok(());
        }
        let id = event.envelope.aggregate_id.as_bytes();
        let at = event.envelope.occurred_at;
        match event.decode::<DonorEvent>()? {
            DonorEvent::DonorRegistered { kind, name, address, position } => {
                let row = DonorRow {
                    donor_id: event.envelope.aggregate_id.to_string(),
                    kind,
                    name: name.into(),
                    address,
                    position: position.map(Position::from),
                    registered_at: at,
                    updated_at: at,
                };
                tx.put_json("donor", id, &row);
            }
            DonorEvent::DonorUpdated { name, address, position } => {
                tx.update_json("donor", id, |row: &mut DonorRow| {
                    row.name = name.into();
                    row.address = address;
                    row.position = position.map(Position::from);
                    row.updated_at = at;
                })?;
            }
        }
        Ok(())
    }
}

pub fn build(ctx: &ServiceContext, engine: &mut Engine) -> ServiceHost {
    let mut host = ServiceHost::new(SERVICE);
    let donors = ctx.runner::<Donor>(SERVICE);
    let projection = engine.register(DonorsProjection);

    aggregate_command(&mut host, "register_donor", &donors, &[Role::Warehouse], |body: RegisterDonor, request| {
        let id = new_id(body.donor_id, request, "donor")?;
        Ok((
            id,
            DonorCommand::Register { kind: body.kind, name: body.name, address: body.address, position: body.position },
        ))
    });
    aggregate_command(&mut host, "update_donor", &donors, &[Role::Warehouse], |body: UpdateDonor, _| {
        let id = parse_id(&body.donor_id, "donor")?;
        Ok((id, DonorCommand::Update { name: body.name, address: body.address, position: body.position }))
    });

    projection_query(
        &mut host,
        "list_donors",
        ctx,
        &projection,
        Some(&[Role::Warehouse]),
        |view, params: ListDonors| {
            let needle = params.q.as_deref().map(str::to_lowercase);
            let mut rows: Vec<DonorRow> = view.scan_json("donor", b"").map_err(storage)?;
            rows.retain(|r| {
                params.kind.is_none_or(|k| k == r.kind)
                    && needle.as_deref().is_none_or(|n| r.name.to_lowercase().contains(n))
            });
            rows.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.donor_id.cmp(&b.donor_id)));
            Ok(rows)
        },
    );
    projection_query(&mut host, "get_donor", ctx, &projection, Some(&[Role::Warehouse]), |view, params: GetDonor| {
        view.get_json::<DonorRow>("donor", params.donor_id.as_bytes())
            .map_err(storage)?
            .ok_or_else(|| ServiceError::not_found("donor_not_found", format!("no donor {}", params.donor_id)))
    });
    host
}
