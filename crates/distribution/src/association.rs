use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate, NaiveTime, Weekday};
use eventcore::{Aggregate, AggregateId, DomainEvent, Rejection};
use serde::{Deserialize, Serialize};
use values::{GeoPoint, Name};

/// Where an association hands parcels to households.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayPoint {
    pub relay_id: AggregateId,
    pub name: Name,
    pub address: String,
    pub commune: Name,
    pub position: Option<GeoPoint>,
    /// Whether chilled and frozen lines may be delivered there.
    pub cold_storage: bool,
    /// When it is open (households collect, drivers deliver); none recorded means any day.
    #[serde(default)]
    pub opening: Vec<OpeningSlot>,
}

/// A weekly opening slot of a relay point, local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpeningSlot {
    /// `Mon` … `Sun` (full English names are accepted too).
    pub day: Weekday,
    pub opens: NaiveTime,
    pub closes: NaiveTime,
}

/// Most slots a relay point records: two a day.
const MAX_SLOTS: usize = 14;

fn check_opening(slots: &[OpeningSlot]) -> Result<(), Rejection> {
    if slots.len() > MAX_SLOTS {
        return Err(Rejection::validation("invalid_opening", format!("at most {MAX_SLOTS} opening slots")));
    }
    for (i, slot) in slots.iter().enumerate() {
        if slot.opens >= slot.closes {
            return Err(Rejection::validation("invalid_opening", format!("slot {}: it opens before it closes", i + 1)));
        }
        let overlaps = slots[..i].iter().any(|o| o.day == slot.day && o.opens < slot.closes && slot.opens < o.closes);
        if overlaps {
            return Err(Rejection::validation("invalid_opening", format!("slot {} overlaps another", i + 1)));
        }
    }
    Ok(())
}

impl RelayPoint {
    /// Whether it opens on `date` (always, when no slot is recorded).
    pub fn open_on(&self, date: NaiveDate) -> bool {
        self.opening.is_empty() || self.opening.iter().any(|s| s.day == date.weekday())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum AssociationCommand {
    Register {
        name: Name,
        commune: Name,
    },
    AddRelayPoint(RelayPoint),
    /// Replaces a relay point's opening slots.
    SetOpening {
        relay_id: AggregateId,
        opening: Vec<OpeningSlot>,
    },
    /// The association's own eligibility rule ("reste à vivre" threshold and how long an
    /// assessment stays valid), replacing the collective's default for its households.
    SetEligibilityRule(EligibilityRule),
    /// How many days a parcel covers at this association (weekly: 7, fortnightly: 14),
    /// replacing the collective's default.
    SetParcelDays(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EligibilityRule {
    /// Most "reste à vivre" per person per day, euro cents, to be eligible.
    pub threshold_cents: i64,
    pub validity_days: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum AssociationEvent {
    AssociationRegistered { name: Name, commune: Name },
    RelayPointAdded { relay: RelayPoint },
    OpeningSet { relay_id: AggregateId, opening: Vec<OpeningSlot> },
    EligibilityRuleSet(EligibilityRule),
    ParcelDaysSet { days: u32 },
}

impl DomainEvent for AssociationEvent {}

/// A member association of the collective.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Association {
    pub name: Option<Name>,
    pub relay_points: BTreeMap<AggregateId, RelayPoint>,
    pub eligibility: Option<EligibilityRule>,
    pub parcel_days: Option<u32>,
}

impl Aggregate for Association {
    const KIND: &'static str = "association";
    type Command = AssociationCommand;
    type Event = AssociationEvent;

    fn decide(&self, command: &AssociationCommand) -> Result<Vec<AssociationEvent>, Rejection> {
        match command {
            AssociationCommand::Register { .. } if self.name.is_some() => {
                Err(Rejection::conflict("association_already_registered", "this association is already registered"))
            }
            AssociationCommand::Register { name, commune } => {
                Ok(vec![AssociationEvent::AssociationRegistered { name: name.clone(), commune: commune.clone() }])
            }
            AssociationCommand::AddRelayPoint(_) if self.name.is_none() => {
                Err(Rejection::not_found("association_not_found", "no such association"))
            }
            AssociationCommand::AddRelayPoint(relay) if self.relay_points.contains_key(&relay.relay_id) => {
                Err(Rejection::conflict("relay_point_exists", format!("relay point {} already exists", relay.relay_id)))
            }
            AssociationCommand::AddRelayPoint(relay) => {
                if values::limits::too_long(&relay.address, values::limits::MAX_TEXT) {
                    return Err(Rejection::validation("invalid_address", "an address is at most 500 characters"));
                }
                check_opening(&relay.opening)?;
                Ok(vec![AssociationEvent::RelayPointAdded { relay: relay.clone() }])
            }
            AssociationCommand::SetOpening { relay_id, opening } => {
                let relay = self.relay_points.get(relay_id).ok_or_else(|| {
                    Rejection::not_found("relay_point_not_found", format!("no relay point {relay_id} here"))
                })?;
                check_opening(opening)?;
                if relay.opening == *opening {
                    return Ok(vec![]);
                }
                Ok(vec![AssociationEvent::OpeningSet { relay_id: relay_id.clone(), opening: opening.clone() }])
            }
            AssociationCommand::SetParcelDays(_) if self.name.is_none() => {
                Err(Rejection::not_found("association_not_found", "no such association"))
            }
            AssociationCommand::SetParcelDays(days) => {
                if !(1..=31).contains(days) {
                    return Err(Rejection::validation("invalid_parcel_days", "a parcel covers 1 to 31 days"));
                }
                if self.parcel_days == Some(*days) {
                    return Ok(vec![]);
                }
                Ok(vec![AssociationEvent::ParcelDaysSet { days: *days }])
            }
            AssociationCommand::SetEligibilityRule(_) if self.name.is_none() => {
                Err(Rejection::not_found("association_not_found", "no such association"))
            }
            AssociationCommand::SetEligibilityRule(rule) => {
                if rule.validity_days == 0 || rule.validity_days > 731 || !(0..=100_000).contains(&rule.threshold_cents)
                {
                    return Err(Rejection::validation(
                        "invalid_eligibility_rule",
                        "a threshold is 0 to 1,000 € a day and an assessment is valid 1 day to 2 years",
                    ));
                }
                if self.eligibility == Some(*rule) {
                    return Ok(vec![]);
                }
                Ok(vec![AssociationEvent::EligibilityRuleSet(*rule)])
            }
        }
    }

    fn apply(&mut self, event: &AssociationEvent) {
        match event {
            AssociationEvent::AssociationRegistered { name, .. } => self.name = Some(name.clone()),
            AssociationEvent::RelayPointAdded { relay } => {
                self.relay_points.insert(relay.relay_id.clone(), relay.clone());
            }
            AssociationEvent::EligibilityRuleSet(rule) => self.eligibility = Some(*rule),
            AssociationEvent::ParcelDaysSet { days } => self.parcel_days = Some(*days),
            AssociationEvent::OpeningSet { relay_id, opening } => {
                if let Some(relay) = self.relay_points.get_mut(relay_id) {
                    relay.opening = opening.clone();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use eventcore::testing::given;

    use super::*;

    fn n(s: &str) -> Name {
        Name::try_from(s).unwrap()
    }

    fn registered() -> AssociationEvent {
        AssociationEvent::AssociationRegistered { name: n("Restos du Cœur Vaulx"), commune: n("Vaulx-en-Velin") }
    }

    fn relay() -> RelayPoint {
        RelayPoint {
            relay_id: "rp-vaulx-centre".parse().unwrap(),
            name: n("Centre social Peyri"),
            address: "Rue Joseph Blein".into(),
            commune: n("Vaulx-en-Velin"),
            position: None,
            cold_storage: true,
            opening: vec![slot(Weekday::Wed, 14, 17)],
        }
    }

    fn slot(day: Weekday, opens: u32, closes: u32) -> OpeningSlot {
        OpeningSlot {
            day,
            opens: NaiveTime::from_hms_opt(opens, 0, 0).unwrap(),
            closes: NaiveTime::from_hms_opt(closes, 0, 0).unwrap(),
        }
    }

    #[test]
    fn a_relay_point_opens_on_its_days_and_its_slots_are_checked() {
        let added = [registered(), AssociationEvent::RelayPointAdded { relay: relay() }];
        let wednesday = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        assert!(relay().open_on(wednesday));
        assert!(!relay().open_on(wednesday.succ_opt().unwrap()));
        assert!(RelayPoint { opening: vec![], ..relay() }.open_on(wednesday.succ_opt().unwrap()), "no slots: any day");
        given::<Association>([registered()])
            .when(AssociationCommand::AddRelayPoint(RelayPoint { address: "rue ".repeat(2_500), ..relay() }))
            .then_rejected("invalid_address");
        let id: AggregateId = "rp-vaulx-centre".parse().unwrap();
        let opening = vec![slot(Weekday::Wed, 9, 12), slot(Weekday::Wed, 14, 17), slot(Weekday::Sat, 9, 12)];
        let state = given::<Association>(added.clone())
            .when(AssociationCommand::SetOpening { relay_id: id.clone(), opening: opening.clone() })
            .then([AssociationEvent::OpeningSet { relay_id: id.clone(), opening: opening.clone() }]);
        assert_eq!(state.relay_points[&id].opening, opening);
        given::<Association>(added.clone())
            .when(AssociationCommand::SetOpening { relay_id: id.clone(), opening: vec![slot(Weekday::Wed, 14, 17)] })
            .then([]);
        for bad in [vec![slot(Weekday::Mon, 12, 9)], vec![slot(Weekday::Mon, 9, 12), slot(Weekday::Mon, 11, 13)]] {
            given::<Association>(added.clone())
                .when(AssociationCommand::SetOpening { relay_id: id.clone(), opening: bad.clone() })
                .then_rejected("invalid_opening");
            given::<Association>([registered()])
                .when(AssociationCommand::AddRelayPoint(RelayPoint { opening: bad, ..relay() }))
                .then_rejected("invalid_opening");
        }
        given::<Association>([registered()])
            .when(AssociationCommand::SetOpening { relay_id: id, opening })
            .then_rejected("relay_point_not_found");
    }

    #[test]
    fn an_association_registers_then_adds_relay_points() {
        given::<Association>([])
            .when(AssociationCommand::Register { name: n("Restos du Cœur Vaulx"), commune: n("Vaulx-en-Velin") })
            .then([registered()]);
        given::<Association>([registered()])
            .when(AssociationCommand::Register { name: n("x"), commune: n("y") })
            .then_rejected("association_already_registered");
        given::<Association>([registered()])
            .when(AssociationCommand::AddRelayPoint(relay()))
            .then([AssociationEvent::RelayPointAdded { relay: relay() }]);
        given::<Association>([registered(), AssociationEvent::RelayPointAdded { relay: relay() }])
            .when(AssociationCommand::AddRelayPoint(relay()))
            .then_rejected("relay_point_exists");
        given::<Association>([])
            .when(AssociationCommand::AddRelayPoint(relay()))
            .then_rejected("association_not_found");
    }

    #[test]
    fn an_association_distributes_at_its_own_rhythm() {
        given::<Association>([registered()])
            .when(AssociationCommand::SetParcelDays(14))
            .then([AssociationEvent::ParcelDaysSet { days: 14 }]);
        given::<Association>([registered(), AssociationEvent::ParcelDaysSet { days: 14 }])
            .when(AssociationCommand::SetParcelDays(14))
            .then([]);
        for bad in [0, 32] {
            given::<Association>([registered()])
                .when(AssociationCommand::SetParcelDays(bad))
                .then_rejected("invalid_parcel_days");
        }
        given::<Association>([]).when(AssociationCommand::SetParcelDays(7)).then_rejected("association_not_found");
    }

    #[test]
    fn an_association_sets_its_own_eligibility_rule() {
        let rule = EligibilityRule { threshold_cents: 1_200, validity_days: 183 };
        given::<Association>([registered()])
            .when(AssociationCommand::SetEligibilityRule(rule))
            .then([AssociationEvent::EligibilityRuleSet(rule)]);
        given::<Association>([registered(), AssociationEvent::EligibilityRuleSet(rule)])
            .when(AssociationCommand::SetEligibilityRule(rule))
            .then([]);
        given::<Association>([registered()])
            .when(AssociationCommand::SetEligibilityRule(EligibilityRule { validity_days: 0, ..rule }))
            .then_rejected("invalid_eligibility_rule");
    }
}
