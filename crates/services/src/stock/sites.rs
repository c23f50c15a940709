//! Warehouse sites and their zones.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use projections::{ApplyError, Engine, Projection, RecordedEvent, Tx};
use runtime::{CommandRunner, Role, ServiceError, ServiceHost};
use serde::{Deserialize, Serialize};
use stock::{Site, SiteCommand, SiteEvent, StorageClass, Zone};
use utoipa::ToSchema;
use values::{GeoPoint, Name};

use crate::common::{
    aggregate_command, new_id, parse_id, projection_query, storage, NoParams, Position, ServiceContext,
};

use super::SERVICE;
use crate::donations::storage_schema;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneBody {
    /// 1 to 16 letters, digits or '-', stored upper-case.
    #[schema(value_type = String, example = "COLD-1")]
    pub code: stock::ZoneCode,
    #[schema(schema_with = storage_schema)]
    pub storage: StorageClass,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSite {
    pub site_id: Option<String>,
    #[schema(value_type = String, example = "Entrepôt de Gerland")]
    pub name: Name,
    #[serde(default)]
    pub address: String,
    #[schema(value_type = Option<Position>)]
    pub position: Option<GeoPoint>,
    #[serde(default)]
    pub zones: Vec<ZoneBody>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddZone {
    pub site_id: String,
    pub zone: ZoneBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SiteRow {
    pub site_id: String,
    pub name: String,
    pub address: String,
    pub position: Option<Position>,
    pub zones: Vec<ZoneBody>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetSite {
    pub site_id: String,
}

pub struct SitesProjection;

impl Projection for SitesProjection {
    fn name(&self) -> &'static str {
        "sites"
    }

    /// Bump when what `apply` writes changes: the rows are then rebuilt on start.
    fn version(&self) -> u32 {
        1
    }

    fn streams(&self) -> &'static [&'static str] {
        &[SERVICE]
    }

    fn apply(&self, tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError> {
        if event.aggregate_kind != "site" {
            return Ok(());
        }
        let id = event.envelope.aggregate_id.as_bytes();
        match event.decode::<SiteEvent>()? {
            SiteEvent::SiteCreated { name, address, position } => tx.put_json(
                "site",
                id,
                &SiteRow {
                    site_id: event.envelope.aggregate_id.to_string(),
                    name: name.into(),
                    address,
                    position: position.map(Position::from),
                    zones: Vec::new(),
                    created_at: event.envelope.occurred_at,
                },
            ),
            SiteEvent::ZoneAdded { zone } => {
                tx.update_json("site", id, |row: &mut SiteRow| {
                    row.zones.push(ZoneBody { code: zone.code, storage: zone.storage })
                })?;
            }
        }
        Ok(())
    }
}

pub(super) fn register(host: &mut ServiceHost, ctx: &ServiceContext, engine: &mut Engine) -> Arc<CommandRunner<Site>> {
    let sites = ctx.runner::<Site>(SERVICE);
    let projection = engine.register(SitesProjection);
    let readers: &'static [Role] = &[Role::Warehouse, Role::Association, Role::Driver];

    aggregate_command(host, "create_site", &sites, &[], |body: CreateSite, request| {
        let id = new_id(body.site_id, request, "site")?;
        let zones = body.zones.into_iter().map(|z| Zone { code: z.code, storage: z.storage }).collect();
        Ok((id, SiteCommand::Create { name: body.name, address: body.address, position: body.position, zones }))
    });
    aggregate_command(host, "add_zone", &sites, &[], |body: AddZone, _| {
        let id = parse_id(&body.site_id, "site")?;
        Ok((id, SiteCommand::AddZone { zone: Zone { code: body.zone.code, storage: body.zone.storage } }))
    });

    projection_query(host, "list_sites", ctx, &projection, Some(readers), |view, _: NoParams| {
        let mut rows: Vec<SiteRow> = view.scan_json("site", b"").map_err(storage)?;
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rows)
    });
    projection_query(host, "get_site", ctx, &projection, Some(readers), |view, params: GetSite| {
        view.get_json::<SiteRow>("site", params.site_id.as_bytes())
            .map_err(storage)?
            .ok_or_else(|| ServiceError::not_found("site_not_found", format!("no site {}", params.site_id)))
    });
    sites
}

/// The site `id` names, or `site_not_found` (an invalid id too: nothing can be stored for a site
/// that is not there). Sites are never removed, so a cached one is as good as a fresh one.
pub async fn known_site(sites: &CommandRunner<Site>, id: &str) -> Result<eventcore::AggregateId, ServiceError> {
    let missing = || ServiceError::not_found("site_not_found", format!("no site {id}"));
    let site_id: eventcore::AggregateId = id.parse().map_err(|_| missing())?;
    if sites.load_cached(&site_id).await?.name.is_none() {
        return Err(missing());
    }
    Ok(site_id)
}
