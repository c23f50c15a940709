//! A distribution wave: every parcel requested for a day, composed from a site's stock by the
//! fair composer, each reserved in the stock service (naming the composer's lots) before the
//! parcel records its lines. A parcel whose lots were taken meanwhile is composed again, once,
//! from what is left (a second reservation, `<parcel>_2`), up to the share the composer gave it;
//! it records what stock granted and says which groups are short.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use distribution::compose::{compose, shortfall, Demand, Line, Offer};
use distribution::{Parcel, ParcelCommand, ParcelStatus};
use runtime::{Actor, CommandReply, CommandRequest, QueryRequest, Role, ServiceError, ServiceHost};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use values::FoodGroup;

use super::households::{HouseholdRow, HouseholdsProjection};
use super::parcels::{ParcelRow, ParcelsProjection};
use super::{AssociationRow, AssociationsProjection, SERVICE};
use crate::common::{caught_up, combine, parse_id, process_command, storage, ServiceContext};
use crate::stock::LotRow;
use projections::{Projection, ProjectionHandle};

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
            needs: {
                let days = association.as_ref().and_then(|a| a.parcel_days).unwrap_or(ctx.policies.needs.parcel_days);
                ctx.policies.needs.needs_over(&household.composition, days)
            },
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
        unit_grams: lot.grams(1).max(1) as u32,
        traits: lot.traits,
        allergens: lot.allergens.clone(),
    }
}

/// What stock granted a parcel: its lines, as lots and units.
#[derive(Default)]
struct Granted {
    lines: Vec<Line>,
    grams: BTreeMap<FoodGroup, u64>,
    /// The stock stream's sequence of the reservation's answer.
    seq: u64,
}

/// Reserves `lines` (the composer's choice) under `reservation_id`, naming the lots; stock grants
/// what it still has. The parcel's lines are then what was granted.
async fn reserve(
    ctx: &ServiceContext,
    site_id: &str,
    row: &ParcelRow,
    reservation_id: &str,
    lines: &[Line],
    lots: &BTreeMap<String, LotRow>,
) -> Result<Granted, ServiceError> {
    let mut granted = Granted::default();
    let mut by_product: BTreeMap<&str, (u32, Vec<&str>)> = BTreeMap::new();
    for line in lines {
        let entry = by_product.entry(line.product_id.as_str()).or_default();
        entry.0 += line.units;
        entry.1.push(line.lot_id.as_str());
    }
    if by_product.is_empty() {
        return Ok(granted);
    }
    let asked: Vec<serde_json::Value> = by_product
        .iter()
        .map(|(product, (quantity, lots))| json!({"product_id": product, "quantity": quantity, "lots": lots}))
        .collect();
    let request = CommandRequest::new(
        format!("wave/{reservation_id}"),
        Actor::system("distribution"),
        json!({"reservation_id": reservation_id, "site_id": site_id, "partial": true,
               "purpose": {"kind": "parcel", "association_id": row.association_id}, "lines": asked}),
    );
    let reply = match ctx.client.command("stock", "reserve_stock", &request).await {
        Ok(reply) => reply,
        Err(e) if e.code == "insufficient_stock" => return Ok(granted),
        Err(e) => return Err(e),
    };
    granted.seq = reply.seq;
    // From the allocations themselves (a retried wave gets the first answer, whatever the
    // composer chose this time), described by the lot or, failing that, the composer's line.
    for event in reply.events.iter().filter(|e| e.event_type == "reservation_confirmed") {
        for a in event.data["allocations"].as_array().into_iter().flatten() {
            let lot_id = a["lot_id"].as_str().unwrap_or_default();
            let units = a["quantity"].as_u64().unwrap_or(0) as u32;
            let planned = lines.iter().find(|l| l.lot_id == lot_id);
            let line = match (lots.get(lot_id), planned) {
                (Some(lot), _) => Line {
                    lot_id: lot_id.to_owned(),
                    product_id: lot.product_id.clone(),
                    food_group: lot.food_group,
                    units,
                    grams: lot.grams(units),
                    need_g: planned.map_or(0, |l| l.need_g),
                    date: lot.date,
                    date_kind: lot.date_kind,
                },
                (None, Some(line)) => {
                    Line { units, grams: line.grams / u64::from(line.units.max(1)) * u64::from(units), ..line.clone() }
                }
                (None, None) => {
                    return Err(ServiceError::internal(
                        "composing a wave",
                        format!("stock granted lot {lot_id}, which the wave does not know"),
                    ))
                }
            };
            if line.units > 0 {
                *granted.grams.entry(line.food_group).or_default() += line.grams;
                granted.lines.push(line);
            }
        }
    }
    Ok(granted)
}

/// The site's available lots, from the stock service (after `min_seq` on its stream).
async fn lots_on_offer(ctx: &ServiceContext, site_id: &str, min_seq: u64) -> Result<Vec<LotRow>, ServiceError> {
    let mut query =
        QueryRequest::new(Actor::system("distribution"), json!({"site_id": site_id, "status": "available"}));
    if min_seq > 0 {
        query.min_seq.insert("stock".to_owned(), min_seq);
    }
    ctx.client.query("stock", "list_lots", &query).await
}

async fn compose_wave(
    ctx: ServiceContext,
    request: CommandRequest,
    body: ComposeWave,
) -> Result<CommandReply, ServiceError> {
    let site_id = parse_id(&body.site_id, "site")?;
    let parcels = ctx.runner::<Parcel>(SERVICE);
    let lots = lots_on_offer(&ctx, site_id.as_str(), 0).await?;
    let offers: Vec<Offer> = lots.iter().filter(|l| l.available > 0).map(offer).collect();
    let mut known: BTreeMap<String, LotRow> = lots.into_iter().map(|l| (l.lot_id.clone(), l)).collect();
    // Reading the requests and composing both block: off the executor, together.
    let (wave, demands, rows) = {
        let ctx = ctx.clone();
        tokio::task::spawn_blocking(move || {
            demands(&ctx, body.date).map(|(demands, rows)| (compose(&demands, &offers, body.date), demands, rows))
        })
        .await
        .map_err(|e| ServiceError::internal("composing a wave", e))??
    };
    // Each parcel reserves what the composer chose for it.
    let mut placed = Vec::with_capacity(rows.len());
    let mut seq = 0;
    for (planned, row) in wave.parcels.iter().zip(&rows) {
        let granted = reserve(&ctx, site_id.as_str(), row, &row.parcel_id, &planned.lines, &known).await?;
        seq = seq.max(granted.seq);
        placed.push(granted);
    }
    // Stock changed meanwhile for some (another reservation took their lots): those are
    // composed again, once, from what is left now, up to the share the composer gave them.
    let lost: Vec<(usize, Demand)> = (0..rows.len())
        .filter_map(|i| shortfall(&demands[i], &wave.parcels[i], &placed[i].grams).map(|d| (i, d)))
        .collect();
    let mut recomposed: Vec<Option<(String, Granted)>> = (0..rows.len()).map(|_| None).collect();
    if !lost.is_empty() {
        let lots = lots_on_offer(&ctx, site_id.as_str(), seq).await?;
        let offers: Vec<Offer> = lots.iter().filter(|l| l.available > 0).map(offer).collect();
        known.extend(lots.into_iter().map(|l| (l.lot_id.clone(), l)));
        let again: Vec<Demand> = lost.iter().map(|(_, d)| d.clone()).collect();
        let second = compose(&again, &offers, body.date);
        for ((i, _), parcel) in lost.iter().zip(second.parcels) {
            let id = format!("{}_2", rows[*i].parcel_id);
            let mut lines = parcel.lines;
            // The line's "why" is the household's whole need, as in the first pass.
            for line in &mut lines {
                line.need_g = demands[*i].needs.get(&line.food_group).copied().unwrap_or(0);
            }
            let granted = reserve(&ctx, site_id.as_str(), &rows[*i], &id, &lines, &known).await?;
            recomposed[*i] = Some((id, granted));
        }
    }
    let mut replies = Vec::new();
    for (i, (row, demand)) in rows.iter().zip(&demands).enumerate() {
        let mut granted = std::mem::take(&mut placed[i]);
        let mut reservations = Vec::new();
        if !granted.lines.is_empty() {
            reservations.push(row.parcel_id.clone());
        }
        let again = recomposed[i].take();
        let was_recomposed = again.is_some();
        if let Some((id, more)) = again {
            if !more.lines.is_empty() {
                reservations.push(id);
            }
            for (g, grams) in more.grams {
                *granted.grams.entry(g).or_default() += grams;
            }
            granted.lines.extend(more.lines);
        }
        // A group the household needed and did not get in full is short.
        let short = demand
            .needs
            .iter()
            .filter(|(g, need)| granted.grams.get(*g).copied().unwrap_or(0) < **need)
            .map(|(g, _)| *g)
            .collect();
        let id = parse_id(&row.parcel_id, "parcel")?;
        let meta =
            eventcore::CommandMeta { command_id: format!("wave/{}", row.parcel_id), ..crate::common::meta(&request) };
        let compose = ParcelCommand::Compose {
            lines: granted.lines,
            short,
            needs: demand.needs.clone(),
            commune: demand.commune.clone(),
            reservations,
            recomposed: was_recomposed,
        };
        replies.push(parcels.execute(id, compose, meta).await?);
    }
    Ok(combine(format!("wave-{}-{site_id}", body.date), SERVICE, replies))
}

/// `reads`: the read models a wave decides from (associations, households, parcels).
pub(super) fn register(host: &mut ServiceHost, ctx: &ServiceContext, reads: [ProjectionHandle; 3]) {
    let admins: &'static [Role] = &[];
    let state = (ctx.clone(), std::sync::Arc::new(reads));
    process_command(host, "compose_wave", admins, state, |(ctx, reads), request, body: ComposeWave| async move {
        // Every request, household and association acknowledged before the wave is in it.
        caught_up(&ctx, &reads[..], SERVICE).await?;
        compose_wave(ctx, request, body).await
    });
}
