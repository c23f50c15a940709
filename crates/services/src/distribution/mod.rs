//! Distribution service: member associations and their relay points, and the households they
//! follow.

mod households;
mod import;
mod parcels;
mod reports;
mod wave;

pub use households::{
    AssessHousehold, ConsentChange, EraseHousehold, GetHousehold, HouseholdRow, HouseholdView, HouseholdsProjection,
    ListHouseholds, PersonalData, RegisterHousehold, UpdateHousehold,
};
pub use import::{ImportHouseholds, LineError};
pub use parcels::{
    CancelParcel, CloseDay, FairShare, GetParcel, ListParcels, ParcelRow, ParcelStep, ParcelsProjection,
    RedistributeParcel, RequestParcel, RequestParcels, ShareRow,
};
pub use reports::{report_csv, PeopleServed, ReportParams, ReportRow};
pub use wave::ComposeWave;

use chrono::{DateTime, Utc};
use distribution::{Association, AssociationCommand, AssociationEvent, EligibilityRule, OpeningSlot, RelayPoint};
use projections::{ApplyError, Engine, Projection, RecordedEvent, Tx};
use runtime::{Role, ServiceError, ServiceHost};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use values::{GeoPoint, Name};

use crate::common::{
    aggregate_command, new_id, parse_id, projection_query, require_scope, storage, NoParams, Position, ServiceContext,
};

pub const SERVICE: &str = "distribution";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterAssociation {
    pub association_id: Option<String>,
    #[schema(value_type = String, example = "Secours populaire Vénissieux")]
    pub name: Name,
    #[schema(value_type = String, example = "Vénissieux")]
    pub commune: Name,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddRelayPoint {
    pub association_id: String,
    pub relay_id: Option<String>,
    #[schema(value_type = String)]
    pub name: Name,
    #[serde(default)]
    pub address: String,
    #[schema(value_type = String)]
    pub commune: Name,
    #[schema(value_type = Option<Position>)]
    pub position: Option<GeoPoint>,
    #[serde(default)]
    pub cold_storage: bool,
    /// Weekly opening slots: `[{"day": "Wed", "opens": "14:00:00", "closes": "17:00:00"}]`.
    /// Parcels are requested only for the days it opens; none means any day.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub opening: Vec<OpeningSlot>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetParcelDays {
    pub association_id: String,
    /// Days a parcel covers (weekly distribution: 7, fortnightly: 14): what the composer
    /// counts the households' needs over.
    pub days: u32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRelayOpening {
    pub association_id: String,
    pub relay_id: String,
    /// The new weekly slots (they replace the old ones).
    #[schema(value_type = Vec<Object>)]
    pub opening: Vec<OpeningSlot>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetEligibilityRule {
    pub association_id: String,
    /// Most "reste à vivre" per person per day to be eligible, euro cents.
    pub threshold_cents: i64,
    /// How long an assessment stays valid, days.
    pub validity_days: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RelayPointRow {
    pub relay_id: String,
    pub association_id: String,
    pub name: String,
    pub address: String,
    pub commune: String,
    pub position: Option<Position>,
    pub cold_storage: bool,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub opening: Vec<OpeningSlot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AssociationRow {
    pub association_id: String,
    pub name: String,
    pub commune: String,
    pub relay_points: Vec<RelayPointRow>,
    /// The association's own eligibility rule, if it set one (else the collective's default).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub eligibility: Option<EligibilityRule>,
    /// Days a parcel covers here, if the association set its own rhythm.
    #[serde(default)]
    pub parcel_days: Option<u32>,
    pub registered_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetAssociation {
    pub association_id: String,
}

pub struct AssociationsProjection;

impl Projection for AssociationsProjection {
    fn name(&self) -> &'static str {
        "associations"
    }

    /// Bump when what `apply` writes changes: the rows are then rebuilt on start.
    fn version(&self) -> u32 {
        1
    }

    fn streams(&self) -> &'static [&'static str] {
        &[SERVICE]
    }

    fn apply(&self, tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError> {
        if event.aggregate_kind != "association" {
            return Ok(());
        }
        let id = event.envelope.aggregate_id.as_bytes();
        match event.decode::<AssociationEvent>()? {
            AssociationEvent::AssociationRegistered { name, commune } => tx.put_json(
                "association",
                id,
                &AssociationRow {
                    association_id: event.envelope.aggregate_id.to_string(),
                    name: name.into(),
                    commune: commune.into(),
                    relay_points: Vec::new(),
                    eligibility: None,
                    parcel_days: None,
                    registered_at: event.envelope.occurred_at,
                },
            ),
            AssociationEvent::EligibilityRuleSet(rule) => {
                tx.update_json("association", id, |row: &mut AssociationRow| row.eligibility = Some(rule))?;
            }
            AssociationEvent::ParcelDaysSet { days } => {
                tx.update_json("association", id, |row: &mut AssociationRow| row.parcel_days = Some(days))?;
            }
            AssociationEvent::RelayPointAdded { relay } => {
                tx.update_json("association", id, |row: &mut AssociationRow| {
                    row.relay_points.push(RelayPointRow {
                        relay_id: relay.relay_id.to_string(),
                        association_id: row.association_id.clone(),
                        name: relay.name.into(),
                        address: relay.address,
                        commune: relay.commune.into(),
                        position: relay.position.map(Position::from),
                        cold_storage: relay.cold_storage,
                        opening: relay.opening,
                    })
                })?;
            }
            AssociationEvent::OpeningSet { relay_id, opening } => {
                tx.update_json("association", id, |row: &mut AssociationRow| {
                    if let Some(relay) = row.relay_points.iter_mut().find(|r| r.relay_id == relay_id.as_str()) {
                        relay.opening = opening;
                    }
                })?;
            }
        }
        Ok(())
    }
}

pub fn build(ctx: &ServiceContext, engine: &mut Engine) -> ServiceHost {
    let mut host = ServiceHost::new(SERVICE);
    let associations = ctx.runner::<Association>(SERVICE);
    let projection = engine.register(AssociationsProjection);

    aggregate_command(&mut host, "register_association", &associations, &[], |body: RegisterAssociation, request| {
        let id = new_id(body.association_id, request, "association")?;
        Ok((id, AssociationCommand::Register { name: body.name, commune: body.commune }))
    });
    aggregate_command(
        &mut host,
        "add_relay_point",
        &associations,
        &[Role::Association],
        |body: AddRelayPoint, request| {
            let id = parse_id(&body.association_id, "association")?;
            require_scope(&request.actor, Role::Association, id.as_str())?;
            let relay = RelayPoint {
                relay_id: new_id(body.relay_id, request, "relay")?,
                name: body.name,
                address: body.address,
                commune: body.commune,
                position: body.position,
                cold_storage: body.cold_storage,
                opening: body.opening,
            };
            Ok((id, AssociationCommand::AddRelayPoint(relay)))
        },
    );
    aggregate_command(
        &mut host,
        "set_parcel_days",
        &associations,
        &[Role::Association],
        |body: SetParcelDays, request| {
            let id = parse_id(&body.association_id, "association")?;
            require_scope(&request.actor, Role::Association, id.as_str())?;
            Ok((id, AssociationCommand::SetParcelDays(body.days)))
        },
    );
    aggregate_command(
        &mut host,
        "set_relay_opening",
        &associations,
        &[Role::Association],
        |body: SetRelayOpening, request| {
            let id = parse_id(&body.association_id, "association")?;
            require_scope(&request.actor, Role::Association, id.as_str())?;
            let relay_id = parse_id(&body.relay_id, "relay")?;
            Ok((id, AssociationCommand::SetOpening { relay_id, opening: body.opening }))
        },
    );

    // Every member sees the list of members: pooling is built on that transparency.
    aggregate_command(&mut host, "set_eligibility_rule", &associations, &[], |body: SetEligibilityRule, _| {
        let id = parse_id(&body.association_id, "association")?;
        let rule = EligibilityRule { threshold_cents: body.threshold_cents, validity_days: body.validity_days };
        Ok((id, AssociationCommand::SetEligibilityRule(rule)))
    });
    let households = households::register(&mut host, ctx, engine, &associations);
    let parcels = parcels::register(&mut host, ctx, engine);
    reports::register(&mut host, ctx, &parcels);
    wave::register(&mut host, ctx, [projection.clone(), households, parcels]);

    projection_query(&mut host, "list_associations", ctx, &projection, None, |view, _: NoParams| {
        let mut rows: Vec<AssociationRow> = view.scan_json("association", b"").map_err(storage)?;
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rows)
    });
    projection_query(&mut host, "get_association", ctx, &projection, None, |view, params: GetAssociation| {
        view.get_json::<AssociationRow>("association", params.association_id.as_bytes()).map_err(storage)?.ok_or_else(
            || ServiceError::not_found("association_not_found", format!("no association {}", params.association_id)),
        )
    });
    host
}
