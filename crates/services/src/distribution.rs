//! Distribution service: member associations and their relay points, and their read model.

use chrono::{DateTime, Utc};
use distribution::{Association, AssociationCommand, AssociationEvent, RelayPoint};
use projections::{ApplyError, Engine, Projection, RecordedEvent, Tx};
use runtime::{parse_payload, Role, ServiceError, ServiceHost};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use values::{GeoPoint, Name};

use crate::common::{execute, new_id, parse_id, read, require, require_scope, storage, Position, ServiceContext};

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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AssociationRow {
    pub association_id: String,
    pub name: String,
    pub commune: String,
    pub relay_points: Vec<RelayPointRow>,
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
                    registered_at: event.envelope.occurred_at,
                },
            ),
            AssociationEvent::RelayPointAdded { relay } => {
                let mut row: AssociationRow = tx.get_json("association", id)?.ok_or_else(|| {
                    ApplyError(format!("relay point for unknown association {}", event.envelope.aggregate_id))
                })?;
                row.relay_points.push(RelayPointRow {
                    relay_id: relay.relay_id.to_string(),
                    association_id: row.association_id.clone(),
                    name: relay.name.into(),
                    address: relay.address,
                    commune: relay.commune.into(),
                    position: relay.position.map(Position::from),
                    cold_storage: relay.cold_storage,
                });
                tx.put_json("association", id, &row);
            }
        }
        Ok(())
    }
}

pub fn build(ctx: &ServiceContext, engine: &mut Engine) -> ServiceHost {
    let mut host = ServiceHost::new(SERVICE);
    let associations = ctx.runner::<Association>(SERVICE);
    let projection = engine.register(AssociationsProjection);

    let runner = associations.clone();
    host.command("register_association", move |request| {
        let runner = runner.clone();
        async move {
            require(&request.actor, &[])?;
            let body: RegisterAssociation = parse_payload(&request.payload)?;
            let id = new_id(body.association_id, &request, "association")?;
            execute(&runner, id, AssociationCommand::Register { name: body.name, commune: body.commune }, &request)
                .await
        }
    });
    let runner = associations;
    host.command("add_relay_point", move |request| {
        let runner = runner.clone();
        async move {
            let body: AddRelayPoint = parse_payload(&request.payload)?;
            let id = parse_id(&body.association_id, "association")?;
            require_scope(&request.actor, Role::Association, id.as_str())?;
            let relay = RelayPoint {
                relay_id: new_id(body.relay_id, &request, "relay")?,
                name: body.name,
                address: body.address,
                commune: body.commune,
                position: body.position,
                cold_storage: body.cold_storage,
            };
            execute(&runner, id, AssociationCommand::AddRelayPoint(relay), &request).await
        }
    });

    // Every member sees the list of members: pooling is built on that transparency.
    let (c, p) = (ctx.clone(), projection.clone());
    host.query("list_associations", move |request| {
        let (ctx, projection) = (c.clone(), p.clone());
        async move {
            read(&ctx, &projection, &request, |view| {
                let mut rows: Vec<AssociationRow> = view.scan_json("association", b"").map_err(storage)?;
                rows.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(rows)
            })
            .await
        }
    });
    let (c, p) = (ctx.clone(), projection);
    host.query("get_association", move |request| {
        let (ctx, projection) = (c.clone(), p.clone());
        async move {
            let params: GetAssociation = parse_payload(&request.params)?;
            read(&ctx, &projection, &request, move |view| {
                view.get_json::<AssociationRow>("association", params.association_id.as_bytes())
                    .map_err(storage)?
                    .ok_or_else(|| {
                        ServiceError::not_found(
                            "association_not_found",
                            format!("no association {}", params.association_id),
                        )
                    })
            })
            .await
        }
    });
    host
}
