//! The stock audit: every lot's mass balance and every reservation's holds, recomputed from the
//! stock stream's events alone (what `foodaid stock audit` runs).

use std::collections::{BTreeMap, HashMap};

use eventcore::{decode_event_raw, Aggregate, Commit};
use serde::Serialize;
use stock::{Lot, LotEvent, Origin, Reservation, ReservationEvent, ReservationStatus};

/// What the audit found.
#[derive(Debug, Default, Serialize)]
pub struct AuditReport {
    pub commits: u64,
    pub lots: usize,
    pub reservations: usize,
    /// Reservations planned and never settled (a request still running, or abandoned).
    pub open_reservations: usize,
    pub received: u64,
    pub on_hand: u64,
    pub shipped: u64,
    pub written_off: i64,
    pub transferred_out: u64,
    /// Units dispatched by a transfer and not yet received at the other site.
    pub in_transit: u64,
    pub problems: Vec<String>,
}

impl AuditReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Folds the stock stream's commits with the domain's own `apply`, then checks.
#[derive(Default)]
pub struct Auditor {
    commits: u64,
    lots: BTreeMap<String, Lot>,
    reservations: BTreeMap<String, Reservation>,
    problems: Vec<String>,
}

impl Auditor {
    pub fn add(&mut self, seq: u64, commit: &Commit) {
        self.commits += 1;
        for e in &commit.events {
            match commit.aggregate_kind.as_str() {
                "lot" => match decode_event_raw::<LotEvent>(&e.event_type, e.schema_version, &e.data) {
                    Ok(event) => self.lots.entry(commit.aggregate_id.clone()).or_default().apply(&event),
                    Err(err) => self.problems.push(format!("#{seq}: undecodable lot event: {err}")),
                },
                "reservation" => match decode_event_raw::<ReservationEvent>(&e.event_type, e.schema_version, &e.data) {
                    Ok(event) => self.reservations.entry(commit.aggregate_id.clone()).or_default().apply(&event),
                    Err(err) => self.problems.push(format!("#{seq}: undecodable reservation event: {err}")),
                },
                _ => {}
            }
        }
    }

    pub fn finish(self) -> AuditReport {
        let mut report = AuditReport {
            commits: self.commits,
            lots: self.lots.len(),
            reservations: self.reservations.len(),
            problems: self.problems,
            ..Default::default()
        };
        let mut transfers_in: HashMap<&str, u64> = HashMap::new();
        for (id, lot) in &self.lots {
            let Some(receipt) = &lot.receipt else {
                report.problems.push(format!("lot {id}: events before its receipt"));
                continue;
            };
            if !lot.balanced() {
                report.problems.push(format!(
                    "lot {id}: received {} ≠ on hand {} + shipped {} + written off {} + transferred out {}",
                    lot.received(),
                    lot.on_hand,
                    lot.shipped,
                    lot.written_off,
                    lot.transferred_out
                ));
            }
            if lot.committed() > lot.on_hand {
                report.problems.push(format!("lot {id}: {} units held for {} on hand", lot.committed(), lot.on_hand));
            }
            match &receipt.origin {
                Origin::Transfer { transfer_id, .. } => {
                    *transfers_in.entry(transfer_id).or_default() += u64::from(receipt.quantity)
                }
                Origin::Donation { .. } => report.received += u64::from(receipt.quantity),
            }
            report.on_hand += u64::from(lot.on_hand);
            report.shipped += u64::from(lot.shipped);
            report.written_off += lot.written_off;
            report.transferred_out += u64::from(lot.transferred_out);
            for reservation_id in lot.reserved.keys().chain(lot.picked.keys()) {
                let holds = lot.held_by(reservation_id);
                match self.reservations.get(reservation_id).and_then(|r| r.status) {
                    Some(ReservationStatus::Confirmed | ReservationStatus::Picked | ReservationStatus::Planned) => {}
                    Some(status) => report.problems.push(format!(
                        "lot {id}: holds {holds} units for reservation {reservation_id}, which is {status:?}"
                    )),
                    None => report
                        .problems
                        .push(format!("lot {id}: holds {holds} units for {reservation_id}, which is no reservation")),
                }
            }
        }
        for (id, r) in &self.reservations {
            match r.status {
                Some(ReservationStatus::Planned) => report.open_reservations += 1,
                Some(ReservationStatus::Confirmed | ReservationStatus::Picked) => {
                    let mut expected: BTreeMap<&str, u32> = BTreeMap::new();
                    for a in &r.allocations {
                        *expected.entry(a.lot_id.as_str()).or_default() += a.quantity;
                    }
                    for (lot_id, quantity) in expected {
                        let held = self.lots.get(lot_id).map_or(0, |l| l.held_by(id));
                        if held != quantity {
                            report.problems.push(format!(
                                "reservation {id}: lot {lot_id} holds {held} units, the reservation counts {quantity}"
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        let dispatched: u64 = report.transferred_out;
        let arrived: u64 = transfers_in.values().sum();
        if arrived > dispatched {
            report.problems.push(format!("{arrived} units received by transfer, only {dispatched} dispatched"));
        }
        report.in_transit = dispatched.saturating_sub(arrived);
        report
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, Utc};
    use eventcore::{encode_event, CommandMeta};
    use stock::Receipt;
    use values::{DateKind, FoodGroup, ProductFacts, StorageClass};

    use super::*;

    fn commit(kind: &str, id: &str, version: u64, events: Vec<eventcore::EncodedEvent>) -> Commit {
        Commit::new(&CommandMeta::new(format!("c-{id}-{version}"), "test"), kind, id, version, events, Utc::now())
    }

    fn receipt(quantity: u32) -> Receipt {
        Receipt {
            product: ProductFacts {
                product_id: "pasta".into(),
                name: "Pâtes".into(),
                gtin: None,
                food_group: FoodGroup::Starches,
                storage: StorageClass::Ambient,
                date_kind: DateKind::Ddm,
                allergens: Default::default(),
                traits: Default::default(),
            },
            site_id: "gerland".into(),
            quantity,
            weight_g: 500 * u64::from(quantity),
            date: NaiveDate::from_ymd_opt(2030, 1, 1),
            lot_number: None,
            past_best_before: false,
            origin: Origin::Donation { donation_id: "d".into(), line: 1, donor_id: "x".into() },
        }
    }

    #[test]
    fn a_consistent_history_passes_and_a_broken_one_is_reported() {
        let mut audit = Auditor::default();
        audit.add(1, &commit("lot", "a", 0, vec![encode_event(&LotEvent::LotReceived(receipt(10)))]));
        audit.add(
            2,
            &commit(
                "lot",
                "a",
                1,
                vec![encode_event(&LotEvent::LotReserved { reservation_id: "r".into(), quantity: 4 })],
            ),
        );
        let report = audit.finish();
        assert_eq!(report.problems, vec!["lot a: holds 4 units for r, which is no reservation".to_owned()]);
        assert_eq!((report.lots, report.received, report.on_hand), (1, 10, 10));

        // A history written by a faulty build: units shipped that were never picked.
        let mut audit = Auditor::default();
        audit.add(1, &commit("lot", "a", 0, vec![encode_event(&LotEvent::LotReceived(receipt(10)))]));
        let shipped = LotEvent::LotShipped {
            reservation_id: "r".into(),
            quantity: 12,
            destination: stock::Destination {
                kind: "parcel".into(),
                reference: "p".into(),
                association_id: None,
                relay_point_id: None,
                household: None,
            },
        };
        audit.add(2, &commit("lot", "a", 1, vec![encode_event(&shipped)]));
        audit.add(3, &commit("lot", "b", 0, vec![encode_event(&LotEvent::LotReceived(receipt(3)))]));
        let damaged = LotEvent::LotAdjusted { delta: -1, reason: stock::AdjustReason::Damage, note: String::new() };
        audit.add(4, &commit("lot", "b", 1, vec![encode_event(&damaged)]));
        let report = audit.finish();
        assert_eq!(
            report.problems,
            vec!["lot a: received 10 ≠ on hand 0 + shipped 12 + written off 0 + transferred out 0".to_owned()]
        );
        assert_eq!((report.lots, report.received, report.shipped, report.written_off), (2, 13, 12, 1));
    }
}
