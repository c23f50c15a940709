use std::collections::BTreeMap;

use chrono::NaiveDate;
use eventcore::{Aggregate, DomainEvent, Rejection};
use serde::{Deserialize, Serialize};
use values::limits::{too_long, MAX_REFERENCE, MAX_TEXT, MAX_UNITS};
use values::{DateKind, ProductFacts, StorageClass};

use crate::ZoneCode;

/// Where a lot's units came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// An accepted line of a donation.
    Donation { donation_id: String, line: u32, donor_id: String },
    /// Units dispatched from a lot at another site.
    Transfer { transfer_id: String, from_lot: String, from_site: String, donor_id: Option<String> },
}

impl Origin {
    pub fn donor_id(&self) -> Option<&str> {
        match self {
            Origin::Donation { donor_id, .. } => Some(donor_id),
            Origin::Transfer { donor_id, .. } => donor_id.as_deref(),
        }
    }
}

/// A lot coming into stock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub product: ProductFacts,
    pub site_id: String,
    pub quantity: u32,
    pub weight_g: u64,
    pub date: Option<NaiveDate>,
    pub lot_number: Option<String>,
    /// A best-before product already past its date when it came in.
    pub past_best_before: bool,
    pub origin: Origin,
}

/// Where shipped units went: what a recall trace follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Destination {
    /// `parcel`, `association` (bulk to an association), or another label.
    pub kind: String,
    /// The parcel or delivery reference.
    pub reference: String,
    pub association_id: Option<String>,
    pub relay_point_id: Option<String>,
    /// The household's pseudonymous id, for parcels.
    pub household: Option<String>,
}

impl Destination {
    /// What any destination must be: a short kind, a reference, and ids that can be ids.
    pub fn check(&self) -> Result<(), Rejection> {
        let invalid = |what: &str| Err(Rejection::validation("invalid_destination", what.to_owned()));
        let (kind, reference) = (self.kind.trim(), self.reference.trim());
        if kind.is_empty() || too_long(kind, MAX_REFERENCE) {
            return invalid("a destination's kind is 1 to 100 characters");
        }
        if reference.is_empty() || too_long(reference, MAX_TEXT) {
            return invalid("a destination's reference is 1 to 500 characters");
        }
        let ids = [&self.association_id, &self.relay_point_id, &self.household];
        if ids.iter().any(|id| id.as_ref().is_some_and(|id| id.parse::<eventcore::AggregateId>().is_err())) {
            return invalid("an association, relay point or household id is 1 to 64 of A-Z a-z 0-9 - _");
        }
        Ok(())
    }
}

/// Why stock was adjusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustReason {
    Count,
    Damage,
    Spoilage,
    Theft,
    Correction,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LotCommand {
    Receive(Receipt),
    /// Sets aside `quantity` units for a reservation (parcel, transfer). With `up_to`, as many as
    /// are available up to `quantity`. Reserving again for the same reservation changes nothing.
    Reserve {
        reservation_id: String,
        quantity: u32,
        up_to: bool,
        today: NaiveDate,
    },
    /// Gives back whatever the reservation holds here, picked or not; nothing if it holds none.
    Release {
        reservation_id: String,
    },
    Pick {
        reservation_id: String,
    },
    /// Hands over the reservation's units (picking them first if need be).
    Ship {
        reservation_id: String,
        destination: Destination,
        today: NaiveDate,
    },
    /// Takes back what the reservation shipped (a parcel nobody collected). Ambient units that
    /// are still within their use-by date go back on the shelf; chilled and frozen ones are
    /// written off, since nobody can vouch for their cold chain.
    Return {
        reservation_id: String,
        today: NaiveDate,
    },
    /// What the reservation shipped went to someone else (a parcel redistributed at the relay
    /// point): the recall trace must follow it.
    Redirect {
        reservation_id: String,
        destination: Destination,
    },
    /// Sends the reservation's units to another site: they are in transit until received there.
    DispatchTransfer {
        reservation_id: String,
        to_site: String,
        today: NaiveDate,
    },
    Adjust {
        delta: i64,
        reason: AdjustReason,
        note: String,
    },
    /// A physical count: the variance becomes an adjustment.
    Count {
        counted: u32,
        note: String,
    },
    /// Puts the lot away in a zone, whose storage class must match the product's.
    Move {
        zone: ZoneCode,
        zone_storage: StorageClass,
    },
    Hold {
        reason: String,
    },
    LiftHold,
    /// Marks the lot for inspection (cold chain broken on a delivery, say); it stays
    /// available: the flag asks someone to look, a hold would stop it.
    Flag {
        reason: String,
    },
    Recall {
        recall_id: String,
        reason: String,
    },
    /// The daily expiry run: writes off a lot past its use-by date, flags one past best-before.
    Expire {
        today: NaiveDate,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum LotEvent {
    LotReceived(Receipt),
    LotReserved {
        reservation_id: String,
        quantity: u32,
    },
    LotReleased {
        reservation_id: String,
        quantity: u32,
    },
    LotPicked {
        reservation_id: String,
        quantity: u32,
    },
    LotShipped {
        reservation_id: String,
        quantity: u32,
        destination: Destination,
    },
    LotTransferredOut {
        reservation_id: String,
        to_site: String,
        quantity: u32,
    },
    /// Shipped units came back: `restocked` ones are on hand again, the others written off.
    LotReturned {
        reservation_id: String,
        quantity: u32,
        restocked: bool,
    },
    LotRedirected {
        reservation_id: String,
        destination: Destination,
    },
    LotAdjusted {
        delta: i64,
        reason: AdjustReason,
        note: String,
    },
    LotCounted {
        counted: u32,
        variance: i64,
    },
    LotMoved {
        zone: ZoneCode,
    },
    LotHeld {
        reason: String,
    },
    LotHoldLifted {},
    LotFlagged {
        reason: String,
    },
    LotRecalled {
        recall_id: String,
        reason: String,
    },
    /// Written off: past its use-by date.
    LotExpired {
        quantity: u32,
    },
    LotPastBestBefore {},
}

impl DomainEvent for LotEvent {}

/// Where a lot stands, for lists and filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LotStatus {
    Available,
    Held,
    Recalled,
    Expired,
    Depleted,
}

/// The units of one product from one origin at one site, with one date and lot number.
/// Serialisable so that read models can keep it between events and fold exactly as decisions do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lot {
    pub receipt: Option<Receipt>,
    pub zone: Option<ZoneCode>,
    pub on_hand: u32,
    /// Reserved and not yet picked, per reservation.
    pub reserved: BTreeMap<String, u32>,
    /// Picked (prepared) and not yet shipped, per reservation.
    pub picked: BTreeMap<String, u32>,
    pub shipped: u32,
    /// Units shipped per reservation, until they come back.
    #[serde(default)]
    pub shipments: BTreeMap<String, u32>,
    /// Reservations whose shipment came back.
    #[serde(default)]
    pub returned: std::collections::BTreeSet<String>,
    pub transferred_out: u32,
    /// Net units written off: expiry and adjustments (a count that finds more makes it smaller).
    pub written_off: i64,
    pub held: Option<String>,
    /// Why it should be inspected, each reason once.
    #[serde(default)]
    pub flags: Vec<String>,
    pub recalled: Option<String>,
    pub expired: bool,
    pub past_best_before: bool,
}

/// Largest single adjustment, either way.
const MAX_ADJUST: u64 = 1_000_000;

impl Lot {
    pub fn committed(&self) -> u32 {
        self.reserved.values().sum::<u32>() + self.picked.values().sum::<u32>()
    }

    /// Units that can still be reserved.
    pub fn available(&self) -> u32 {
        if self.blocked() {
            0
        } else {
            self.on_hand.saturating_sub(self.committed())
        }
    }

    fn blocked(&self) -> bool {
        self.held.is_some() || self.recalled.is_some() || self.expired
    }

    pub fn status(&self) -> LotStatus {
        if self.recalled.is_some() {
            LotStatus::Recalled
        } else if self.expired {
            LotStatus::Expired
        } else if self.held.is_some() {
            LotStatus::Held
        } else if self.on_hand == 0 {
            LotStatus::Depleted
        } else {
            LotStatus::Available
        }
    }

    /// Units that came in: received from a donor or a transfer.
    pub fn received(&self) -> u32 {
        self.receipt.as_ref().map_or(0, |r| r.quantity)
    }

    /// received = on hand + shipped + written off + transferred out. Holds after every event.
    pub fn balanced(&self) -> bool {
        i64::from(self.received())
            == i64::from(self.on_hand) + i64::from(self.shipped) + self.written_off + i64::from(self.transferred_out)
    }

    /// Units held by a reservation here, picked or not.
    pub fn held_by(&self, reservation_id: &str) -> u32 {
        self.reserved.get(reservation_id).copied().unwrap_or(0) + self.picked.get(reservation_id).copied().unwrap_or(0)
    }

    fn use_by_passed(&self, today: NaiveDate) -> bool {
        self.receipt.as_ref().is_some_and(|r| r.product.date_kind == DateKind::Dlc && r.date.is_some_and(|d| d < today))
    }

    fn require_outgoing(&self, today: NaiveDate) -> Result<(), Rejection> {
        if let Some(recall) = &self.recalled {
            return Err(Rejection::conflict(
                "lot_recalled",
                format!("this lot is recalled ({recall}): it must not leave"),
            ));
        }
        if self.expired || self.use_by_passed(today) {
            return Err(Rejection::conflict("lot_expired", "this lot is past its use-by date"));
        }
        if let Some(reason) = &self.held {
            return Err(Rejection::conflict("lot_held", format!("this lot is on hold: {reason}")));
        }
        Ok(())
    }
}

fn check_reservation_id(id: &str) -> Result<(), Rejection> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(Rejection::validation("invalid_reservation_id", "a reservation id is 1 to 64 of A-Z a-z 0-9 - _"));
    }
    Ok(())
}

fn check_text(field: &str, text: &str) -> Result<(), Rejection> {
    if too_long(text, MAX_TEXT) {
        return Err(Rejection::validation(
            format!("invalid_{field}"),
            format!("{field} is at most {MAX_TEXT} characters"),
        ));
    }
    Ok(())
}

impl Aggregate for Lot {
    const KIND: &'static str = "lot";
    type Command = LotCommand;
    type Event = LotEvent;

    fn decide(&self, command: &LotCommand) -> Result<Vec<LotEvent>, Rejection> {
        let Some(receipt) = &self.receipt else {
            return match command {
                LotCommand::Receive(r) => {
                    if r.quantity == 0 {
                        return Err(Rejection::validation("invalid_quantity", "a lot holds at least one unit"));
                    }
                    if r.weight_g == 0 {
                        return Err(Rejection::validation("invalid_weight", "a lot weighs something"));
                    }
                    Ok(vec![LotEvent::LotReceived(r.clone())])
                }
                _ => Err(Rejection::not_found("lot_not_found", "no such lot")),
            };
        };
        match command {
            LotCommand::Receive(r) if r == receipt => Ok(vec![]),
            LotCommand::Receive(_) => {
                Err(Rejection::conflict("lot_exists", "this lot was received with other details"))
            }
            LotCommand::Reserve { reservation_id, quantity, up_to, today } => {
                check_reservation_id(reservation_id)?;
                if *quantity == 0 {
                    return Err(Rejection::validation("invalid_quantity", "reserve at least one unit"));
                }
                if self.held_by(reservation_id) > 0 {
                    return Ok(vec![]);
                }
                self.require_outgoing(*today)?;
                let available = self.available();
                if available == 0 || (!up_to && available < *quantity) {
                    return Err(Rejection::conflict(
                        "insufficient_stock",
                        format!("{quantity} units asked, {available} available"),
                    ));
                }
                Ok(vec![LotEvent::LotReserved {
                    reservation_id: reservation_id.clone(),
                    quantity: available.min(*quantity),
                }])
            }
            LotCommand::Release { reservation_id } => match self.held_by(reservation_id) {
                0 => Ok(vec![]),
                quantity => Ok(vec![LotEvent::LotReleased { reservation_id: reservation_id.clone(), quantity }]),
            },
            LotCommand::Pick { reservation_id } => {
                match (self.reserved.get(reservation_id), self.picked.get(reservation_id)) {
                    (Some(&quantity), _) => {
                        Ok(vec![LotEvent::LotPicked { reservation_id: reservation_id.clone(), quantity }])
                    }
                    (None, Some(_)) => Ok(vec![]),
                    (None, None) => Err(Rejection::not_found("reservation_not_found", "nothing reserved here for it")),
                }
            }
            LotCommand::Ship { reservation_id, destination, today } => {
                let mut events = self.pick_all(reservation_id)?;
                self.require_outgoing(*today)?;
                destination.check()?;
                events.push(LotEvent::LotShipped {
                    reservation_id: reservation_id.clone(),
                    quantity: self.held_by(reservation_id),
                    destination: destination.clone(),
                });
                Ok(events)
            }
            LotCommand::Return { reservation_id, today } => {
                let Some(&quantity) = self.shipments.get(reservation_id) else {
                    return match self.returned.contains(reservation_id) {
                        true => Ok(vec![]),
                        false => Err(Rejection::not_found("shipment_not_found", "nothing shipped from here for it")),
                    };
                };
                let restocked = receipt.product.storage == StorageClass::Ambient && !self.use_by_passed(*today);
                Ok(vec![LotEvent::LotReturned { reservation_id: reservation_id.clone(), quantity, restocked }])
            }
            LotCommand::Redirect { reservation_id, destination } => {
                destination.check()?;
                if !self.shipments.contains_key(reservation_id) {
                    return Err(Rejection::not_found("shipment_not_found", "nothing shipped from here for it"));
                }
                Ok(vec![LotEvent::LotRedirected {
                    reservation_id: reservation_id.clone(),
                    destination: destination.clone(),
                }])
            }
            LotCommand::DispatchTransfer { reservation_id, to_site, today } => {
                if *to_site == receipt.site_id {
                    return Err(Rejection::validation("same_site", "a transfer goes to another site"));
                }
                let mut events = self.pick_all(reservation_id)?;
                self.require_outgoing(*today)?;
                events.push(LotEvent::LotTransferredOut {
                    reservation_id: reservation_id.clone(),
                    to_site: to_site.clone(),
                    quantity: self.held_by(reservation_id),
                });
                Ok(events)
            }
            LotCommand::Adjust { delta, reason, note } => {
                check_text("note", note)?;
                // unsigned_abs: i64::MIN has no absolute value as an i64.
                if *delta == 0
                    || delta.unsigned_abs() > MAX_ADJUST
                    || i64::from(self.on_hand) + delta > i64::from(MAX_UNITS)
                {
                    return Err(Rejection::validation(
                        "invalid_delta",
                        "an adjustment is a non-zero number of units, and a lot holds at most 1,000,000",
                    ));
                }
                self.check_on_hand(i64::from(self.on_hand) + delta)?;
                Ok(vec![LotEvent::LotAdjusted { delta: *delta, reason: *reason, note: note.trim().to_owned() }])
            }
            LotCommand::Count { counted, note } => {
                check_text("note", note)?;
                if *counted > MAX_UNITS {
                    return Err(Rejection::validation("invalid_quantity", "a lot holds at most 1,000,000 units"));
                }
                self.check_on_hand(i64::from(*counted))?;
                let variance = i64::from(*counted) - i64::from(self.on_hand);
                let mut events = vec![LotEvent::LotCounted { counted: *counted, variance }];
                if variance != 0 {
                    events.push(LotEvent::LotAdjusted {
                        delta: variance,
                        reason: AdjustReason::Count,
                        note: note.trim().to_owned(),
                    });
                }
                Ok(events)
            }
            LotCommand::Move { zone, zone_storage } => {
                if *zone_storage != receipt.product.storage {
                    return Err(Rejection::validation(
                        "wrong_storage_zone",
                        format!("{} goods cannot go in a {zone_storage} zone", receipt.product.storage),
                    ));
                }
                if self.zone.as_ref() == Some(zone) {
                    return Ok(vec![]);
                }
                Ok(vec![LotEvent::LotMoved { zone: zone.clone() }])
            }
            LotCommand::Hold { reason } => {
                check_text("reason", reason)?;
                if self.held.is_some() {
                    return Ok(vec![]);
                }
                Ok(vec![LotEvent::LotHeld { reason: reason.trim().to_owned() }])
            }
            LotCommand::LiftHold => match self.held {
                Some(_) => Ok(vec![LotEvent::LotHoldLifted {}]),
                None => Err(Rejection::conflict("not_held", "this lot is not on hold")),
            },
            LotCommand::Flag { reason } => {
                check_text("reason", reason)?;
                let reason = reason.trim();
                if reason.is_empty() {
                    return Err(Rejection::validation("reason_required", "say why the lot should be inspected"));
                }
                if self.flags.iter().any(|f| f == reason) {
                    return Ok(vec![]);
                }
                Ok(vec![LotEvent::LotFlagged { reason: reason.to_owned() }])
            }
            LotCommand::Recall { recall_id, reason } => {
                check_text("reason", reason)?;
                if self.recalled.is_some() {
                    return Ok(vec![]);
                }
                Ok(vec![LotEvent::LotRecalled { recall_id: recall_id.clone(), reason: reason.trim().to_owned() }])
            }
            LotCommand::Expire { today } => {
                let mut events = Vec::new();
                if self.use_by_passed(*today) && !self.expired {
                    for (reservation_id, quantity) in self.reserved.iter().chain(&self.picked) {
                        events.push(LotEvent::LotReleased {
                            reservation_id: reservation_id.clone(),
                            quantity: *quantity,
                        });
                    }
                    events.push(LotEvent::LotExpired { quantity: self.on_hand });
                } else if receipt.product.date_kind == DateKind::Ddm
                    && receipt.date.is_some_and(|d| d < *today)
                    && !self.past_best_before
                {
                    events.push(LotEvent::LotPastBestBefore {});
                }
                Ok(events)
            }
        }
    }

    fn apply(&mut self, event: &LotEvent) {
        match event {
            LotEvent::LotReceived(r) => {
                self.on_hand = r.quantity;
                self.past_best_before = r.past_best_before;
                self.receipt = Some(r.clone());
            }
            LotEvent::LotReserved { reservation_id, quantity } => {
                *self.reserved.entry(reservation_id.clone()).or_default() += quantity;
            }
            LotEvent::LotReleased { reservation_id, .. } => {
                self.reserved.remove(reservation_id);
                self.picked.remove(reservation_id);
            }
            LotEvent::LotPicked { reservation_id, quantity } => {
                self.reserved.remove(reservation_id);
                *self.picked.entry(reservation_id.clone()).or_default() += quantity;
            }
            // Saturating: a history written by a faulty build still folds, and the audit
            // reports the imbalance instead of the fold panicking.
            LotEvent::LotShipped { reservation_id, quantity, .. } => {
                self.picked.remove(reservation_id);
                self.on_hand = self.on_hand.saturating_sub(*quantity);
                self.shipped += quantity;
                *self.shipments.entry(reservation_id.clone()).or_default() += quantity;
            }
            LotEvent::LotReturned { reservation_id, quantity, restocked } => {
                self.shipments.remove(reservation_id);
                self.returned.insert(reservation_id.clone());
                self.shipped = self.shipped.saturating_sub(*quantity);
                if *restocked {
                    self.on_hand += quantity;
                } else {
                    self.written_off += i64::from(*quantity);
                }
            }
            LotEvent::LotRedirected { .. } => {}
            LotEvent::LotTransferredOut { reservation_id, quantity, .. } => {
                self.picked.remove(reservation_id);
                self.on_hand = self.on_hand.saturating_sub(*quantity);
                self.transferred_out += quantity;
            }
            LotEvent::LotAdjusted { delta, .. } => {
                self.on_hand = (i64::from(self.on_hand) + delta).clamp(0, i64::from(u32::MAX)) as u32;
                self.written_off -= delta;
            }
            LotEvent::LotCounted { .. } => {}
            LotEvent::LotMoved { zone } => self.zone = Some(zone.clone()),
            LotEvent::LotHeld { reason } => self.held = Some(reason.clone()),
            LotEvent::LotHoldLifted {} => self.held = None,
            LotEvent::LotFlagged { reason } => self.flags.push(reason.clone()),
            LotEvent::LotRecalled { recall_id, .. } => self.recalled = Some(recall_id.clone()),
            LotEvent::LotExpired { quantity } => {
                self.expired = true;
                self.on_hand = self.on_hand.saturating_sub(*quantity);
                self.written_off += i64::from(*quantity);
            }
            LotEvent::LotPastBestBefore {} => self.past_best_before = true,
        }
    }
}

impl Lot {
    /// The events that pick what the reservation still has reserved; refuses if it holds nothing.
    fn pick_all(&self, reservation_id: &str) -> Result<Vec<LotEvent>, Rejection> {
        match (self.reserved.get(reservation_id), self.picked.contains_key(reservation_id)) {
            (None, false) => Err(Rejection::not_found("reservation_not_found", "nothing reserved here for it")),
            (None, true) => Ok(vec![]),
            (Some(&quantity), _) => {
                Ok(vec![LotEvent::LotPicked { reservation_id: reservation_id.to_owned(), quantity }])
            }
        }
    }

    fn check_on_hand(&self, next: i64) -> Result<(), Rejection> {
        let committed = i64::from(self.committed());
        if next < committed {
            return Err(Rejection::conflict(
                "below_reserved",
                format!("{committed} units are reserved here: release reservations before writing them off"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use eventcore::testing::given;
    use proptest::prelude::*;

    use super::*;
    use values::{FoodGroup, Traits};

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    pub(crate) fn receipt(quantity: u32, date_kind: DateKind, date: Option<NaiveDate>) -> Receipt {
        Receipt {
            product: ProductFacts {
                product_id: "gtin-03033490004743".into(),
                name: "Yaourt nature x4".into(),
                gtin: None,
                food_group: FoodGroup::Dairy,
                storage: StorageClass::Chilled,
                date_kind,
                allergens: Default::default(),
                traits: Traits::default(),
            },
            site_id: "gerland".into(),
            quantity,
            weight_g: u64::from(quantity) * 500,
            date,
            lot_number: Some("L-0042".into()),
            past_best_before: false,
            origin: Origin::Donation { donation_id: "don-1".into(), line: 1, donor_id: "carrefour".into() },
        }
    }

    fn received(quantity: u32) -> LotEvent {
        LotEvent::LotReceived(receipt(quantity, DateKind::Dlc, Some(day(30))))
    }

    fn reserve(id: &str, quantity: u32, up_to: bool) -> LotCommand {
        LotCommand::Reserve { reservation_id: id.into(), quantity, up_to, today: day(23) }
    }

    fn reserved(id: &str, quantity: u32) -> LotEvent {
        LotEvent::LotReserved { reservation_id: id.into(), quantity }
    }

    fn parcel(reference: &str) -> Destination {
        Destination {
            kind: "parcel".into(),
            reference: reference.into(),
            association_id: Some("asso-restos".into()),
            relay_point_id: Some("rp-vaulx".into()),
            household: Some("hh-7f3a".into()),
        }
    }

    #[test]
    fn a_lot_is_received_once() {
        given::<Lot>([]).when(LotCommand::Receive(receipt(10, DateKind::Dlc, Some(day(30))))).then([received(10)]);
        given::<Lot>([received(10)]).when(LotCommand::Receive(receipt(10, DateKind::Dlc, Some(day(30))))).then([]);
        given::<Lot>([received(10)])
            .when(LotCommand::Receive(receipt(12, DateKind::Dlc, Some(day(30)))))
            .then_rejected("lot_exists");
        given::<Lot>([]).when(LotCommand::Receive(receipt(0, DateKind::Dlc, None))).then_rejected("invalid_quantity");
        given::<Lot>([]).when(reserve("p1", 1, false)).then_rejected("lot_not_found");
    }

    #[test]
    fn reservations_never_exceed_what_is_available() {
        let state =
            given::<Lot>([received(10), reserved("p1", 6)]).when(reserve("p2", 4, false)).then([reserved("p2", 4)]);
        assert_eq!(state.available(), 0);
        given::<Lot>([received(10), reserved("p1", 6)])
            .when(reserve("p2", 5, false))
            .then_rejected("insufficient_stock");
        // Up to: whatever is left.
        given::<Lot>([received(10), reserved("p1", 6)]).when(reserve("p2", 5, true)).then([reserved("p2", 4)]);
        given::<Lot>([received(10), reserved("p1", 10)])
            .when(reserve("p2", 1, true))
            .then_rejected("insufficient_stock");
        // The same reservation again changes nothing.
        given::<Lot>([received(10), reserved("p1", 6)]).when(reserve("p1", 6, false)).then([]);
        given::<Lot>([received(10)]).when(reserve("p 1", 1, false)).then_rejected("invalid_reservation_id");
        given::<Lot>([received(10)]).when(reserve("p1", 0, false)).then_rejected("invalid_quantity");
    }

    #[test]
    fn a_reservation_is_picked_then_shipped_or_released() {
        let history = [received(10), reserved("p1", 3)];
        given::<Lot>(history.clone())
            .when(LotCommand::Pick { reservation_id: "p1".into() })
            .then([LotEvent::LotPicked { reservation_id: "p1".into(), quantity: 3 }]);
        let state = given::<Lot>(history.clone())
            .when(LotCommand::Ship { reservation_id: "p1".into(), destination: parcel("parcel-1"), today: day(23) })
            .then([
                LotEvent::LotPicked { reservation_id: "p1".into(), quantity: 3 },
                LotEvent::LotShipped { reservation_id: "p1".into(), quantity: 3, destination: parcel("parcel-1") },
            ]);
        assert_eq!((state.on_hand, state.shipped, state.available()), (7, 3, 7));
        assert!(state.balanced());
        given::<Lot>(history.clone())
            .when(LotCommand::Release { reservation_id: "p1".into() })
            .then([LotEvent::LotReleased { reservation_id: "p1".into(), quantity: 3 }]);
        given::<Lot>(history.clone()).when(LotCommand::Release { reservation_id: "p9".into() }).then([]);
        given::<Lot>(history)
            .when(LotCommand::Ship { reservation_id: "p9".into(), destination: parcel("x"), today: day(23) })
            .then_rejected("reservation_not_found");
    }

    #[test]
    fn transfers_leave_the_site_in_transit() {
        let state = given::<Lot>([received(10), reserved("t1", 4)])
            .when(LotCommand::DispatchTransfer {
                reservation_id: "t1".into(),
                to_site: "venissieux".into(),
                today: day(23),
            })
            .then([
                LotEvent::LotPicked { reservation_id: "t1".into(), quantity: 4 },
                LotEvent::LotTransferredOut { reservation_id: "t1".into(), to_site: "venissieux".into(), quantity: 4 },
            ]);
        assert_eq!((state.on_hand, state.transferred_out), (6, 4));
        assert!(state.balanced());
        given::<Lot>([received(10), reserved("t1", 4)])
            .when(LotCommand::DispatchTransfer {
                reservation_id: "t1".into(),
                to_site: "gerland".into(),
                today: day(23),
            })
            .then_rejected("same_site");
    }

    #[test]
    fn adjustments_and_counts_keep_reserved_units() {
        let history = [received(10), reserved("p1", 4)];
        let state = given::<Lot>(history.clone())
            .when(LotCommand::Adjust { delta: -2, reason: AdjustReason::Damage, note: "carton écrasé".into() })
            .then([LotEvent::LotAdjusted { delta: -2, reason: AdjustReason::Damage, note: "carton écrasé".into() }]);
        assert_eq!((state.on_hand, state.written_off, state.available()), (8, 2, 4));
        given::<Lot>(history.clone())
            .when(LotCommand::Adjust { delta: -7, reason: AdjustReason::Theft, note: String::new() })
            .then_rejected("below_reserved");
        given::<Lot>(history.clone())
            .when(LotCommand::Adjust { delta: 0, reason: AdjustReason::Correction, note: String::new() })
            .then_rejected("invalid_delta");
        // At the arithmetic's edges: i64::MIN has no absolute value (it once panicked), and
        // neither extreme nor a count of u32::MAX units may wrap the lot's figures.
        for delta in [i64::MIN, i64::MAX, 1_000_001, -1_000_001] {
            given::<Lot>(history.clone())
                .when(LotCommand::Adjust { delta, reason: AdjustReason::Correction, note: String::new() })
                .then_rejected("invalid_delta");
        }
        given::<Lot>(history.clone())
            .when(LotCommand::Count { counted: u32::MAX, note: String::new() })
            .then_rejected("invalid_quantity");
        let state =
            given::<Lot>(history.clone()).when(LotCommand::Count { counted: 11, note: "inventaire".into() }).then([
                LotEvent::LotCounted { counted: 11, variance: 1 },
                LotEvent::LotAdjusted { delta: 1, reason: AdjustReason::Count, note: "inventaire".into() },
            ]);
        assert_eq!((state.on_hand, state.written_off), (11, -1));
        assert!(state.balanced());
        given::<Lot>(history.clone())
            .when(LotCommand::Count { counted: 10, note: String::new() })
            .then([LotEvent::LotCounted { counted: 10, variance: 0 }]);
        given::<Lot>(history)
            .when(LotCommand::Count { counted: 3, note: String::new() })
            .then_rejected("below_reserved");
    }

    #[test]
    fn a_flag_asks_for_inspection_once_per_reason_and_keeps_the_lot_available() {
        let flag = |reason: &str| LotCommand::Flag { reason: reason.into() };
        let flagged = LotEvent::LotFlagged { reason: "cold chain: 45 min".into() };
        let state = given::<Lot>([received(10)]).when(flag(" cold chain: 45 min ")).then([flagged.clone()]);
        assert_eq!((state.available(), state.flags.as_slice()), (10, ["cold chain: 45 min".to_owned()].as_slice()));
        given::<Lot>([received(10), flagged]).when(flag("cold chain: 45 min")).then([]);
        given::<Lot>([received(10)]).when(flag(" ")).then_rejected("reason_required");
    }

    #[test]
    fn the_cold_chain_decides_where_a_lot_may_go() {
        let cold = ZoneCode::try_from("FROID-1".to_owned()).unwrap();
        let shelf = ZoneCode::try_from("A1".to_owned()).unwrap();
        given::<Lot>([received(10)])
            .when(LotCommand::Move { zone: cold.clone(), zone_storage: StorageClass::Chilled })
            .then([LotEvent::LotMoved { zone: cold }]);
        given::<Lot>([received(10)])
            .when(LotCommand::Move { zone: shelf, zone_storage: StorageClass::Ambient })
            .then_rejected("wrong_storage_zone");
    }

    #[test]
    fn held_and_recalled_lots_take_no_reservation_and_ship_nothing() {
        let held = LotEvent::LotHeld { reason: "contrôle qualité".into() };
        given::<Lot>([received(10), held.clone()]).when(reserve("p1", 1, false)).then_rejected("lot_held");
        let state = given::<Lot>([received(10), held]).when(LotCommand::LiftHold).then([LotEvent::LotHoldLifted {}]);
        assert_eq!(state.available(), 10);
        let recalled = LotEvent::LotRecalled { recall_id: "rc-1".into(), reason: "Listeria".into() };
        given::<Lot>([received(10), recalled.clone()]).when(reserve("p1", 1, false)).then_rejected("lot_recalled");
        given::<Lot>([received(10), reserved("p1", 2), recalled.clone()])
            .when(LotCommand::Ship { reservation_id: "p1".into(), destination: parcel("x"), today: day(23) })
            .then_rejected("lot_recalled");
        given::<Lot>([received(10), recalled])
            .when(LotCommand::Recall { recall_id: "rc-2".into(), reason: "again".into() })
            .then([]);
    }

    #[test]
    fn the_expiry_run_writes_off_use_by_lots_and_flags_best_before_ones() {
        let history = [
            received(10),
            reserved("p1", 2),
            LotEvent::LotPicked { reservation_id: "p1".into(), quantity: 2 },
            reserved("p2", 3),
        ];
        given::<Lot>(history.clone()).when(LotCommand::Expire { today: day(30) }).then([]);
        let state = given::<Lot>(history.clone())
            .when(LotCommand::Expire { today: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap() })
            .then([
                LotEvent::LotReleased { reservation_id: "p2".into(), quantity: 3 },
                LotEvent::LotReleased { reservation_id: "p1".into(), quantity: 2 },
                LotEvent::LotExpired { quantity: 10 },
            ]);
        assert_eq!((state.status(), state.on_hand, state.written_off), (LotStatus::Expired, 0, 10));
        assert!(state.balanced());
        // Past its use-by date, a lot takes no reservation even before the run.
        given::<Lot>([received(10)])
            .when(LotCommand::Reserve {
                reservation_id: "p".into(),
                quantity: 1,
                up_to: false,
                today: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
            })
            .then_rejected("lot_expired");
        let ddm = LotEvent::LotReceived(receipt(10, DateKind::Ddm, Some(day(20))));
        let state = given::<Lot>([ddm.clone()])
            .when(LotCommand::Expire { today: day(23) })
            .then([LotEvent::LotPastBestBefore {}]);
        assert_eq!(state.available(), 10, "best-before lots stay available");
        given::<Lot>([ddm, LotEvent::LotPastBestBefore {}]).when(LotCommand::Expire { today: day(24) }).then([]);
    }

    #[test]
    fn a_parcel_nobody_collected_comes_back_or_goes_to_someone_else() {
        let ship = LotCommand::Ship { reservation_id: "p1".into(), destination: parcel("p1"), today: day(23) };
        let shipped = given::<Lot>([received(10), reserved("p1", 2)]).when(ship).then([
            LotEvent::LotPicked { reservation_id: "p1".into(), quantity: 2 },
            LotEvent::LotShipped { reservation_id: "p1".into(), quantity: 2, destination: parcel("p1") },
        ]);
        let history = [
            received(10),
            reserved("p1", 2),
            LotEvent::LotPicked { reservation_id: "p1".into(), quantity: 2 },
            LotEvent::LotShipped { reservation_id: "p1".into(), quantity: 2, destination: parcel("p1") },
        ];
        assert_eq!(shipped.shipments["p1"], 2);
        // Chilled yoghurts that left the warehouse do not go back on the shelf.
        let back = LotCommand::Return { reservation_id: "p1".into(), today: day(24) };
        let state = given::<Lot>(history.clone()).when(back.clone()).then([LotEvent::LotReturned {
            reservation_id: "p1".into(),
            quantity: 2,
            restocked: false,
        }]);
        assert_eq!((state.on_hand, state.shipped, state.written_off), (8, 0, 2));
        assert!(state.balanced());
        let mut returned = history.to_vec();
        returned.push(LotEvent::LotReturned { reservation_id: "p1".into(), quantity: 2, restocked: false });
        given::<Lot>(returned).when(back.clone()).then([]);
        given::<Lot>([received(10)]).when(back).then_rejected("shipment_not_found");
        // Pasta does.
        let mut pasta = receipt(10, DateKind::Ddm, Some(day(30)));
        pasta.product.storage = StorageClass::Ambient;
        let mut history = history.to_vec();
        history[0] = LotEvent::LotReceived(pasta);
        let state = given::<Lot>(history.clone())
            .when(LotCommand::Return { reservation_id: "p1".into(), today: day(24) })
            .then([LotEvent::LotReturned { reservation_id: "p1".into(), quantity: 2, restocked: true }]);
        assert_eq!((state.on_hand, state.available(), state.shipped, state.written_off), (10, 10, 0, 0));
        // Given at the relay point to another household: the recall trace follows.
        let mut other = parcel("p1");
        other.household = Some("hh-9b2c".into());
        given::<Lot>(history.clone())
            .when(LotCommand::Redirect { reservation_id: "p1".into(), destination: other.clone() })
            .then([LotEvent::LotRedirected { reservation_id: "p1".into(), destination: other.clone() }]);
        given::<Lot>([received(10)])
            .when(LotCommand::Redirect { reservation_id: "p1".into(), destination: other.clone() })
            .then_rejected("shipment_not_found");
        // A destination naming ids that cannot be ids (NATS wildcards, a path), or a label of
        // 10,000 characters, is refused.
        for odd in [
            Destination { household: Some("a.b".into()), ..other.clone() },
            Destination { association_id: Some("*".into()), ..other.clone() },
            Destination { kind: "x".repeat(10_000), ..other.clone() },
            Destination { reference: " ".into(), ..other },
        ] {
            given::<Lot>(history.clone())
                .when(LotCommand::Redirect { reservation_id: "p1".into(), destination: odd })
                .then_rejected("invalid_destination");
        }
    }

    fn command() -> impl Strategy<Value = LotCommand> {
        let id = prop::sample::select(vec!["p1", "p2", "p3", "t1"]).prop_map(String::from);
        prop_oneof![
            (id.clone(), 1..8u32, any::<bool>()).prop_map(|(r, q, up_to)| reserve(&r, q, up_to)),
            id.clone().prop_map(|r| LotCommand::Release { reservation_id: r }),
            id.clone().prop_map(|r| LotCommand::Pick { reservation_id: r }),
            id.clone().prop_map(|r| LotCommand::Ship { reservation_id: r, destination: parcel("x"), today: day(23) }),
            id.clone().prop_map(|r| LotCommand::Return { reservation_id: r, today: day(23) }),
            id.prop_map(|r| LotCommand::DispatchTransfer { reservation_id: r, to_site: "b".into(), today: day(23) }),
            (-5..5i64).prop_map(|delta| LotCommand::Adjust {
                delta,
                reason: AdjustReason::Damage,
                note: String::new()
            }),
            (0..25u32).prop_map(|counted| LotCommand::Count { counted, note: String::new() }),
            Just(LotCommand::Hold { reason: "check".into() }),
            Just(LotCommand::LiftHold),
            (0..15i64).prop_map(|k| LotCommand::Expire { today: day(20) + chrono::Duration::days(k) }),
        ]
    }

    proptest! {
        /// Whatever happens to a lot, in any order: received = on hand + shipped + written off +
        /// transferred out, nothing reserved exceeds what is on hand, nothing goes negative.
        #[test]
        fn random_commands_keep_the_mass_balance(commands in prop::collection::vec(command(), 1..60)) {
            let mut lot = Lot::replay(&[received(20)]);
            for command in &commands {
                if let Ok(events) = lot.decide(command) {
                    for event in &events {
                        lot.apply(event);
                    }
                }
                prop_assert!(lot.balanced(), "{lot:?}");
                prop_assert!(lot.committed() <= lot.on_hand, "{lot:?}");
            }
        }
    }
}
