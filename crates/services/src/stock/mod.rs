//! Stock service: sites and zones, lots (taken in from accepted donation lines), reservations in
//! FEFO order, movements, and the stock queries.

mod audit;
mod lots;
mod process;
mod sites;

use chrono::{Duration, NaiveDate, Utc};
use runtime::{parse_payload, Reactor, Role, ServiceError, ServiceHost};
use serde::Deserialize;
use stock::{AdjustReason, Lot, LotCommand, LotStatus, Reservation, ZoneCode};
use utoipa::ToSchema;
use values::{FoodGroup, StorageClass};

pub use audit::{AuditReport, Auditor};
pub use lots::{
    AllocationRow, LotRow, LotsProjection, RecallRow, RecallTrace, ReservationRow, ShipmentRow, ShortfallRow,
    TracedShipment, TracedTransfer,
};
pub use process::{lot_id_for_line, IssueRecall, ReservationAction, ReserveLine, ReserveStock, ShipReservation};
pub use sites::{AddZone, CreateSite, GetSite, SiteRow, SitesProjection, ZoneBody};

use crate::common::{aggregate_command, meta, number, parse_id, projection_query, require, storage, ServiceContext};
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
    let view = engine.register(LotsProjection);
    let warehouse: &'static [Role] = &[Role::Warehouse];
    let stock = process::Stock {
        lots: lots.clone(),
        reservations: reservations.clone(),
        sites: sites.clone(),
        projections: ctx.projections.clone(),
    };

    {
        let lots = lots.clone();
        host.reactor(Reactor::new(
            "stock_receive_donations",
            crate::donations::SERVICE,
            "donations.donation.>",
            move |r| {
                let lots = lots.clone();
                async move { process::receive_donation(&lots, r).await }
            },
        ));
    }

    let s = stock.clone();
    host.command("reserve_stock", move |request| {
        let s = s.clone();
        async move {
            require(&request.actor, warehouse)?;
            let body: ReserveStock = parse_payload(&request.payload)?;
            s.reserve(request, body).await
        }
    });
    let s = stock.clone();
    host.command("release_reservation", move |request| {
        let s = s.clone();
        async move {
            require(&request.actor, warehouse)?;
            let body: ReservationAction = parse_payload(&request.payload)?;
            let id = parse_id(&body.reservation_id, "reservation")?;
            s.release(request, id).await
        }
    });
    let s = stock.clone();
    host.command("pick_reservation", move |request| {
        let s = s.clone();
        async move {
            require(&request.actor, warehouse)?;
            let body: ReservationAction = parse_payload(&request.payload)?;
            let id = parse_id(&body.reservation_id, "reservation")?;
            s.pick(request, id).await
        }
    });
    let s = stock.clone();
    host.command("ship_reservation", move |request| {
        let s = s.clone();
        async move {
            require(&request.actor, warehouse)?;
            let body: ShipReservation = parse_payload(&request.payload)?;
            s.ship(request, body).await
        }
    });

    let s = stock.clone();
    host.command("dispatch_transfer", move |request| {
        let s = s.clone();
        async move {
            require(&request.actor, warehouse)?;
            let body: ReservationAction = parse_payload(&request.payload)?;
            let id = parse_id(&body.reservation_id, "reservation")?;
            s.dispatch(request, id).await
        }
    });
    let s = stock.clone();
    host.command("receive_transfer", move |request| {
        let s = s.clone();
        async move {
            require(&request.actor, warehouse)?;
            let body: ReservationAction = parse_payload(&request.payload)?;
            let id = parse_id(&body.reservation_id, "reservation")?;
            s.receive_transfer(request, id).await
        }
    });
    {
        let (s, recalls) = (stock.clone(), ctx.runner::<stock::Recall>(SERVICE));
        host.command("issue_recall", move |request| {
            let (s, recalls) = (s.clone(), recalls.clone());
            async move {
                require(&request.actor, &[])?;
                let body: IssueRecall = parse_payload(&request.payload)?;
                s.recall(request, body, &recalls).await
            }
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
    aggregate_command(&mut host, "lift_hold", &lots, warehouse, |body: LiftHold, _| {
        Ok((parse_id(&body.lot_id, "lot")?, LotCommand::LiftHold))
    });
    {
        let (lots, sites) = (lots.clone(), sites.clone());
        host.command("move_lot", move |request| {
            let (lots, sites) = (lots.clone(), sites.clone());
            async move {
                require(&request.actor, warehouse)?;
                let body: MoveLot = parse_payload(&request.payload)?;
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
            }
        });
    }

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
    projection_query(&mut host, "expiring_lots", ctx, &view, Some(warehouse), |view, p: Expiring| {
        let until: NaiveDate = Utc::now().date_naive() + Duration::days(i64::from(p.days.min(3650)));
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
