//! Stock service: sites and zones, lots (taken in from accepted donation lines), reservations in
//! FEFO order, movements, and the stock queries.

mod audit;
mod lots;
mod process;
mod sites;

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate, Utc};
use runtime::{Reactor, Role, ServiceError, ServiceHost};
use serde::{Deserialize, Serialize};
use stock::{AdjustReason, Lot, LotCommand, LotStatus, Purpose, Reservation, ZoneCode};
use utoipa::ToSchema;
use values::{FoodGroup, StorageClass};

pub use audit::{AuditReport, Auditor};
pub use lots::{
    AllocationRow, LotRow, LotsProjection, RecallRow, RecallTrace, ReservationRow, ShipmentRow, ShortfallRow,
    TracedShipment, TracedTransfer,
};
pub use process::{lot_id_for_line, IssueRecall, ReservationAction, ReserveLine, ReserveStock, ShipReservation};
pub use sites::{known_site, AddZone, CreateSite, GetSite, SiteRow, SitesProjection, ZoneBody};

use crate::common::{
    aggregate_command, combine, meta, number, parse_id, process_command, projection_query, storage, with_view,
    NoParams, ServiceContext,
};
use crate::donations::{food_group_schema, storage_schema};
use projections::Engine;

pub const SERVICE: &str = "stock";

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListLots {
    pub site_id: Option<String>,
    pub product_id: Option<String>,
    pub zone: Option<String>,
    #[schema(schema_with = food_group_schema)]
    pub food_group: Option<FoodGroup>,
    #[schema(schema_with = storage_schema)]
    pub storage: Option<StorageClass>,
    /// `available`, `held`, `recalled`, `expired` or `depleted`; without it, lots with units on
    /// hand.
    #[schema(value_type = Option<String>)]
    pub status: Option<LotStatus>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetLot {
    pub lot_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneCount {
    pub site_id: String,
    #[schema(value_type = String)]
    pub zone: ZoneCode,
    /// One count per lot in the zone: every lot the zone holds must be counted.
    pub counts: Vec<LotCount>,
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LotCount {
    pub lot_id: String,
    pub counted: u32,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunExpiry {
    /// The day to judge dates against; today by default.
    pub today: Option<NaiveDate>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockQuery {
    pub site_id: Option<String>,
    pub zone: Option<String>,
    #[schema(schema_with = food_group_schema)]
    pub food_group: Option<FoodGroup>,
    #[schema(schema_with = storage_schema)]
    pub storage: Option<StorageClass>,
    /// Stock as it was at the end of this day (time travel); now by default.
    pub as_of: Option<NaiveDate>,
}

/// Stock of one product at one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StockLine {
    pub site_id: String,
    pub product_id: String,
    pub product_name: String,
    #[schema(schema_with = food_group_schema)]
    pub food_group: FoodGroup,
    #[schema(schema_with = storage_schema)]
    pub storage: StorageClass,
    pub lots: u32,
    pub on_hand: u64,
    /// Only for the present (not with `as_of`).
    pub available: u64,
    pub kg: f64,
    /// The earliest date among its lots.
    pub next_date: Option<NaiveDate>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LowStockQuery {
    pub site_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LowStock {
    #[schema(schema_with = food_group_schema)]
    pub food_group: FoodGroup,
    pub available_kg: f64,
    pub minimum_kg: f64,
    pub low: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetRecall {
    pub recall_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetReservation {
    pub reservation_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTransfers {
    /// Only those leaving or reaching this site.
    pub site_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Expiring {
    /// Lots whose date falls within this many days from today.
    #[serde(deserialize_with = "number")]
    pub days: u32,
    pub site_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustLot {
    pub lot_id: String,
    /// Units added (positive) or removed (negative).
    pub delta: i64,
    /// `count`, `damage`, `spoilage`, `theft` or `correction`.
    #[schema(value_type = String)]
    pub reason: AdjustReason,
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveLot {
    pub lot_id: String,
    #[schema(value_type = String)]
    pub zone: ZoneCode,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldLot {
    pub lot_id: String,
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LiftHold {
    pub lot_id: String,
}

pub fn build(ctx: &ServiceContext, engine: &mut Engine) -> ServiceHost {
    let mut host = ServiceHost::new(SERVICE);
    let sites = sites::register(&mut host, ctx, engine);
    let lots = ctx.runner::<Lot>(SERVICE);
    let reservations = ctx.runner::<Reservation>(SERVICE);
    let view = engine.register(LotsProjection { calendar: ctx.calendar });
    let warehouse: &'static [Role] = &[Role::Warehouse];
    let recalls = ctx.runner::<stock::Recall>(SERVICE);
    let stock = process::Stock {
        lots: lots.clone(),
        reservations: reservations.clone(),
        sites: sites.clone(),
        recalls: recalls.clone(),
        projections: ctx.projections.clone(),
        view: view.clone(),
        ctx: ctx.clone(),
    };

    {
        let stock = stock.clone();
        host.reactor(Reactor::new(
            "stock_receive_donations",
            crate::donations::SERVICE,
            "donations.donation.>",
            move |r| {
                let stock = stock.clone();
                async move { process::receive_donation(&stock, r).await }
            },
        ));
    }

    let st = stock.clone();
    process_command(&mut host, "reserve_stock", warehouse, st.clone(), |s, request, body: ReserveStock| async move {
        s.reserve(request, body).await
    });
    // Asked by the platform's job every `jobs.reservations_interval_secs`.
    let timeout = Duration::milliseconds((ctx.policies.reservation_timeout_minutes * 60_000.0) as i64);
    process_command(&mut host, "expire_reservations", &[], st.clone(), move |s, request, _: NoParams| async move {
        s.expire_stale(request, timeout).await
    });
    // Steps on a whole reservation, named by its id.
    for name in ["release_reservation", "pick_reservation", "return_shipment", "dispatch_transfer", "receive_transfer"]
    {
        process_command(
            &mut host,
            name,
            warehouse,
            st.clone(),
            move |s, request, body: ReservationAction| async move {
                let id = parse_id(&body.reservation_id, "reservation")?;
                match name {
                    "release_reservation" => s.release(request, id).await,
                    "pick_reservation" => s.pick(request, id).await,
                    "return_shipment" => s.return_shipment(request, id).await,
                    "dispatch_transfer" => s.dispatch(request, id).await,
                    _ => s.receive_transfer(request, id).await,
                }
            },
        );
    }
    // Steps that say where the units go.
    process_command(
        &mut host,
        "ship_reservation",
        warehouse,
        st.clone(),
        |s, request, body: ShipReservation| async move { s.ship(request, body).await },
    );
    process_command(
        &mut host,
        "redirect_shipment",
        warehouse,
        st.clone(),
        |s, request, body: ShipReservation| async move { s.redirect(request, body).await },
    );
    process_command(&mut host, "issue_recall", &[], st, |s, request, body: IssueRecall| async move {
        s.recall(request, body).await
    });
    let state = (lots.clone(), ctx.projections.clone());
    process_command(
        &mut host,
        "count_zone",
        warehouse,
        state.clone(),
        |(lots, store), request, body: ZoneCount| async move {
            let (site, zone) = (body.site_id.clone(), body.zone.to_string());
            let rows: Vec<LotRow> = with_view(&store, LotsProjection::NAME, move |view| {
                let rows: Vec<LotRow> = view.scan_json("lot", b"").map_err(storage)?;
                Ok(rows
                    .into_iter()
                    .filter(|r| r.site_id == site && r.zone.as_deref() == Some(&zone) && r.on_hand > 0)
                    .collect())
            })
            .await?;
            let counted: BTreeMap<&str, u32> = body.counts.iter().map(|c| (c.lot_id.as_str(), c.counted)).collect();
            if counted.len() != body.counts.len() {
                return Err(ServiceError::validation("duplicate_lot", "a lot is counted twice"));
            }
            if let Some(stray) = counted.keys().find(|id| !rows.iter().any(|r| r.lot_id == **id)) {
                return Err(ServiceError::validation(
                    "lot_not_in_zone",
                    format!("lot {stray} is not in zone {} of {}", body.zone, body.site_id),
                ));
            }
            let missing: Vec<&str> =
                rows.iter().map(|r| r.lot_id.as_str()).filter(|id| !counted.contains_key(id)).collect();
            if !missing.is_empty() {
                return Err(ServiceError::validation(
                    "count_incomplete",
                    format!("count every lot of the zone; missing: {}", missing.join(", ")),
                ));
            }
            let mut replies = Vec::new();
            for (lot_id, counted) in counted {
                let command = LotCommand::Count { counted, note: body.note.clone() };
                replies.push(lots.execute(parse_id(lot_id, "lot")?, command, meta(&request)).await?);
            }
            Ok(combine(format!("count-{}-{}", body.site_id, body.zone), SERVICE, replies))
        },
    );
    let calendar = ctx.calendar;
    process_command(&mut host, "run_expiry", &[], state, move |(lots, store), request, body: RunExpiry| async move {
        let today = body.today.unwrap_or_else(|| calendar.day_of(Utc::now()));
        let candidates: Vec<LotRow> = with_view(&store, LotsProjection::NAME, move |view| {
            let rows: Vec<LotRow> = view.scan_json("lot", b"").map_err(storage)?;
            Ok(rows.into_iter().filter(|r| r.on_hand > 0 && r.date.is_some_and(|d| d < today)).collect())
        })
        .await?;
        let mut replies = Vec::new();
        for row in candidates {
            let id = parse_id(&row.lot_id, "lot")?;
            let command_meta = eventcore::CommandMeta { command_id: format!("expire/{today}"), ..meta(&request) };
            replies.push(lots.execute(id, LotCommand::Expire { today }, command_meta).await?);
        }
        Ok(combine(format!("expiry-{today}"), SERVICE, replies))
    });
    projection_query(&mut host, "stock_summary", ctx, &view, Some(warehouse), |view, p: StockQuery| {
        stock_lines(view, &p)
    });
    {
        let minimum = ctx.policies.stock_minimum_kg.clone();
        projection_query(&mut host, "low_stock", ctx, &view, Some(warehouse), move |view, p: LowStockQuery| {
            let rows: Vec<LotRow> = view.scan_json("lot", b"").map_err(storage)?;
            Ok(FoodGroup::ALL
                .iter()
                .map(|&group| {
                    let grams: u64 = rows
                        .iter()
                        .filter(|r| r.food_group == group && p.site_id.as_ref().is_none_or(|s| *s == r.site_id))
                        .map(|r| r.grams(r.available))
                        .sum();
                    let available_kg = grams as f64 / 1000.0;
                    let minimum_kg = minimum.get(group);
                    LowStock { food_group: group, available_kg, minimum_kg, low: available_kg < minimum_kg }
                })
                .collect::<Vec<_>>())
        });
    }

    projection_query(&mut host, "recall_trace", ctx, &view, Some(&[]), |view, p: GetRecall| {
        lots::recall_trace(view, &p.recall_id)
    });

    aggregate_command(&mut host, "adjust_lot", &lots, warehouse, |body: AdjustLot, _| {
        let command = LotCommand::Adjust { delta: body.delta, reason: body.reason, note: body.note };
        Ok((parse_id(&body.lot_id, "lot")?, command))
    });
    aggregate_command(&mut host, "hold_lot", &lots, warehouse, |body: HoldLot, _| {
        Ok((parse_id(&body.lot_id, "lot")?, LotCommand::Hold { reason: body.reason }))
    });
    aggregate_command(&mut host, "flag_lot", &lots, warehouse, |body: HoldLot, _| {
        Ok((parse_id(&body.lot_id, "lot")?, LotCommand::Flag { reason: body.reason }))
    });
    aggregate_command(&mut host, "lift_hold", &lots, warehouse, |body: LiftHold, _| {
        Ok((parse_id(&body.lot_id, "lot")?, LotCommand::LiftHold))
    });
    process_command(
        &mut host,
        "move_lot",
        warehouse,
        (lots.clone(), sites.clone()),
        |(lots, sites), request, body: MoveLot| async move {
            let id = parse_id(&body.lot_id, "lot")?;
            let (lot, _) = lots.load(&id).await?;
            let receipt =
                lot.receipt.ok_or_else(|| ServiceError::not_found("lot_not_found", format!("no lot {id}")))?;
            let site_id = parse_id(&receipt.site_id, "site")?;
            let (site, _) = sites.load(&site_id).await?;
            let zone_storage = *site.zones.get(&body.zone).ok_or_else(|| {
                ServiceError::not_found("zone_not_found", format!("site {site_id} has no zone {}", body.zone))
            })?;
            lots.execute(id, LotCommand::Move { zone: body.zone, zone_storage }, meta(&request)).await
        },
    );

    projection_query(&mut host, "list_lots", ctx, &view, Some(warehouse), |view, p: ListLots| {
        let mut rows: Vec<LotRow> = view.scan_json("lot", b"").map_err(storage)?;
        rows.retain(|r| {
            p.site_id.as_ref().is_none_or(|s| *s == r.site_id)
                && p.product_id.as_ref().is_none_or(|s| *s == r.product_id)
                && p.zone.as_ref().is_none_or(|z| r.zone.as_ref() == Some(&z.to_ascii_uppercase()))
                && p.food_group.is_none_or(|g| g == r.food_group)
                && p.storage.is_none_or(|s| s == r.storage)
                && match p.status {
                    Some(status) => r.status == status,
                    None => r.on_hand > 0,
                }
        });
        rows.sort_by(|a, b| {
            a.product_name.cmp(&b.product_name).then(a.date.cmp(&b.date)).then(a.lot_id.cmp(&b.lot_id))
        });
        Ok(rows)
    });
    projection_query(&mut host, "get_lot", ctx, &view, Some(warehouse), |view, p: GetLot| {
        view.get_json::<LotRow>("lot", p.lot_id.as_bytes())
            .map_err(storage)?
            .ok_or_else(|| ServiceError::not_found("lot_not_found", format!("no lot {}", p.lot_id)))
    });
    projection_query(&mut host, "get_reservation", ctx, &view, Some(warehouse), |view, p: GetReservation| {
        view.get_json::<ReservationRow>("reservation", p.reservation_id.as_bytes()).map_err(storage)?.ok_or_else(|| {
            ServiceError::not_found("reservation_not_found", format!("no reservation {}", p.reservation_id))
        })
    });
    // Reservations by status, for the gateway's metrics (counts only; admins and the platform).
    projection_query(&mut host, "count_reservations", ctx, &view, Some(&[]), |view, _: crate::common::NoParams| {
        #[derive(Deserialize)]
        struct StatusOnly {
            status: String,
        }
        let rows: Vec<StatusOnly> = view.scan_json("reservation", b"").map_err(storage)?;
        let mut counts = BTreeMap::<String, u64>::new();
        for row in rows {
            *counts.entry(row.status).or_default() += 1;
        }
        Ok(counts)
    });
    projection_query(&mut host, "list_transfers", ctx, &view, Some(warehouse), |view, p: ListTransfers| {
        let mut rows = Vec::new();
        for item in view.scan("transfer", b"") {
            let (_, id) = item.map_err(storage)?;
            if let Some(row) = view.get_json::<ReservationRow>("reservation", &id).map_err(storage)? {
                let to = match &row.purpose {
                    Purpose::Transfer { to_site } => to_site.as_str(),
                    _ => "",
                };
                if p.site_id.as_ref().is_none_or(|s| *s == row.site_id || s == to) {
                    rows.push(row);
                }
            }
        }
        rows.sort_by_key(|r| std::cmp::Reverse(r.updated_at));
        Ok(rows)
    });
    projection_query(&mut host, "expiring_lots", ctx, &view, Some(warehouse), move |view, p: Expiring| {
        if p.days > 3650 {
            return Err(ServiceError::validation("invalid_days", "look at most 3,650 days (ten years) ahead"));
        }
        let until: NaiveDate = calendar.day_of(Utc::now()) + Duration::days(i64::from(p.days));
        let mut rows: Vec<LotRow> = view.scan_json("lot", b"").map_err(storage)?;
        rows.retain(|r| {
            r.on_hand > 0
                && matches!(r.status, LotStatus::Available | LotStatus::Held)
                && r.date.is_some_and(|d| d <= until)
                && p.site_id.as_ref().is_none_or(|s| *s == r.site_id)
        });
        rows.sort_by(|a, b| a.date.cmp(&b.date).then(a.lot_id.cmp(&b.lot_id)));
        Ok(rows)
    });
    host
}

/// Stock by site and product, filtered; at the end of `as_of` if given.
fn stock_lines(view: &projections::View, p: &StockQuery) -> Result<Vec<StockLine>, ServiceError> {
    let rows: Vec<LotRow> = view.scan_json("lot", b"").map_err(storage)?;
    let mut lines: BTreeMap<(String, String), StockLine> = BTreeMap::new();
    for r in rows {
        if !(p.site_id.as_ref().is_none_or(|s| *s == r.site_id)
            && p.zone.as_ref().is_none_or(|z| r.zone.as_ref() == Some(&z.to_ascii_uppercase()))
            && p.food_group.is_none_or(|g| g == r.food_group)
            && p.storage.is_none_or(|s| s == r.storage))
        {
            continue;
        }
        let (on_hand, available) = match p.as_of {
            Some(date) => (lots::on_hand_at(view, &r.lot_id, date)?, 0),
            None => (r.on_hand, r.available),
        };
        if on_hand == 0 {
            continue;
        }
        let line = lines.entry((r.site_id.clone(), r.product_id.clone())).or_insert_with(|| StockLine {
            site_id: r.site_id.clone(),
            product_id: r.product_id.clone(),
            product_name: r.product_name.clone(),
            food_group: r.food_group,
            storage: r.storage,
            lots: 0,
            on_hand: 0,
            available: 0,
            kg: 0.0,
            next_date: None,
        });
        line.lots += 1;
        line.on_hand += u64::from(on_hand);
        line.available += u64::from(available);
        line.kg += r.grams(on_hand) as f64 / 1000.0;
        line.next_date = match (line.next_date, r.date) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(lines.into_values().collect())
}
