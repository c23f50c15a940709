//! Stock processes that span aggregates: taking accepted donation lines into stock, and
//! reservations (FEFO across lots), picked, shipped, dispatched or released as one.

use std::sync::Arc;

use chrono::Utc;
use donations::DonationEvent;
use eventcore::{AggregateId, CommandMeta};
use projections::{ProjectionHandle, ProjectionStore};
use runtime::{CommandReply, CommandRequest, CommandRunner, ErrorKind, Reaction, ServiceError};
use serde::Deserialize;
use stock::{
    Allocation, Destination, Lot, LotCommand, Origin, PlanLine, Purpose, Receipt, Reservation, ReservationCommand,
    ReservationStatus, Site,
};
use utoipa::ToSchema;
use uuid::Uuid;

use super::lots::{fefo_candidates, listed_before, recalls_covering, Candidates, LotsProjection};
use crate::common::{caught_up, meta, new_id, parse_id, storage, with_view, ServiceContext};

/// The id of the lot an accepted donation line becomes: readable when it fits.
pub fn lot_id_for_line(donation_id: &str, line: u32) -> AggregateId {
    let readable = format!("{donation_id}-l{line}");
    let id = if readable.len() <= 64 {
        readable
    } else {
        Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("foodaid/lot/{donation_id}/{line}").as_bytes()).to_string()
    };
    AggregateId::try_from(id).expect("donation ids make valid lot ids")
}

/// Metadata of a command a reaction issues: caused by the event, idempotent by the event's id.
fn reaction_meta(envelope: &eventcore::EventEnvelope, what: &str) -> CommandMeta {
    CommandMeta {
        command_id: format!("{what}/{}", envelope.event_id),
        actor: "system/stock".into(),
        correlation_id: envelope.correlation_id,
        causation_id: envelope.event_id,
        occurred_at: Some(envelope.occurred_at),
    }
}

/// Every accepted donation line becomes a lot at the donation's site (the lines of one
/// donation are taken in concurrently: each is its own lot); a lot an open recall covers is
/// held as it arrives.
pub(super) async fn receive_donation(stock: &Stock, reaction: Reaction) -> Result<(), ServiceError> {
    let lots = &stock.lots;
    let mut recorded = None;
    let mut receipts = Vec::new();
    for (envelope, event) in reaction.events::<DonationEvent>()? {
        match event {
            DonationEvent::DonationRecorded { donor_id, site_id, .. } => recorded = Some((donor_id, site_id)),
            DonationEvent::LineAccepted { line, past_best_before } => {
                let (donor_id, site_id) = recorded.clone().ok_or_else(|| {
                    ServiceError::internal("taking a donation into stock", "a line comes before its donation")
                })?;
                let donation_id = &reaction.commit.aggregate_id;
                let receipt = Receipt {
                    product: line.input.product,
                    site_id,
                    quantity: line.input.quantity,
                    weight_g: line.input.weight_g,
                    date: line.input.date,
                    lot_number: line.input.lot_number,
                    past_best_before,
                    origin: Origin::Donation { donation_id: donation_id.clone(), line: line.line, donor_id },
                };
                let id = lot_id_for_line(donation_id, line.line);
                receipts.push((id, receipt, reaction_meta(envelope, "receive")));
            }
            DonationEvent::LineRefused { .. } | DonationEvent::DonationExpected(_) => {}
        }
    }
    let receive = receipts
        .iter()
        .map(|(id, receipt, meta)| lots.execute(id.clone(), LotCommand::Receive(receipt.clone()), meta.clone()));
    futures::future::try_join_all(receive).await?;
    stock.hold_if_recalled(&receipts).await
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveLine {
    pub product_id: String,
    pub quantity: u32,
    /// The lots to take it from, in this order (the parcel composer's choice); FEFO across the
    /// site's lots when absent.
    pub lots: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveStock {
    /// The parcel's or transfer's id; derived from the idempotency key when absent.
    pub reservation_id: Option<String>,
    pub site_id: String,
    /// `{"kind": "parcel", "association_id": ...}`, `{"kind": "transfer", "to_site": ...}` or
    /// `{"kind": "other", "label": ...}`; a parcel by default.
    #[schema(value_type = Option<Object>)]
    pub purpose: Option<Purpose>,
    pub lines: Vec<ReserveLine>,
    /// Accept less than asked for when stock is short (default: all or nothing).
    #[serde(default)]
    pub partial: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationAction {
    pub reservation_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipReservation {
    pub reservation_id: String,
    /// Where the units go: `{"kind": "parcel", "reference", "association_id", "relay_point_id",
    /// "household"}`.
    #[schema(value_type = Object)]
    pub destination: Destination,
}

/// The runners and read model the stock processes work with.
#[derive(Clone)]
pub(super) struct Stock {
    pub lots: Arc<CommandRunner<Lot>>,
    pub reservations: Arc<CommandRunner<Reservation>>,
    pub sites: Arc<CommandRunner<Site>>,
    pub recalls: Arc<CommandRunner<stock::Recall>>,
    pub projections: ProjectionStore,
    /// The `lots` read model's progress, to plan from everything acknowledged.
    pub view: ProjectionHandle,
    pub ctx: ServiceContext,
}

/// Rounds of new lots a line short of units is extended by before the reservation settles.
const EXTENSIONS: usize = 8;

fn step_meta(request: &CommandRequest, step: &str, reservation: &AggregateId) -> CommandMeta {
    CommandMeta { command_id: format!("{step}/{reservation}"), ..meta(request) }
}

impl Stock {
    /// Reserves every line in FEFO order across lots, all or nothing unless `partial`.
    ///
    /// The plan (each line's candidate lots, in order) is committed first, so that a retried
    /// request visits the same lots in the same order; each lot grants what it can under its
    /// own concurrency check, so no lot ever gives more than it has. A line that falls short
    /// releases everything and fails the reservation.
    pub async fn reserve(&self, request: CommandRequest, body: ReserveStock) -> Result<CommandReply, ServiceError> {
        let id = new_id(body.reservation_id, &request, "reservation")?;
        let site_id = parse_id(&body.site_id, "site")?;
        let (mut reservation, _) = self.reservations.load(&id).await?;
        let resuming = reservation.status == Some(ReservationStatus::Planned);
        if reservation.status.is_none() {
            super::known_site(&self.sites, site_id.as_str()).await?;
            let purpose = body.purpose.clone().unwrap_or(Purpose::Parcel { association_id: None });
            if let Purpose::Transfer { to_site } = &purpose {
                if *to_site == site_id.as_str() {
                    return Err(ServiceError::validation("same_site", "a transfer goes to another site"));
                }
                super::known_site(&self.sites, to_site).await?;
            }
            // What the site plainly does not have is refused before anything is written (once
            // the read model holds every change acknowledged: units released a moment ago
            // count); only a shortfall the lots themselves reveal (taken meanwhile) fails a plan.
            let lines = match self.plan_lines(&site_id, body.lines.clone(), body.partial).await {
                Err(e) if e.code == "insufficient_stock" => {
                    caught_up(&self.ctx, std::slice::from_ref(&self.view), super::SERVICE).await?;
                    self.plan_lines(&site_id, body.lines, body.partial).await?
                }
                planned => planned?,
            };
            let plan = ReservationCommand::Plan { site_id: site_id.to_string(), purpose, lines, partial: body.partial };
            reservation = self.reservations.execute_with_state(id.clone(), plan, meta(&request)).await?.1;
        }
        let settled = match reservation.status {
            Some(ReservationStatus::Planned) => {
                let (reply, state) = self.allocate(&request, &id, &reservation, resuming).await?;
                reservation = state;
                Some(reply)
            }
            _ => None,
        };
        if reservation.status == Some(ReservationStatus::Failed) {
            if settled.is_none() {
                // A repeat of a failed request: make sure nothing stayed held by a crash.
                self.give_back(&request, &id, &reservation).await?;
            }
            if reservation.expired {
                return Err(ServiceError::conflict(
                    "reservation_expired",
                    format!("reservation {id} was not settled in time: its units went back to the shelf"),
                ));
            }
            let short: Vec<String> = reservation
                .shortfalls
                .iter()
                .map(|s| format!("{}: {} asked, {} available", s.product_id, s.requested, s.allocated))
                .collect();
            return Err(ServiceError::conflict(
                "insufficient_stock",
                format!("not enough stock: {}", short.join("; ")),
            ));
        }
        // The settlement's commit is the answer (its sequence covers the lots' commits); a
        // repeated request gets the first settlement's answer.
        match settled {
            Some(reply) => Ok(reply),
            None => {
                let settle = ReservationCommand::Settle { allocations: vec![] };
                self.reservations.execute(id.clone(), settle, step_meta(&request, "settle", &id)).await
            }
        }
    }

    /// Each line's lots from the read model: the caller's choice, or the first FEFO lots; refused
    /// with `insufficient_stock` when the site shows fewer units than asked (unless partial and
    /// some are there).
    async fn plan_lines(
        &self,
        site_id: &AggregateId,
        asked: Vec<ReserveLine>,
        partial: bool,
    ) -> Result<Vec<PlanLine>, ServiceError> {
        let site = site_id.to_string();
        with_view(&self.projections, LotsProjection::NAME, move |view| {
            let mut lines = Vec::with_capacity(asked.len());
            let (mut short, mut any) = (Vec::new(), false);
            for line in asked {
                let chosen = line.lots.is_some();
                let found = match line.lots {
                    Some(lots) => chosen_lots(view, &site, &line.product_id, lots)?,
                    None => fefo_candidates(view, &site, &line.product_id, line.quantity, &[])?,
                };
                any |= found.available > 0;
                if found.available < u64::from(line.quantity) {
                    short.push(format!("{}: {} asked, {} available", line.product_id, line.quantity, found.available));
                }
                lines.push(PlanLine {
                    product_id: line.product_id,
                    quantity: line.quantity,
                    candidates: found.lots,
                    chosen,
                });
            }
            if !short.is_empty() && (!partial || !any) {
                return Err(ServiceError::conflict(
                    "insufficient_stock",
                    format!("not enough stock: {}", short.join("; ")),
                ));
            }
            Ok(lines)
        })
        .await
    }

    /// Asks each line's lots, in plan order, for what they can grant; lines go concurrently
    /// (they are different products, so different lots). A line its lots leave short is planned
    /// on more lots of the site, once the read model holds every change acknowledged, so a
    /// reservation is never refused while the site has the units.
    async fn allocate(
        &self,
        request: &CommandRequest,
        id: &AggregateId,
        reservation: &Reservation,
        resuming: bool,
    ) -> Result<(CommandReply, Reservation), ServiceError> {
        let lines = reservation
            .lines
            .iter()
            .enumerate()
            .map(|(i, line)| self.allocate_line(request, id, reservation, i as u32 + 1, line.clone(), resuming));
        let allocations: Vec<Allocation> = futures::future::try_join_all(lines).await?.into_iter().flatten().collect();
        runtime::failpoint("reserve.before_settle");
        // All or nothing: the reservation records what the lots could grant (its shortfalls say
        // how much was there), then a failed one gives everything back.
        let settle = ReservationCommand::Settle { allocations };
        let (reply, settled) =
            self.reservations.execute_with_state(id.clone(), settle, step_meta(request, "settle", id)).await?;
        if settled.status == Some(ReservationStatus::Failed) {
            self.give_back(request, id, &settled).await?;
        }
        Ok((reply, settled))
    }

    /// What one line's lots grant, in plan order, extending the plan when they fall short.
    async fn allocate_line(
        &self,
        request: &CommandRequest,
        id: &AggregateId,
        reservation: &Reservation,
        n: u32,
        mut line: PlanLine,
        resuming: bool,
    ) -> Result<Vec<Allocation>, ServiceError> {
        let today = self.ctx.today();
        let mut granted = Vec::new();
        let mut remaining = line.quantity;
        let mut tried = 0;
        for round in 0..=EXTENSIONS {
            for lot in &line.candidates[tried..] {
                let lot_id = parse_id(lot, "lot")?;
                if remaining == 0 {
                    // A retry may find units an earlier attempt left on lots past the point
                    // where this one stopped.
                    if resuming {
                        let release = LotCommand::Release { reservation_id: id.to_string() };
                        self.lots.execute(lot_id, release, step_meta(request, "release", id)).await?;
                    }
                    continue;
                }
                let reserve =
                    LotCommand::Reserve { reservation_id: id.to_string(), quantity: remaining, up_to: true, today };
                let held = match self.lots.execute_with_state(lot_id, reserve, step_meta(request, "reserve", id)).await
                {
                    Ok((_, lot)) => lot.held_by(id.as_str()),
                    Err(e) if matches!(e.kind, ErrorKind::Conflict | ErrorKind::NotFound) => 0,
                    Err(e) => return Err(e),
                };
                if held > 0 {
                    let quantity = held.min(remaining);
                    granted.push(Allocation { line: n, lot_id: lot.clone(), quantity });
                    remaining -= quantity;
                }
            }
            tried = line.candidates.len();
            // Lots the caller chose are all it wants; FEFO lines look further.
            if remaining == 0 || round == EXTENSIONS || line.chosen {
                break;
            }
            let more = self.more_lots(&reservation.site_id, &line, remaining).await?;
            if more.is_empty() {
                break;
            }
            let extend = ReservationCommand::AddCandidates { line: n, lots: more };
            let step = format!("extend-{n}-{}", line.candidates.len());
            let (_, state) =
                self.reservations.execute_with_state(id.clone(), extend, step_meta(request, &step, id)).await?;
            line = state.lines[n as usize - 1].clone();
            if line.candidates.len() == tried {
                break;
            }
        }
        Ok(granted)
    }

    /// Lots of the line's product at the site not planned on yet, with units available now.
    async fn more_lots(&self, site: &str, line: &PlanLine, remaining: u32) -> Result<Vec<String>, ServiceError> {
        caught_up(&self.ctx, std::slice::from_ref(&self.view), super::SERVICE).await?;
        let (site, product, planned) = (site.to_owned(), line.product_id.clone(), line.candidates.clone());
        let room = stock::MAX_CANDIDATES.saturating_sub(planned.len());
        let found = with_view(&self.projections, LotsProjection::NAME, move |view| {
            fefo_candidates(view, &site, &product, remaining, &planned)
        })
        .await?;
        let Candidates { mut lots, .. } = found;
        lots.truncate(room);
        Ok(lots)
    }

    /// Gives up the reservations planned more than `timeout` ago and never settled (their
    /// request died with its process and was not retried): each fails, marked expired, and
    /// gives back whatever its lots held for it. A reservation settled meanwhile is left as it is.
    /// Failed reservations whose lots may still hold units for them (a release that failed, a
    /// process killed before it gave them back) are given back too. One reservation's failure
    /// does not stop the others; it is tried again next time.
    pub async fn expire_stale(
        &self,
        request: CommandRequest,
        timeout: chrono::Duration,
    ) -> Result<CommandReply, ServiceError> {
        caught_up(&self.ctx, std::slice::from_ref(&self.view), super::SERVICE).await?;
        let now = Utc::now();
        let (stale_since, failed_since) = (now - timeout, now - chrono::Duration::minutes(1));
        let (stale, unreleased) = with_view(&self.projections, LotsProjection::NAME, move |view| {
            Ok((listed_before(view, "planned", stale_since)?, listed_before(view, "unreleased", failed_since)?))
        })
        .await?;
        let mut replies = Vec::new();
        for id in stale {
            match self.expire(&request, &id).await {
                Ok(reply) => replies.push(reply),
                Err(e) => {
                    tracing::warn!(reservation = %id, error = %e, "expiring a reservation failed; will try again")
                }
            }
        }
        for id in unreleased {
            let given_back = async {
                let id = parse_id(&id, "reservation")?;
                let (state, _) = self.reservations.load(&id).await?;
                self.give_back(&request, &id, &state).await
            };
            if let Err(e) = given_back.await {
                tracing::warn!(reservation = %id, error = %e, "giving back a failed reservation's units failed; will try again");
            }
        }
        Ok(crate::common::combine("expired-reservations".into(), super::SERVICE, replies))
    }

    async fn expire(&self, request: &CommandRequest, id: &str) -> Result<CommandReply, ServiceError> {
        let id = parse_id(id, "reservation")?;
        let (reply, state) = self
            .reservations
            .execute_with_state(id.clone(), ReservationCommand::Expire, step_meta(request, "expire", &id))
            .await?;
        if state.status == Some(ReservationStatus::Failed) {
            self.give_back(request, &id, &state).await?;
            tracing::warn!(reservation = %id, "reservation never settled: expired, its holds released");
        }
        Ok(reply)
    }

    /// Releases what a failed reservation's lots hold for it, then records that they hold
    /// nothing more (until then, the expiry job keeps trying).
    async fn give_back(
        &self,
        request: &CommandRequest,
        id: &AggregateId,
        failed: &Reservation,
    ) -> Result<(), ServiceError> {
        if failed.holds_released {
            return Ok(());
        }
        self.release_everywhere(request, id, failed).await?;
        let done = ReservationCommand::MarkHoldsReleased;
        self.reservations.execute(id.clone(), done, step_meta(request, "released", id)).await?;
        Ok(())
    }

    /// Releases whatever a reservation holds on any lot it planned to use (idempotent).
    async fn release_everywhere(
        &self,
        request: &CommandRequest,
        id: &AggregateId,
        reservation: &Reservation,
    ) -> Result<(), ServiceError> {
        for lot in reservation.lots() {
            let release = LotCommand::Release { reservation_id: id.to_string() };
            self.lots.execute(parse_id(lot, "lot")?, release, step_meta(request, "release", id)).await?;
        }
        Ok(())
    }

    /// Applies `command` to every lot of the reservation, then records `done` on it.
    async fn on_every_lot(
        &self,
        request: &CommandRequest,
        id: &AggregateId,
        step: &str,
        allowed: &[ReservationStatus],
        command: impl Fn() -> LotCommand,
        done: ReservationCommand,
    ) -> Result<CommandReply, ServiceError> {
        let (reservation, _) = self.reservations.load(id).await?;
        match reservation.status {
            None => return Err(ServiceError::not_found("reservation_not_found", format!("no reservation {id}"))),
            Some(s) if !allowed.contains(&s) => {
                // Let the aggregate say why (or answer a repeat).
                return self.reservations.execute(id.clone(), done, step_meta(request, step, id)).await;
            }
            Some(_) => {}
        }
        let mut lots: Vec<&str> = reservation.allocations.iter().map(|a| a.lot_id.as_str()).collect();
        lots.dedup();
        for lot in lots {
            self.lots.execute(parse_id(lot, "lot")?, command(), step_meta(request, step, id)).await?;
        }
        self.reservations.execute(id.clone(), done, step_meta(request, step, id)).await
    }

    pub async fn release(&self, request: CommandRequest, id: AggregateId) -> Result<CommandReply, ServiceError> {
        use ReservationStatus::*;
        let rid = id.to_string();
        self.on_every_lot(
            &request,
            &id,
            "release",
            &[Confirmed, Picked],
            || LotCommand::Release { reservation_id: rid.clone() },
            ReservationCommand::Release,
        )
        .await
    }

    pub async fn pick(&self, request: CommandRequest, id: AggregateId) -> Result<CommandReply, ServiceError> {
        use ReservationStatus::*;
        let rid = id.to_string();
        self.on_every_lot(
            &request,
            &id,
            "pick",
            &[Confirmed],
            || LotCommand::Pick { reservation_id: rid.clone() },
            ReservationCommand::MarkPicked,
        )
        .await
    }

    pub async fn ship(&self, request: CommandRequest, body: ShipReservation) -> Result<CommandReply, ServiceError> {
        use ReservationStatus::*;
        let id = parse_id(&body.reservation_id, "reservation")?;
        let (reservation, _) = self.reservations.load(&id).await?;
        if matches!(reservation.purpose, Some(Purpose::Transfer { .. })) {
            return Err(ServiceError::validation("is_a_transfer", "a transfer is dispatched, not shipped"));
        }
        check_destination(&body.destination)?;
        let today = self.ctx.today();
        let (rid, destination) = (id.to_string(), body.destination.clone());
        let command = || LotCommand::Ship { reservation_id: rid.clone(), destination: destination.clone(), today };
        self.on_every_lot(
            &request,
            &id,
            "ship",
            &[Confirmed, Picked],
            command,
            ReservationCommand::MarkShipped { destination: body.destination },
        )
        .await
    }

    /// Takes back what a reservation shipped: ambient units within date go back on the shelf,
    /// chilled and frozen ones are written off (see `LotCommand::Return`).
    pub async fn return_shipment(
        &self,
        request: CommandRequest,
        id: AggregateId,
    ) -> Result<CommandReply, ServiceError> {
        let today = self.ctx.today();
        let rid = id.to_string();
        let command = || LotCommand::Return { reservation_id: rid.clone(), today };
        self.on_every_lot(
            &request,
            &id,
            "return",
            &[ReservationStatus::Shipped],
            command,
            ReservationCommand::MarkReturned,
        )
        .await
    }

    /// Records that what a reservation shipped went to another destination; every lot's
    /// shipment then names it, so a recall reaches whoever really has the food.
    pub async fn redirect(&self, request: CommandRequest, body: ShipReservation) -> Result<CommandReply, ServiceError> {
        let id = parse_id(&body.reservation_id, "reservation")?;
        check_destination(&body.destination)?;
        let (rid, destination) = (id.to_string(), body.destination.clone());
        let command = || LotCommand::Redirect { reservation_id: rid.clone(), destination: destination.clone() };
        // The step is named after the destination, so a second redirect is a new step.
        let step = format!("redirect-{}", body.destination.household.as_deref().unwrap_or(&body.destination.reference));
        self.on_every_lot(
            &request,
            &id,
            &step,
            &[ReservationStatus::Shipped],
            command,
            ReservationCommand::Redirect { destination: body.destination },
        )
        .await
    }
}

/// Refuses a destination no lot would take, before any step of a process is written.
fn check_destination(destination: &Destination) -> Result<(), ServiceError> {
    Ok(destination.check()?)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueRecall {
    /// Optional client-chosen id; derived from the idempotency key when absent.
    pub recall_id: Option<String>,
    /// The product, by id or by GTIN (one of the two).
    pub product_id: Option<String>,
    #[schema(value_type = Option<String>)]
    pub gtin: Option<values::Gtin>,
    /// The recalled lot numbers (as printed); or give a range of dates.
    #[serde(default)]
    pub lot_numbers: Vec<String>,
    pub date_from: Option<chrono::NaiveDate>,
    pub date_to: Option<chrono::NaiveDate>,
    pub reason: String,
}

/// Lots named by the caller, checked to be of the product and at the site.
fn chosen_lots(
    view: &projections::View,
    site: &str,
    product_id: &str,
    lots: Vec<String>,
) -> Result<Candidates, ServiceError> {
    if lots.is_empty() || lots.len() > 64 {
        return Err(ServiceError::validation("invalid_lots", "name 1 to 64 lots, or none for FEFO"));
    }
    if lots.iter().collect::<std::collections::BTreeSet<_>>().len() < lots.len() {
        return Err(ServiceError::validation("duplicate_lot", "a lot is named twice for one product"));
    }
    let mut available = 0u64;
    for lot in &lots {
        let row: Option<super::LotRow> = view.get_json("lot", lot.as_bytes()).map_err(storage)?;
        match row {
            Some(r) if r.product_id == product_id && r.site_id == site => available += u64::from(r.available),
            _ => {
                return Err(ServiceError::validation(
                    "invalid_lot",
                    format!("lot {lot} is not a lot of {product_id} at {site}"),
                ))
            }
        }
    }
    Ok(Candidates { lots, available })
}

/// The id of the lot a transfer's units become at the receiving site.
fn transferred_lot_id(transfer: &AggregateId, from_lot: &str) -> AggregateId {
    let readable = format!("{transfer}-{from_lot}");
    let id = if readable.len() <= 64 {
        readable
    } else {
        Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("foodaid/transfer/{transfer}/{from_lot}").as_bytes()).to_string()
    };
    AggregateId::try_from(id).expect("transfer and lot ids make valid lot ids")
}

impl Stock {
    /// Sends a transfer's units on their way: each lot counts them out, in transit.
    pub async fn dispatch(&self, request: CommandRequest, id: AggregateId) -> Result<CommandReply, ServiceError> {
        use ReservationStatus::*;
        let (reservation, _) = self.reservations.load(&id).await?;
        let Some(Purpose::Transfer { to_site }) = reservation.purpose.clone() else {
            return Err(ServiceError::validation("not_a_transfer", "only a transfer is dispatched"));
        };
        let today = self.ctx.today();
        let rid = id.to_string();
        let command = || LotCommand::DispatchTransfer { reservation_id: rid.clone(), to_site: to_site.clone(), today };
        self.on_every_lot(&request, &id, "dispatch", &[Confirmed, Picked], command, ReservationCommand::MarkDispatched)
            .await
    }

    /// Takes a dispatched transfer in at its site: one new lot per lot it came from, with the
    /// same product, dates and lot number, so that a recall finds it.
    pub async fn receive_transfer(
        &self,
        request: CommandRequest,
        id: AggregateId,
    ) -> Result<CommandReply, ServiceError> {
        let (reservation, _) = self.reservations.load(&id).await?;
        let Some(Purpose::Transfer { to_site }) = reservation.purpose.clone() else {
            return Err(ServiceError::validation("not_a_transfer", "only a transfer is received"));
        };
        if reservation.status != Some(ReservationStatus::Dispatched) {
            return Err(ServiceError::conflict("not_dispatched", format!("transfer {id} has not been dispatched")));
        }
        let mut quantities: std::collections::BTreeMap<&str, u32> = std::collections::BTreeMap::new();
        for a in &reservation.allocations {
            *quantities.entry(a.lot_id.as_str()).or_default() += a.quantity;
        }
        let (mut last, mut received) = (None, Vec::new());
        for (from_lot, quantity) in quantities {
            let (source, _) = self.lots.load(&parse_id(from_lot, "lot")?).await?;
            let from =
                source.receipt.ok_or_else(|| ServiceError::internal("receiving a transfer", "source lot unknown"))?;
            let receipt = Receipt {
                weight_g: from.weight_g * u64::from(quantity) / u64::from(from.quantity.max(1)),
                product: from.product,
                site_id: to_site.clone(),
                quantity,
                date: from.date,
                lot_number: from.lot_number,
                past_best_before: source.past_best_before,
                origin: Origin::Transfer {
                    transfer_id: id.to_string(),
                    from_lot: from_lot.to_owned(),
                    from_site: from.site_id,
                    donor_id: from.origin.donor_id().map(str::to_owned),
                },
            };
            let lot_id = transferred_lot_id(&id, from_lot);
            let step = step_meta(&request, "receive", &id);
            last = Some(self.lots.execute(lot_id.clone(), LotCommand::Receive(receipt.clone()), step.clone()).await?);
            received.push((lot_id, receipt, step));
        }
        self.hold_if_recalled(&received).await?;
        last.ok_or_else(|| ServiceError::conflict("empty_transfer", "this transfer carries nothing"))
    }

    /// Holds a lot just received if a recall covers it, and adds it to that recall's lots (its
    /// trace then follows it). The read model is waited for first: a recall recorded before the
    /// lot is seen here, and one recorded after finds the lot itself (see [`Stock::recall`]).
    pub async fn hold_if_recalled(&self, received: &[(AggregateId, Receipt, CommandMeta)]) -> Result<(), ServiceError> {
        if received.is_empty() {
            return Ok(());
        }
        caught_up(&self.ctx, std::slice::from_ref(&self.view), super::SERVICE).await?;
        for (lot_id, receipt, meta) in received {
            let (product, number, date) =
                (receipt.product.product_id.clone(), receipt.lot_number.clone(), receipt.date);
            let recalls = with_view(&self.projections, LotsProjection::NAME, move |view| {
                recalls_covering(view, &product, number.as_deref(), date)
            })
            .await?;
            for recall in recalls {
                let hold = LotCommand::Recall { recall_id: recall.recall_id.clone(), reason: recall.reason.clone() };
                // Held now, whenever the lot itself was received.
                let held = CommandMeta {
                    command_id: format!("recall/{}", recall.recall_id),
                    occurred_at: None,
                    ..meta.clone()
                };
                self.lots.execute(lot_id.clone(), hold, held).await?;
                let extend = stock::RecallCommand::Extend { lots: vec![lot_id.to_string()] };
                let added = CommandMeta { command_id: format!("extend/{lot_id}"), occurred_at: None, ..meta.clone() };
                self.recalls.execute(parse_id(&recall.recall_id, "recall")?, extend, added).await?;
                tracing::warn!(lot = %lot_id, recall = %recall.recall_id, "a lot under recall arrived: held");
            }
        }
        Ok(())
    }

    /// Records the recall, then holds every lot its criteria cover, at every site, and adds
    /// them to it. Recorded first: a lot received meanwhile either is found here or finds the
    /// recall itself ([`Stock::hold_if_recalled`]), whatever the order.
    pub async fn recall(&self, request: CommandRequest, body: IssueRecall) -> Result<CommandReply, ServiceError> {
        let id = new_id(body.recall_id, &request, "recall")?;
        let product_id = match (body.product_id, body.gtin) {
            (Some(p), None) => p,
            (None, Some(g)) => format!("gtin-{g}"),
            _ => return Err(ServiceError::validation("product_required", "give either product_id or gtin")),
        };
        let criteria = stock::RecallCriteria {
            product_id,
            lot_numbers: body.lot_numbers.iter().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect(),
            date_from: body.date_from,
            date_to: body.date_to,
        };
        let reason = body.reason.trim().to_owned();
        let issue = stock::RecallCommand::Issue { criteria: criteria.clone(), reason: reason.clone(), lots: vec![] };
        let mut replies = vec![self.recalls.execute(id.clone(), issue, meta(&request)).await?];
        caught_up(&self.ctx, std::slice::from_ref(&self.view), super::SERVICE).await?;
        let covers = criteria.clone();
        let lots: Vec<String> = with_view(&self.projections, LotsProjection::NAME, move |view| {
            Ok(super::lots::lots_of_product(view, &covers.product_id)?
                .into_iter()
                .filter(|l| covers.covers(&l.product_id, l.lot_number.as_deref(), l.date))
                .map(|l| l.lot_id)
                .collect())
        })
        .await?;
        for lot in &lots {
            let recall = LotCommand::Recall { recall_id: id.to_string(), reason: reason.clone() };
            replies.push(self.lots.execute(parse_id(lot, "lot")?, recall, step_meta(&request, "recall", &id)).await?);
        }
        let extend = stock::RecallCommand::Extend { lots };
        replies.push(self.recalls.execute(id.clone(), extend, step_meta(&request, "extend", &id)).await?);
        // The answer is the recall's; its sequence covers every hold.
        let mut reply = crate::common::combine(id.to_string(), super::SERVICE, replies);
        reply.version = self.recalls.load(&id).await?.1;
        Ok(reply)
    }
}
