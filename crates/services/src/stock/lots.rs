//! The stock read model: lots with their figures, the FEFO index reservations pick from,
//! reservations, and every shipment (what a recall trace follows).

use chrono::{DateTime, NaiveDate, Utc};
use projections::{ApplyError, Projection, RecordedEvent, Tx, View};
use runtime::ServiceError;
use serde::{Deserialize, Serialize};
use stock::{
    Allocation, Destination, Lot, LotEvent, LotStatus, Origin, Purpose, RecallEvent, ReservationEvent,
    ReservationStatus, Shortfall,
};
use utoipa::ToSchema;
use values::{DateKind, FoodGroup, StorageClass};

use super::SERVICE;
use crate::common::storage;
use crate::donations::{food_group_schema, storage_schema};

fn status_schema() -> utoipa::openapi::Object {
    crate::common::enum_schema(&["available", "held", "recalled", "expired", "depleted"])
}

/// A lot as the warehouse sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LotRow {
    pub lot_id: String,
    pub product_id: String,
    pub product_name: String,
    pub gtin: Option<String>,
    #[schema(schema_with = food_group_schema)]
    pub food_group: FoodGroup,
    #[schema(schema_with = storage_schema)]
    pub storage: StorageClass,
    /// `dlc`, `ddm` or `none`.
    #[schema(value_type = String)]
    pub date_kind: DateKind,
    pub date: Option<NaiveDate>,
    pub lot_number: Option<String>,
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub allergens: std::collections::BTreeSet<values::Allergen>,
    /// Meat, pork, halal, ready to eat: what the parcel composer checks diets against.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub traits: values::Traits,
    pub site_id: String,
    pub zone: Option<String>,
    pub donor_id: Option<String>,
    /// `{"kind": "donation", "donation_id", "line", "donor_id"}` or `{"kind": "transfer", ...}`.
    #[schema(value_type = Object)]
    pub origin: Origin,
    pub received_at: DateTime<Utc>,
    /// Units that came in (from a donor or a transfer).
    pub received: u32,
    pub weight_g: u64,
    pub on_hand: u32,
    pub reserved: u32,
    pub picked: u32,
    pub available: u32,
    pub shipped: u32,
    pub transferred_out: u32,
    pub written_off: i64,
    #[schema(schema_with = status_schema)]
    pub status: LotStatus,
    pub past_best_before: bool,
    pub hold_reason: Option<String>,
    /// Why it should be inspected (cold chain broken on a delivery...), each reason once.
    #[serde(default)]
    pub inspection: Vec<String>,
    pub recall_id: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl LotRow {
    /// Grams of `units` of this lot.
    pub fn grams(&self, units: u32) -> u64 {
        if self.received == 0 {
            0
        } else {
            self.weight_g * u64::from(units) / u64::from(self.received)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReservationLineRow {
    pub product_id: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AllocationRow {
    pub line: u32,
    pub lot_id: String,
    pub quantity: u32,
}

impl From<Allocation> for AllocationRow {
    fn from(a: Allocation) -> Self {
        AllocationRow { line: a.line, lot_id: a.lot_id, quantity: a.quantity }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ShortfallRow {
    pub line: u32,
    pub product_id: String,
    pub requested: u32,
    pub allocated: u32,
}

impl From<Shortfall> for ShortfallRow {
    fn from(s: Shortfall) -> Self {
        ShortfallRow { line: s.line, product_id: s.product_id, requested: s.requested, allocated: s.allocated }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReservationRow {
    pub reservation_id: String,
    pub site_id: String,
    #[schema(value_type = Object)]
    pub purpose: Purpose,
    /// `planned`, `confirmed`, `failed`, `released`, `picked`, `shipped`, `dispatched`.
    #[schema(value_type = String)]
    pub status: ReservationStatus,
    pub lines: Vec<ReservationLineRow>,
    pub allocations: Vec<AllocationRow>,
    pub shortfalls: Vec<ShortfallRow>,
    pub updated_at: DateTime<Utc>,
}

/// Units that left the warehouse: one row per lot and shipment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ShipmentRow {
    pub lot_id: String,
    pub reservation_id: String,
    pub quantity: u32,
    pub grams: u64,
    #[schema(value_type = Object)]
    pub destination: Destination,
    pub shipped_at: DateTime<Utc>,
    /// When the units came back (a parcel nobody collected).
    #[serde(default)]
    pub returned_at: Option<DateTime<Utc>>,
    /// The household it was first meant for, if it went to another.
    #[serde(default)]
    pub redirected_from: Option<String>,
}

/// Lots, the FEFO index, reservations and shipments, from the stock stream.
pub struct LotsProjection {
    /// Stock as it was is kept per day, here.
    pub calendar: values::Calendar,
}

impl LotsProjection {
    pub const NAME: &'static str = "lots";
}

/// Key of a lot in the FEFO index: within a site and product, use-by dates first (earliest
/// first), then best-before dates, then undated lots; older receipts first on a tie.
fn fefo_key(row: &LotRow) -> String {
    let (rank, date) = match (row.date_kind, row.date) {
        (DateKind::Dlc, Some(d)) => ('0', d.to_string()),
        (DateKind::Ddm, Some(d)) => ('1', d.to_string()),
        _ => ('2', String::new()),
    };
    format!(
        "{}\0{}\0{rank}{date}\0{}\0{}",
        row.site_id,
        row.product_id,
        row.received_at.format("%Y-%m-%dT%H:%M:%S%.6f"),
        row.lot_id
    )
}

pub(super) fn fefo_prefix(site_id: &str, product_id: &str) -> String {
    format!("{site_id}\0{product_id}\0")
}

impl Projection for LotsProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    /// Bump when what `apply` writes changes: the rows are then rebuilt on start. The time
    /// zone's digest is part of it: stock as it was is kept per local day.
    fn version(&self) -> u32 {
        const VERSION: u32 = 2;
        VERSION * 1000 + self.calendar.digest()
    }

    fn streams(&self) -> &'static [&'static str] {
        &[SERVICE]
    }

    fn apply(&self, tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError> {
        let id = event.envelope.aggregate_id.as_ref();
        let at = event.envelope.occurred_at;
        match event.aggregate_kind {
            "lot" => apply_lot(tx, id, at, self.calendar.day_of(at), event.decode::<LotEvent>()?),
            "reservation" => apply_reservation(tx, id, at, event.decode::<ReservationEvent>()?),
            "recall" => match event.decode::<RecallEvent>()? {
                RecallEvent::RecallIssued { criteria, reason, lots } => {
                    // Every recall of a product, for the lots of it that arrive later.
                    tx.put(
                        "recall_product",
                        format!("{}\0{id}", criteria.product_id).as_bytes(),
                        id.as_bytes().to_vec(),
                    );
                    let row = RecallRow {
                        recall_id: id.to_owned(),
                        product_id: criteria.product_id,
                        lot_numbers: criteria.lot_numbers,
                        date_from: criteria.date_from,
                        date_to: criteria.date_to,
                        reason,
                        lots,
                        issued_at: at,
                        issued_by: event.envelope.actor.to_string(),
                    };
                    tx.put_json("recall", id.as_bytes(), &row);
                    Ok(())
                }
                RecallEvent::RecallExtended { lots } => {
                    tx.update_json("recall", id.as_bytes(), |row: &mut RecallRow| row.lots.extend(lots))?;
                    Ok(())
                }
            },
            _ => Ok(()),
        }
    }
}

fn apply_lot(tx: &mut Tx, id: &str, at: DateTime<Utc>, day: NaiveDate, event: LotEvent) -> Result<(), ApplyError> {
    // The row carries the lot's figures; the aggregate's own fold computes them, so that the
    // read model cannot count differently from the decisions.
    let mut state: Lot = tx.get_json("state", id.as_bytes())?.unwrap_or_default();
    let before: Option<LotRow> = tx.get_json("lot", id.as_bytes())?;
    if let LotEvent::LotShipped { reservation_id, quantity, destination } = &event {
        let row = before.as_ref().ok_or_else(|| ApplyError(format!("shipment from unknown lot {id}")))?;
        let shipment = ShipmentRow {
            lot_id: id.to_owned(),
            reservation_id: reservation_id.clone(),
            quantity: *quantity,
            grams: row.grams(*quantity),
            destination: destination.clone(),
            shipped_at: at,
            returned_at: None,
            redirected_from: None,
        };
        tx.put_json("shipment", format!("{id}\0{reservation_id}").as_bytes(), &shipment);
    }
    if let LotEvent::LotReturned { reservation_id, .. } = &event {
        tx.update_json("shipment", format!("{id}\0{reservation_id}").as_bytes(), |s: &mut ShipmentRow| {
            s.returned_at = Some(at)
        })?;
    }
    if let LotEvent::LotRedirected { reservation_id, destination } = &event {
        tx.update_json("shipment", format!("{id}\0{reservation_id}").as_bytes(), |s: &mut ShipmentRow| {
            s.redirected_from = s.destination.household.take().or(s.redirected_from.take());
            s.destination = destination.clone();
        })?;
    }
    eventcore::Aggregate::apply(&mut state, &event);
    let receipt = state.receipt.as_ref().ok_or_else(|| ApplyError(format!("event of unknown lot {id}")))?;
    let row = LotRow {
        lot_id: id.to_owned(),
        product_id: receipt.product.product_id.clone(),
        product_name: receipt.product.name.clone(),
        gtin: receipt.product.gtin.as_ref().map(|g| g.as_str().to_owned()),
        food_group: receipt.product.food_group,
        storage: receipt.product.storage,
        date_kind: receipt.product.date_kind,
        date: receipt.date,
        lot_number: receipt.lot_number.clone(),
        allergens: receipt.product.allergens.clone(),
        traits: receipt.product.traits,
        site_id: receipt.site_id.clone(),
        zone: state.zone.as_ref().map(ToString::to_string),
        donor_id: receipt.origin.donor_id().map(str::to_owned),
        origin: receipt.origin.clone(),
        received_at: before.as_ref().map_or(at, |b| b.received_at),
        received: receipt.quantity,
        weight_g: receipt.weight_g,
        on_hand: state.on_hand,
        reserved: state.reserved.values().sum(),
        picked: state.picked.values().sum(),
        available: state.available(),
        shipped: state.shipped,
        transferred_out: state.transferred_out,
        written_off: state.written_off,
        status: state.status(),
        past_best_before: state.past_best_before,
        hold_reason: state.held.clone(),
        inspection: state.flags.clone(),
        recall_id: state.recalled.clone(),
        updated_at: at,
    };
    if let Some(before) = &before {
        tx.delete("fefo", fefo_key(before).as_bytes());
    }
    if row.on_hand > 0 && row.status != LotStatus::Expired {
        // The value carries what a plan needs (units available, then the lot id), so that
        // planning does not read whole rows.
        let mut value = row.available.to_be_bytes().to_vec();
        value.extend_from_slice(id.as_bytes());
        tx.put("fefo", fefo_key(&row).as_bytes(), value);
    }
    if before.is_none() {
        // A lot's product never changes: indexed once, when it comes in.
        tx.put("by_product", format!("{}\0{id}", row.product_id).as_bytes(), id.as_bytes().to_vec());
    }
    // Units on hand at the end of each day something happened: stock as it was on a past date.
    tx.put("daily", format!("{id}\0{day}").as_bytes(), row.on_hand.to_be_bytes().to_vec());
    tx.put_json("lot", id.as_bytes(), &row);
    tx.put_json("state", id.as_bytes(), &state);
    Ok(())
}

fn apply_reservation(tx: &mut Tx, id: &str, at: DateTime<Utc>, event: ReservationEvent) -> Result<(), ApplyError> {
    if let ReservationEvent::ReservationPlanned { site_id, purpose, lines, .. } = event {
        let row = ReservationRow {
            reservation_id: id.to_owned(),
            site_id,
            purpose,
            status: ReservationStatus::Planned,
            lines: lines
                .into_iter()
                .map(|l| ReservationLineRow { product_id: l.product_id, quantity: l.quantity })
                .collect(),
            allocations: Vec::new(),
            shortfalls: Vec::new(),
            updated_at: at,
        };
        if matches!(row.purpose, Purpose::Transfer { .. }) {
            // Transfers are few: listed from their own index.
            tx.put("transfer", id.as_bytes(), id.as_bytes().to_vec());
        }
        // Reservations planned and not settled yet, with when: those left so too long expire.
        tx.put_json("planned", id.as_bytes(), &at);
        tx.put_json("reservation", id.as_bytes(), &row);
        return Ok(());
    }
    match &event {
        ReservationEvent::ReservationConfirmed { .. } => tx.delete("planned", id.as_bytes()),
        ReservationEvent::ReservationFailed { .. } => {
            tx.delete("planned", id.as_bytes());
            // Failed, its lots may still hold units for it until the service gives them back.
            tx.put_json("unreleased", id.as_bytes(), &at);
        }
        ReservationEvent::ReservationHoldsReleased {} => tx.delete("unreleased", id.as_bytes()),
        _ => {}
    }
    tx.update_json("reservation", id.as_bytes(), |row: &mut ReservationRow| {
        row.updated_at = at;
        match event {
            ReservationEvent::ReservationPlanned { .. } => {}
            ReservationEvent::ReservationConfirmed { allocations, shortfalls } => {
                row.status = ReservationStatus::Confirmed;
                row.allocations = allocations.into_iter().map(AllocationRow::from).collect();
                row.shortfalls = shortfalls.into_iter().map(ShortfallRow::from).collect();
            }
            ReservationEvent::ReservationCandidatesAdded { .. } | ReservationEvent::ReservationHoldsReleased {} => {}
            ReservationEvent::ReservationFailed { shortfalls, .. } => {
                row.status = ReservationStatus::Failed;
                row.shortfalls = shortfalls.into_iter().map(ShortfallRow::from).collect();
            }
            ReservationEvent::ReservationReleased {} => row.status = ReservationStatus::Released,
            ReservationEvent::ReservationPicked {} => row.status = ReservationStatus::Picked,
            ReservationEvent::ReservationShipped { .. } => row.status = ReservationStatus::Shipped,
            ReservationEvent::ReservationDispatched {} => row.status = ReservationStatus::Dispatched,
            ReservationEvent::ReservationReturned {} => row.status = ReservationStatus::Returned,
            ReservationEvent::ReservationRedirected { .. } => {}
        }
    })?;
    Ok(())
}

/// The lots a reservation of `quantity` units of a product at a site should try, in FEFO
/// order: those the read model shows with units available, until they cover twice the
/// quantity (the read model may be a little behind the lots themselves), at least
/// `MIN_CANDIDATES` and at most `MAX_CANDIDATES` of them, so that a plan stays small.
pub(super) fn fefo_candidates(
    view: &View,
    site_id: &str,
    product_id: &str,
    quantity: u32,
    excluded: &[String],
) -> Result<Candidates, ServiceError> {
    const FEWEST_LOTS: usize = 4;
    const MOST_LOTS: usize = 32;
    let mut candidates = Vec::new();
    let (mut covered, mut available_here) = (0u64, 0u64);
    for item in view.scan("fefo", fefo_prefix(site_id, product_id).as_bytes()) {
        let (_, value) = item.map_err(storage)?;
        let Some((available, id)) = value.split_first_chunk::<4>() else {
            return Err(ServiceError::internal("planning a reservation", "bad FEFO entry"));
        };
        let available = u64::from(u32::from_be_bytes(*available));
        available_here += available;
        let id = String::from_utf8_lossy(id).into_owned();
        let enough =
            candidates.len() >= MOST_LOTS || (candidates.len() >= FEWEST_LOTS && covered >= 2 * u64::from(quantity));
        if available == 0 || enough || excluded.contains(&id) {
            continue;
        }
        covered += available;
        candidates.push(id);
    }
    Ok(Candidates { lots: candidates, available: available_here })
}

/// Lots to try for a line, and the units the read model shows available at the site, on
/// those lots and the others (a plan takes the first lots, and more when they fall short).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Candidates {
    pub lots: Vec<String>,
    pub available: u64,
}

/// Reservations of `table` (`planned`: not settled; `unreleased`: failed, their lots not yet
/// known to hold nothing for them) since before `before`.
pub(super) fn listed_before(view: &View, table: &str, before: DateTime<Utc>) -> Result<Vec<String>, ServiceError> {
    let mut stale = Vec::new();
    for item in view.scan(table, b"") {
        let (id, at) = item.map_err(storage)?;
        let at: DateTime<Utc> =
            serde_json::from_slice(&at).map_err(|e| ServiceError::internal("reading planned reservations", e))?;
        if at < before {
            stale.push(String::from_utf8_lossy(&id).into_owned());
        }
    }
    Ok(stale)
}

/// The recalls of a product whose criteria cover a lot numbered `lot_number` and dated `date`.
pub(super) fn recalls_covering(
    view: &View,
    product_id: &str,
    lot_number: Option<&str>,
    date: Option<NaiveDate>,
) -> Result<Vec<RecallRow>, ServiceError> {
    let mut found = Vec::new();
    for item in view.scan("recall_product", format!("{product_id}\0").as_bytes()) {
        let (_, id) = item.map_err(storage)?;
        if let Some(row) = view.get_json::<RecallRow>("recall", &id).map_err(storage)? {
            if row.criteria().covers(product_id, lot_number, date) {
                found.push(row);
            }
        }
    }
    Ok(found)
}

impl RecallRow {
    pub fn criteria(&self) -> stock::RecallCriteria {
        stock::RecallCriteria {
            product_id: self.product_id.clone(),
            lot_numbers: self.lot_numbers.clone(),
            date_from: self.date_from,
            date_to: self.date_to,
        }
    }
}

/// Every lot of a product (any site, any status).
pub(super) fn lots_of_product(view: &View, product_id: &str) -> Result<Vec<LotRow>, ServiceError> {
    let mut rows = Vec::new();
    for item in view.scan("by_product", format!("{product_id}\0").as_bytes()) {
        let (_, id) = item.map_err(storage)?;
        if let Some(row) = view.get_json::<LotRow>("lot", &id).map_err(storage)? {
            rows.push(row);
        }
    }
    Ok(rows)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecallRow {
    pub recall_id: String,
    pub product_id: String,
    pub lot_numbers: Vec<String>,
    pub date_from: Option<NaiveDate>,
    pub date_to: Option<NaiveDate>,
    pub reason: String,
    /// The lots held by the recall.
    pub lots: Vec<String>,
    pub issued_at: DateTime<Utc>,
    pub issued_by: String,
}

/// Where a recalled product went, from the events: what the coordinator acts on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecallTrace {
    pub recall: RecallRow,
    /// The recalled lots, at every site, with what is still there (held).
    pub lots: Vec<LotRow>,
    /// Every hand-over of recalled units: parcel, association, relay point, household.
    pub shipments: Vec<TracedShipment>,
    /// Units moved between sites (both ends are among `lots`).
    pub transfers: Vec<TracedTransfer>,
    /// The donors the recalled units came from.
    pub donors: Vec<String>,
    pub units_received: u64,
    pub units_held: u64,
    pub units_shipped: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TracedShipment {
    pub lot_id: String,
    pub site_id: String,
    pub lot_number: Option<String>,
    pub reservation_id: String,
    pub quantity: u32,
    pub grams: u64,
    pub kind: String,
    pub reference: String,
    pub association_id: Option<String>,
    pub relay_point_id: Option<String>,
    /// The household's pseudonymous id.
    pub household: Option<String>,
    pub shipped_at: DateTime<Utc>,
    /// Set when the units came back to the warehouse: nobody ate them.
    pub returned_at: Option<DateTime<Utc>>,
    /// The household first meant, when the parcel went to another (`household`).
    pub redirected_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TracedTransfer {
    pub transfer_id: String,
    pub from_lot: String,
    pub from_site: String,
    pub to_lot: String,
    pub to_site: String,
    pub quantity: u32,
}

pub(super) fn recall_trace(view: &View, recall_id: &str) -> Result<RecallTrace, ServiceError> {
    let recall: RecallRow = view
        .get_json("recall", recall_id.as_bytes())
        .map_err(storage)?
        .ok_or_else(|| ServiceError::not_found("recall_not_found", format!("no recall {recall_id}")))?;
    let mut lots = Vec::new();
    let mut shipments = Vec::new();
    let mut transfers = Vec::new();
    for id in &recall.lots {
        let Some(lot) = view.get_json::<LotRow>("lot", id.as_bytes()).map_err(storage)? else { continue };
        for item in view.scan("shipment", format!("{id}\0").as_bytes()) {
            let (_, value) = item.map_err(storage)?;
            let s: ShipmentRow =
                serde_json::from_slice(&value).map_err(|e| ServiceError::internal("reading a shipment", e))?;
            shipments.push(TracedShipment {
                lot_id: s.lot_id,
                site_id: lot.site_id.clone(),
                lot_number: lot.lot_number.clone(),
                reservation_id: s.reservation_id,
                quantity: s.quantity,
                grams: s.grams,
                kind: s.destination.kind,
                reference: s.destination.reference,
                association_id: s.destination.association_id,
                relay_point_id: s.destination.relay_point_id,
                household: s.destination.household,
                shipped_at: s.shipped_at,
                returned_at: s.returned_at,
                redirected_from: s.redirected_from,
            });
        }
        if let Origin::Transfer { transfer_id, from_lot, from_site, .. } = &lot.origin {
            transfers.push(TracedTransfer {
                transfer_id: transfer_id.clone(),
                from_lot: from_lot.clone(),
                from_site: from_site.clone(),
                to_lot: lot.lot_id.clone(),
                to_site: lot.site_id.clone(),
                quantity: lot.received,
            });
        }
        lots.push(lot);
    }
    shipments.sort_by(|a, b| a.shipped_at.cmp(&b.shipped_at).then(a.lot_id.cmp(&b.lot_id)));
    let mut donors: Vec<String> = lots.iter().filter_map(|l| l.donor_id.clone()).collect();
    donors.sort();
    donors.dedup();
    Ok(RecallTrace {
        units_received: lots
            .iter()
            .filter(|l| matches!(l.origin, Origin::Donation { .. }))
            .map(|l| u64::from(l.received))
            .sum(),
        units_held: lots.iter().map(|l| u64::from(l.on_hand)).sum(),
        units_shipped: shipments.iter().filter(|s| s.returned_at.is_none()).map(|s| u64::from(s.quantity)).sum(),
        recall,
        lots,
        shipments,
        transfers,
        donors,
    })
}

/// Units of a lot on hand at the end of `date` (0 before it came in).
pub(super) fn on_hand_at(view: &View, lot_id: &str, date: NaiveDate) -> Result<u32, ServiceError> {
    let prefix = format!("{lot_id}\0");
    let until = format!("{prefix}{date}");
    let mut last = 0;
    for item in view.scan("daily", prefix.as_bytes()) {
        let (key, value) = item.map_err(storage)?;
        if key.as_slice() > until.as_bytes() {
            break;
        }
        last = u32::from_be_bytes(
            value.as_slice().try_into().map_err(|_| ServiceError::internal("reading stock history", "bad row"))?,
        );
    }
    Ok(last)
}
