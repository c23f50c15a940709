use std::collections::BTreeMap;

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
}

#[derive(Debug, Clone, PartialEq)]
pub enum AssociationCommand {
    Register {
        name: Name,
        commune: Name,
    },
    AddRelayPoint(RelayPoint),
    /// The association's own eligibility rule ("reste à vivre" threshold and how long an
    /// assessment stays valid), replacing the collective's default for its households.
    SetEligibilityRule(EligibilityRule),
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
    EligibilityRuleSet(EligibilityRule),
}

impl DomainEvent for AssociationEvent {}

/// A member association of the collective.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Association {
    pub name: Option<Name>,
    pub relay_points: BTreeMap<AggregateId, RelayPoint>,
    pub eligibility: Option<EligibilityRule>,
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
                Ok(vec![AssociationEvent::RelayPointAdded { relay: relay.clone() }])
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
        }
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
