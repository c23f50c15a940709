//! A distribution wave: every parcel requested for a day, composed from a site's stock by the
//! fair composer, each reserved in the stock service (naming the composer's lots) before the
//! parcel records its lines. A parcel whose lots changed meanwhile records what stock granted
//! and says which groups are short.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use distribution::compose::{compose, Demand, Line, Offer};
use distribution::{Parcel, ParcelCommand, ParcelStatus};
use runtime::{Actor, CommandReply, CommandRequest, QueryRequest, Role, ServiceError, ServiceHost};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::households::{HouseholdRow, HouseholdsProjection};
use super::parcels::{ParcelRow, ParcelsProjection};
use super::{AssociationRow, AssociationsProjection, SERVICE};
use crate::common::{combine, parse_id, process_command, storage, ServiceContext};
use crate::stock::LotRow;
use projections::Projection;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComposeWave {
    /// The site whose stock the parcels come from.
    pub site_id: String,
    /// The distribution day: every parcel requested for it and not yet composed.
    pub date: NaiveDate,
}

/// What the composer needs of the day's parcels, from the read models.
fn demands(ctx: &ServiceContext, date: NaiveDate) -> Result<(Vec<Demand>, Vec<ParcelRow>), ServiceError> {
    let parcels_view = ctx.projections.view(ParcelsProjection.name()).map_err(storage)?;
    let households = ctx.projections.view(HouseholdsProjection.name()).map_err(storage)?;
    let associations = ctx.projections.view(AssociationsProjection.name()).map_err(storage)?;
    let mut rows = Vec::new();
    for item in parcels_view.scan("by_date", format!("{date}\0").as_bytes()) {
        let (_, id) = item.map_err(storage)?;
        if let Some(row) = parcels_view.get_json::<ParcelRow>("parcel", &id).map_err(storage)? {
            if row.status == ParcelStatus::Requested {
                rows.push(row);
            }
        }
    }
    let mut demands = Vec::with_capacity(rows.len());
    for row in &rows {
        let household: HouseholdRow =
            households.get_json("household", row.household_id.as_bytes()).map_err(storage)?.ok_or_else(|| {
                ServiceError::internal("composing a wave", format!("household {} unknown", row.household_id))
            })?;
        let association: Option<AssociationRow> =
            associations.get_json("association", row.association_id.as_bytes()).map_err(storage)?;
        let relay = association.as_ref().and_then(|a| a.relay_points.iter().find(|r| r.relay_id == row.relay_point_id));
        demands.push(Demand {
            household_id: row.household_id.clone(),
            association_id: row.association_id.clone(),
            commune: relay.map(|r| r.commune.clone()).unwrap_or_default(),
            emergency: row.emergency,
            cold_storage: relay.is_some_and(|r| r.cold_storage),
            diet: household.diet,
            needs: ctx.policies.needs.parcel_needs(&household.composition),
        });
    }
    Ok((demands, rows))
}

fn offer(lot: &LotRow) -> Offer {
    Offer {
        lot_id: lot.lot_id.clone(),
        product_id: lot.product_id.clone(),
        food_group: lot.food_group,
        storage: lot.storage,
        date_kind: lot.date_kind,
        date: lot.date,
        units: lot.available,
        unit_grams: (lot.weight_g / u64::from(lot.received.max(1))).max(1) as u32,
        traits: lot.traits,
        allergens: lot.allergens.clone(),
    }
}

async fn compose_wave(
    ctx: ServiceContext,
    request: CommandRequest,
    body: ComposeWave,
) -> Result<CommandReply, ServiceError> {
    let site_id = parse_id(&body.site_id, "site")?;
    let parcels = ctx.runner::<Parcel>(SERVICE);
    let system = Actor::system("distribution");
    // The stock on offer: the site's available lots, from the stock service.
    let query = QueryRequest::new(system.clone(), json!({"site_id": site_id.as_str(), "status": "available"}));
    let lots: Vec<LotRow> = ctx.client.query("stock", "list_lots", &query).await?;
    let offers: Vec<Offer> = lots.iter().filter(|l| l.available > 0).map(offer).collect();
    // Reading the requests and composing both block: off the executor, together.
    let (wave, demands, rows) = {
        let ctx = ctx.clone();
        tokio::task::spawn_blocking(move || {
            demands(&ctx, body.date).map(|(demands, rows)| (compose(&demands, &offers, body.date), demands, rows))
        })
        .await
        .map_err(|e| ServiceError::internal("composing a wave", e))??
    };
    let mut replies = Vec::new();
    for ((parcel, row), demand) in wave.parcels.into_iter().zip(&rows).zip(&demands) {
        // Reserve in stock what the composer chose, lot by lot; stock grants what it still has.
        let mut by_product: BTreeMap<&str, (u32, Vec<&str>)> = BTreeMap::new();
        for line in &parcel.lines {
            let entry = by_product.entry(line.product_id.as_str()).or_default();
            entry.0 += line.units;
            entry.1.push(line.lot_id.as_str());
        }
        let mut granted: BTreeMap<String, u32> = BTreeMap::new();
        if !by_product.is_empty() {
            let lines: Vec<serde_json::Value> = by_product
                .iter()
                .map(|(product, (quantity, lots))| json!({"product_id": product, "quantity": quantity, "lots": lots}))
                .collect();
            let reserve = CommandRequest::new(
                format!("wave/{}", row.parcel_id),
                system.clone(),
                json!({"reservation_id": row.parcel_id, "site_id": site_id.as_str(), "partial": true,
                       "purpose": {"kind": "parcel", "association_id": row.association_id}, "lines": lines}),
            );
            match ctx.client.command("stock", "reserve_stock", &reserve).await {
                Ok(reply) => {
                    for event in reply.events.iter().filter(|e| e.event_type == "reservation_confirmed") {
                        for a in event.data["allocations"].as_array().into_iter().flatten() {
                            let lot = a["lot_id"].as_str().unwrap_or_default().to_owned();
                            *granted.entry(lot).or_default() += a["quantity"].as_u64().unwrap_or(0) as u32;
                        }
                    }
                }
                Err(e) if e.code == "insufficient_stock" => {}
                Err(e) => return Err(e),
            }
        }
        // The parcel records what stock granted; a group it lacks is short.
        let mut lines = Vec::new();
        let mut given: BTreeMap<values::FoodGroup, u64> = BTreeMap::new();
        for line in parcel.lines {
            let left = granted.entry(line.lot_id.clone()).or_default();
            let units = line.units.min(*left);
            *left -= units;
            if units == 0 {
                continue;
            }
            let grams = line.grams / u64::from(line.units.max(1)) * u64::from(units);
            *given.entry(line.food_group).or_default() += grams;
            lines.push(Line { units, grams, ..line });
        }
        let short = parcel
            .coverage
            .iter()
            .filter(|(g, (need, _))| given.get(*g).copied().unwrap_or(0) < *need)
            .map(|(g, _)| *g)
            .collect();
        let id = parse_id(&row.parcel_id, "parcel")?;
        let meta =
            eventcore::CommandMeta { command_id: format!("wave/{}", row.parcel_id), ..crate::common::meta(&request) };
        let compose =
            ParcelCommand::Compose { lines, short, needs: demand.needs.clone(), commune: demand.commune.clone() };
        replies.push(parcels.execute(id, compose, meta).await?);
    }
    Ok(combine(format!("wave-{}-{site_id}", body.date), SERVICE, replies))
}

pub(super) fn register(host: &mut ServiceHost, ctx: &ServiceContext) {
    let admins: &'static [Role] = &[];
    process_command(host, "compose_wave", admins, ctx.clone(), |ctx, request, body: ComposeWave| async move {
        compose_wave(ctx, request, body).await
    });
}
