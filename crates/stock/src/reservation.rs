use std::collections::BTreeSet;

use eventcore::{Aggregate, DomainEvent, Rejection};
use serde::{Deserialize, Serialize};

use crate::Destination;

/// What units are set aside for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Purpose {
    /// A household's parcel (composed by the distribution service).
    Parcel { association_id: Option<String> },
    /// Goods moving to another site.
    Transfer { to_site: String },
    /// Anything else (a bulk delivery to an association, an event).
    Other { label: String },
}

/// One product asked for, with the lots to take it from in FEFO order (fixed when planned, so
/// that a retried reservation visits the same lots in the same order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanLine {
    pub product_id: String,
    pub quantity: u32,
    pub candidates: Vec<String>,
    /// The caller named the lots (the parcel composer's choice): no others are tried.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub chosen: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// 1-based line of the plan.
    pub line: u32,
    pub lot_id: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortfall {
    pub line: u32,
    pub product_id: String,
    pub requested: u32,
    pub allocated: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReservationCommand {
    Plan {
        site_id: String,
        purpose: Purpose,
        lines: Vec<PlanLine>,
        partial: bool,
    },
    /// Adds lots to a planned line, after those it had: its lots gave less than asked (other
    /// reservations took their units meanwhile) and the site has more of the product.
    AddCandidates {
        line: u32,
        lots: Vec<String>,
    },
    /// Gives up a reservation whose request never came back to settle it (a process killed
    /// between its plan and its settlement): it fails, and the service releases what it held.
    Expire,
    /// Records that a failed reservation's lots hold nothing for it any more (the service
    /// released them): until then, the platform keeps trying.
    MarkHoldsReleased,
    /// Records what the lots granted: confirmed, or failed if a line fell short and the
    /// reservation does not accept partial quantities (its shortfalls then say how much the lots
    /// could grant, and the service gives it all back).
    Settle {
        allocations: Vec<Allocation>,
    },
    Release,
    MarkPicked,
    MarkShipped {
        destination: Destination,
    },
    MarkDispatched,
    /// What was shipped came back (see `LotCommand::Return`).
    MarkReturned,
    /// What was shipped went to another destination.
    Redirect {
        destination: Destination,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ReservationEvent {
    ReservationPlanned {
        site_id: String,
        purpose: Purpose,
        lines: Vec<PlanLine>,
        partial: bool,
    },
    ReservationCandidatesAdded {
        line: u32,
        lots: Vec<String>,
    },
    ReservationConfirmed {
        allocations: Vec<Allocation>,
        shortfalls: Vec<Shortfall>,
    },
    ReservationFailed {
        shortfalls: Vec<Shortfall>,
        /// Given up after `reservation_timeout_minutes` without a settlement.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        expired: bool,
    },
    ReservationReleased {},
    /// A failed reservation's lots gave back what they held for it.
    ReservationHoldsReleased {},
    ReservationPicked {},
    ReservationShipped {
        destination: Destination,
    },
    ReservationDispatched {},
    ReservationReturned {},
    ReservationRedirected {
        destination: Destination,
    },
}

impl DomainEvent for ReservationEvent {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    Planned,
    Confirmed,
    Failed,
    Released,
    Picked,
    Shipped,
    Dispatched,
    Returned,
}

/// A set-aside of stock across lots for one purpose: what the warehouse picks, ships or
/// releases as one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reservation {
    pub status: Option<ReservationStatus>,
    /// Failed because nobody settled it in time.
    pub expired: bool,
    /// Failed, and its lots hold nothing for it any more.
    pub holds_released: bool,
    pub site_id: String,
    pub purpose: Option<Purpose>,
    pub lines: Vec<PlanLine>,
    pub partial: bool,
    pub allocations: Vec<Allocation>,
    pub shortfalls: Vec<Shortfall>,
}

/// Most lines in one reservation: a parcel has a dozen at most.
const MAX_LINES: usize = 100;

/// Most lots one line may be planned on, extensions included.
pub const MAX_CANDIDATES: usize = 256;

impl Reservation {
    /// Lots that may hold units of this reservation.
    pub fn lots(&self) -> BTreeSet<&str> {
        self.lines.iter().flat_map(|l| l.candidates.iter().map(String::as_str)).collect()
    }

    fn require(&self, allowed: &[ReservationStatus], doing: &str) -> Result<ReservationStatus, Rejection> {
        match self.status {
            None => Err(Rejection::not_found("reservation_not_found", "no such reservation")),
            Some(s) if allowed.contains(&s) => Ok(s),
            Some(s) => {
                Err(Rejection::conflict("reservation_state", format!("cannot {doing} a reservation that is {s:?}")))
            }
        }
    }
}

impl Aggregate for Reservation {
    const KIND: &'static str = "reservation";
    type Command = ReservationCommand;
    type Event = ReservationEvent;

    fn decide(&self, command: &ReservationCommand) -> Result<Vec<ReservationEvent>, Rejection> {
        use ReservationStatus::*;
        match command {
            ReservationCommand::Plan { site_id, purpose, lines, partial } => {
                if self.status.is_some() {
                    return Err(Rejection::conflict("reservation_exists", "this reservation id is already used"));
                }
                if lines.is_empty() || lines.len() > MAX_LINES {
                    return Err(Rejection::validation(
                        "invalid_lines",
                        format!("a reservation has 1 to {MAX_LINES} lines"),
                    ));
                }
                let mut seen = BTreeSet::new();
                for (i, line) in lines.iter().enumerate() {
                    if line.quantity == 0 || line.quantity > values::limits::MAX_UNITS {
                        return Err(Rejection::validation(
                            "invalid_quantity",
                            format!("line {}: quantity is 1 to 1,000,000 units", i + 1),
                        ));
                    }
                    if !seen.insert(&line.product_id) {
                        return Err(Rejection::validation(
                            "duplicate_product",
                            format!("line {}: product {} is already asked for", i + 1, line.product_id),
                        ));
                    }
                }
                Ok(vec![ReservationEvent::ReservationPlanned {
                    site_id: site_id.clone(),
                    purpose: purpose.clone(),
                    lines: lines.clone(),
                    partial: *partial,
                }])
            }
            ReservationCommand::AddCandidates { line, lots } => {
                self.require(&[Planned], "extend")?;
                let planned = self.lines.get((*line as usize).wrapping_sub(1)).ok_or_else(|| {
                    Rejection::validation("invalid_line", format!("the reservation has no line {line}"))
                })?;
                if planned.chosen {
                    return Err(Rejection::validation(
                        "lots_chosen",
                        format!("line {line} takes the lots chosen for it only"),
                    ));
                }
                let new: Vec<String> = lots.iter().filter(|l| !planned.candidates.contains(l)).cloned().collect();
                if new.is_empty() {
                    return Ok(vec![]);
                }
                if planned.candidates.len() + new.len() > MAX_CANDIDATES {
                    return Err(Rejection::validation(
                        "too_many_lots",
                        format!("a line is planned on {MAX_CANDIDATES} lots at most"),
                    ));
                }
                Ok(vec![ReservationEvent::ReservationCandidatesAdded { line: *line, lots: new }])
            }
            ReservationCommand::MarkHoldsReleased => {
                self.require(&[Failed], "mark released")?;
                Ok(if self.holds_released { vec![] } else { vec![ReservationEvent::ReservationHoldsReleased {}] })
            }
            ReservationCommand::Expire => match self.status {
                None => Err(Rejection::not_found("reservation_not_found", "no such reservation")),
                Some(Planned) => {
                    let shortfalls = self
                        .lines
                        .iter()
                        .enumerate()
                        .map(|(i, line)| Shortfall {
                            line: i as u32 + 1,
                            product_id: line.product_id.clone(),
                            requested: line.quantity,
                            allocated: 0,
                        })
                        .collect();
                    Ok(vec![ReservationEvent::ReservationFailed { shortfalls, expired: true }])
                }
                // Settled meanwhile: nothing to give up.
                _ => Ok(vec![]),
            },
            ReservationCommand::Settle { allocations } => {
                match self.require(&[Planned, Confirmed, Failed], "settle")? {
                    Planned => {}
                    _ => return Ok(vec![]),
                }
                let shortfalls: Vec<Shortfall> = self
                    .lines
                    .iter()
                    .enumerate()
                    .filter_map(|(i, line)| {
                        let n = i as u32 + 1;
                        let allocated = allocations.iter().filter(|a| a.line == n).map(|a| a.quantity).sum::<u32>();
                        (allocated < line.quantity).then(|| Shortfall {
                            line: n,
                            product_id: line.product_id.clone(),
                            requested: line.quantity,
                            allocated,
                        })
                    })
                    .collect();
                for a in allocations {
                    let line = self.lines.get((a.line as usize).wrapping_sub(1));
                    if line.is_none_or(|l| !l.candidates.contains(&a.lot_id)) || a.quantity == 0 {
                        return Err(Rejection::validation(
                            "invalid_allocation",
                            format!("{a:?} is not part of the plan"),
                        ));
                    }
                }
                if self.lines.iter().enumerate().any(|(i, line)| {
                    allocations.iter().filter(|a| a.line == i as u32 + 1).map(|a| a.quantity).sum::<u32>()
                        > line.quantity
                }) {
                    return Err(Rejection::validation("invalid_allocation", "more allocated than asked for"));
                }
                if !shortfalls.is_empty() && (!self.partial || allocations.is_empty()) {
                    return Ok(vec![ReservationEvent::ReservationFailed { shortfalls, expired: false }]);
                }
                Ok(vec![ReservationEvent::ReservationConfirmed { allocations: allocations.clone(), shortfalls }])
            }
            ReservationCommand::Release => match self.require(&[Confirmed, Picked, Released, Failed], "release")? {
                Released | Failed => Ok(vec![]),
                _ => Ok(vec![ReservationEvent::ReservationReleased {}]),
            },
            ReservationCommand::MarkPicked => match self.require(&[Confirmed, Picked], "pick")? {
                Picked => Ok(vec![]),
                _ => Ok(vec![ReservationEvent::ReservationPicked {}]),
            },
            ReservationCommand::MarkShipped { destination } => {
                if matches!(self.purpose, Some(Purpose::Transfer { .. })) {
                    return Err(Rejection::validation("is_a_transfer", "a transfer is dispatched, not shipped"));
                }
                match self.require(&[Confirmed, Picked, Shipped], "ship")? {
                    Shipped => Ok(vec![]),
                    _ => Ok(vec![ReservationEvent::ReservationShipped { destination: destination.clone() }]),
                }
            }
            ReservationCommand::MarkReturned => match self.require(&[Shipped, Returned], "return")? {
                Returned => Ok(vec![]),
                _ => Ok(vec![ReservationEvent::ReservationReturned {}]),
            },
            ReservationCommand::Redirect { destination } => {
                self.require(&[Shipped], "redirect")?;
                Ok(vec![ReservationEvent::ReservationRedirected { destination: destination.clone() }])
            }
            ReservationCommand::MarkDispatched => {
                if !matches!(self.purpose, Some(Purpose::Transfer { .. })) {
                    return Err(Rejection::validation("not_a_transfer", "only a transfer is dispatched"));
                }
                match self.require(&[Confirmed, Picked, Dispatched], "dispatch")? {
                    Dispatched => Ok(vec![]),
                    _ => Ok(vec![ReservationEvent::ReservationDispatched {}]),
                }
            }
        }
    }

    fn apply(&mut self, event: &ReservationEvent) {
        match event {
            ReservationEvent::ReservationPlanned { site_id, purpose, lines, partial } => {
                self.status = Some(ReservationStatus::Planned);
                self.site_id = site_id.clone();
                self.purpose = Some(purpose.clone());
                self.lines = lines.clone();
                self.partial = *partial;
            }
            ReservationEvent::ReservationConfirmed { allocations, shortfalls } => {
                self.status = Some(ReservationStatus::Confirmed);
                self.allocations = allocations.clone();
                self.shortfalls = shortfalls.clone();
            }
            ReservationEvent::ReservationCandidatesAdded { line, lots } => {
                if let Some(planned) = self.lines.get_mut((*line as usize).wrapping_sub(1)) {
                    planned.candidates.extend(lots.iter().cloned());
                }
            }
            ReservationEvent::ReservationFailed { shortfalls, expired } => {
                self.status = Some(ReservationStatus::Failed);
                self.shortfalls = shortfalls.clone();
                self.expired = *expired;
            }
            ReservationEvent::ReservationHoldsReleased {} => self.holds_released = true,
            ReservationEvent::ReservationReleased {} => self.status = Some(ReservationStatus::Released),
            ReservationEvent::ReservationPicked {} => self.status = Some(ReservationStatus::Picked),
            ReservationEvent::ReservationShipped { .. } => self.status = Some(ReservationStatus::Shipped),
            ReservationEvent::ReservationDispatched {} => self.status = Some(ReservationStatus::Dispatched),
            ReservationEvent::ReservationReturned {} => self.status = Some(ReservationStatus::Returned),
            ReservationEvent::ReservationRedirected { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use eventcore::testing::given;

    use super::*;

    fn plan(partial: bool) -> ReservationCommand {
        ReservationCommand::Plan {
            site_id: "gerland".into(),
            purpose: Purpose::Parcel { association_id: Some("asso-restos".into()) },
            lines: vec![
                PlanLine {
                    product_id: "pasta".into(),
                    quantity: 3,
                    candidates: vec!["lot-a".into(), "lot-b".into()],
                    chosen: false,
                },
                PlanLine { product_id: "milk".into(), quantity: 2, candidates: vec!["lot-m".into()], chosen: false },
            ],
            partial,
        }
    }

    fn planned(partial: bool) -> ReservationEvent {
        let ReservationCommand::Plan { site_id, purpose, lines, partial: _ } = plan(partial) else { unreachable!() };
        ReservationEvent::ReservationPlanned { site_id, purpose, lines, partial }
    }

    fn alloc(line: u32, lot: &str, quantity: u32) -> Allocation {
        Allocation { line, lot_id: lot.into(), quantity }
    }

    #[test]
    fn a_plan_is_checked_and_made_once() {
        given::<Reservation>([]).when(plan(false)).then([planned(false)]);
        given::<Reservation>([planned(false)]).when(plan(false)).then_rejected("reservation_exists");
        let ReservationCommand::Plan { site_id, purpose, mut lines, partial } = plan(false) else { unreachable!() };
        lines[1].product_id = "pasta".into();
        given::<Reservation>([])
            .when(ReservationCommand::Plan { site_id, purpose, lines, partial })
            .then_rejected("duplicate_product");
    }

    #[test]
    fn settling_confirms_a_full_allocation_and_fails_a_short_one() {
        let full = vec![alloc(1, "lot-a", 2), alloc(1, "lot-b", 1), alloc(2, "lot-m", 2)];
        given::<Reservation>([planned(false)])
            .when(ReservationCommand::Settle { allocations: full.clone() })
            .then([ReservationEvent::ReservationConfirmed { allocations: full, shortfalls: vec![] }]);
        let short = vec![alloc(1, "lot-a", 3), alloc(2, "lot-m", 1)];
        let shortfall = Shortfall { line: 2, product_id: "milk".into(), requested: 2, allocated: 1 };
        given::<Reservation>([planned(false)])
            .when(ReservationCommand::Settle { allocations: short.clone() })
            .then([ReservationEvent::ReservationFailed { shortfalls: vec![shortfall.clone()], expired: false }]);
        given::<Reservation>([planned(true)])
            .when(ReservationCommand::Settle { allocations: short.clone() })
            .then([ReservationEvent::ReservationConfirmed { allocations: short, shortfalls: vec![shortfall] }]);
        given::<Reservation>([planned(false)])
            .when(ReservationCommand::Settle { allocations: vec![alloc(1, "lot-z", 1)] })
            .then_rejected("invalid_allocation");
        given::<Reservation>([planned(false)])
            .when(ReservationCommand::Settle { allocations: vec![alloc(1, "lot-a", 4)] })
            .then_rejected("invalid_allocation");
    }

    #[test]
    fn a_line_short_of_its_lots_is_planned_on_more_and_settled_from_them() {
        let more = ReservationCommand::AddCandidates { line: 2, lots: vec!["lot-m".into(), "lot-n".into()] };
        let added = ReservationEvent::ReservationCandidatesAdded { line: 2, lots: vec!["lot-n".into()] };
        given::<Reservation>([planned(false)]).when(more.clone()).then([added.clone()]);
        given::<Reservation>([planned(false), added.clone()]).when(more).then([]);
        given::<Reservation>([planned(false)])
            .when(ReservationCommand::AddCandidates { line: 3, lots: vec!["lot-x".into()] })
            .then_rejected("invalid_line");
        let from_new = vec![alloc(1, "lot-a", 3), alloc(2, "lot-m", 1), alloc(2, "lot-n", 1)];
        given::<Reservation>([planned(false), added])
            .when(ReservationCommand::Settle { allocations: from_new.clone() })
            .then([ReservationEvent::ReservationConfirmed { allocations: from_new, shortfalls: vec![] }]);
        let confirmed = ReservationEvent::ReservationConfirmed { allocations: vec![], shortfalls: vec![] };
        given::<Reservation>([planned(false), confirmed])
            .when(ReservationCommand::AddCandidates { line: 1, lots: vec!["lot-x".into()] })
            .then_rejected("reservation_state");
    }

    #[test]
    fn a_failed_reservation_says_once_when_its_lots_hold_nothing_more() {
        let failed = ReservationEvent::ReservationFailed { shortfalls: vec![], expired: true };
        let released = ReservationEvent::ReservationHoldsReleased {};
        given::<Reservation>([planned(false), failed.clone()])
            .when(ReservationCommand::MarkHoldsReleased)
            .then([released.clone()]);
        given::<Reservation>([planned(false), failed, released]).when(ReservationCommand::MarkHoldsReleased).then([]);
        given::<Reservation>([planned(false)])
            .when(ReservationCommand::MarkHoldsReleased)
            .then_rejected("reservation_state");
    }

    #[test]
    fn a_reservation_never_settled_expires_and_one_settled_does_not() {
        let everything_short = vec![
            Shortfall { line: 1, product_id: "pasta".into(), requested: 3, allocated: 0 },
            Shortfall { line: 2, product_id: "milk".into(), requested: 2, allocated: 0 },
        ];
        given::<Reservation>([planned(false)])
            .when(ReservationCommand::Expire)
            .then([ReservationEvent::ReservationFailed { shortfalls: everything_short, expired: true }]);
        let confirmed =
            ReservationEvent::ReservationConfirmed { allocations: vec![alloc(1, "lot-a", 3)], shortfalls: vec![] };
        given::<Reservation>([planned(true), confirmed]).when(ReservationCommand::Expire).then([]);
        given::<Reservation>([]).when(ReservationCommand::Expire).then_rejected("reservation_not_found");
    }

    #[test]
    fn a_confirmed_reservation_is_picked_then_shipped_or_released() {
        let confirmed = ReservationEvent::ReservationConfirmed {
            allocations: vec![alloc(1, "lot-a", 3), alloc(2, "lot-m", 2)],
            shortfalls: vec![],
        };
        let destination = Destination {
            kind: "parcel".into(),
            reference: "parcel-1".into(),
            association_id: None,
            relay_point_id: None,
            household: None,
        };
        given::<Reservation>([planned(false), confirmed.clone()])
            .when(ReservationCommand::MarkPicked)
            .then([ReservationEvent::ReservationPicked {}]);
        given::<Reservation>([planned(false), confirmed.clone(), ReservationEvent::ReservationPicked {}])
            .when(ReservationCommand::MarkShipped { destination: destination.clone() })
            .then([ReservationEvent::ReservationShipped { destination: destination.clone() }]);
        given::<Reservation>([planned(false), confirmed.clone()])
            .when(ReservationCommand::Release)
            .then([ReservationEvent::ReservationReleased {}]);
        let shipped = [
            planned(false),
            confirmed.clone(),
            ReservationEvent::ReservationShipped { destination: destination.clone() },
        ];
        given::<Reservation>(shipped.clone()).when(ReservationCommand::Release).then_rejected("reservation_state");
        // Not collected: back to the warehouse once, or to someone else.
        given::<Reservation>(shipped.clone())
            .when(ReservationCommand::MarkReturned)
            .then([ReservationEvent::ReservationReturned {}]);
        let mut returned = shipped.to_vec();
        returned.push(ReservationEvent::ReservationReturned {});
        given::<Reservation>(returned.clone()).when(ReservationCommand::MarkReturned).then([]);
        given::<Reservation>(shipped)
            .when(ReservationCommand::Redirect { destination: destination.clone() })
            .then([ReservationEvent::ReservationRedirected { destination: destination.clone() }]);
        given::<Reservation>(returned)
            .when(ReservationCommand::Redirect { destination })
            .then_rejected("reservation_state");
        given::<Reservation>([planned(false), confirmed])
            .when(ReservationCommand::MarkReturned)
            .then_rejected("reservation_state");
        given::<Reservation>([]).when(ReservationCommand::MarkPicked).then_rejected("reservation_not_found");
        given::<Reservation>([planned(false)]).when(ReservationCommand::MarkDispatched).then_rejected("not_a_transfer");
    }
}
