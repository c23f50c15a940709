use eventcore::{Aggregate, DomainEvent, Rejection};
use serde::{Deserialize, Serialize};
use values::limits::{too_long, MAX_KG, MAX_LITRES, MAX_TEXT};
use values::Name;

/// What a vehicle can carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VehicleSpec {
    pub name: Name,
    pub capacity_kg: u32,
    pub volume_l: u32,
    /// Kilograms that can travel refrigerated; 0 for a vehicle without a cold box.
    pub chilled_capacity_kg: u32,
    pub home_site: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum VehicleCommand {
    Register(VehicleSpec),
    Retire {
        reason: String,
    },
    /// Off the road that day (servicing, lent out), or back on it.
    SetAvailability {
        date: chrono::NaiveDate,
        available: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum VehicleEvent {
    VehicleRegistered { spec: VehicleSpec },
    VehicleRetired { reason: String },
    VehicleAvailabilitySet { date: chrono::NaiveDate, available: bool },
}

impl DomainEvent for VehicleEvent {}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vehicle {
    pub spec: Option<VehicleSpec>,
    pub retired: bool,
    /// Days it is off the road (it is available every other day).
    pub off: std::collections::BTreeSet<chrono::NaiveDate>,
}

impl Vehicle {
    pub fn available_on(&self, date: chrono::NaiveDate) -> bool {
        self.spec.is_some() && !self.retired && !self.off.contains(&date)
    }
}

impl Aggregate for Vehicle {
    const KIND: &'static str = "vehicle";
    type Command = VehicleCommand;
    type Event = VehicleEvent;

    fn decide(&self, command: &VehicleCommand) -> Result<Vec<VehicleEvent>, Rejection> {
        match command {
            VehicleCommand::Register(_) if self.spec.is_some() => {
                Err(Rejection::conflict("vehicle_already_registered", "this vehicle is already registered"))
            }
            VehicleCommand::Register(spec) => {
                if spec.capacity_kg == 0 || spec.capacity_kg > MAX_KG || spec.volume_l > MAX_LITRES {
                    return Err(Rejection::validation(
                        "invalid_capacity",
                        "capacity_kg is 1 to 100,000 and volume_l at most 200,000",
                    ));
                }
                if spec.home_site.parse::<eventcore::AggregateId>().is_err() {
                    return Err(Rejection::validation("invalid_site_id", "home_site is a site's id"));
                }
                if spec.chilled_capacity_kg > spec.capacity_kg {
                    return Err(Rejection::validation(
                        "invalid_capacity",
                        "chilled_capacity_kg cannot exceed capacity_kg",
                    ));
                }
                Ok(vec![VehicleEvent::VehicleRegistered { spec: spec.clone() }])
            }
            VehicleCommand::Retire { .. } if self.spec.is_none() => {
                Err(Rejection::not_found("vehicle_not_found", "no such vehicle"))
            }
            VehicleCommand::Retire { .. } if self.retired => Ok(vec![]),
            VehicleCommand::Retire { reason } => {
                if too_long(reason, MAX_TEXT) {
                    return Err(Rejection::validation("invalid_reason", "a reason is at most 500 characters"));
                }
                Ok(vec![VehicleEvent::VehicleRetired { reason: reason.trim().to_owned() }])
            }
            VehicleCommand::SetAvailability { .. } if self.spec.is_none() => {
                Err(Rejection::not_found("vehicle_not_found", "no such vehicle"))
            }
            VehicleCommand::SetAvailability { date, available } => {
                if self.off.contains(date) != *available {
                    return Ok(vec![]);
                }
                Ok(vec![VehicleEvent::VehicleAvailabilitySet { date: *date, available: *available }])
            }
        }
    }

    fn apply(&mut self, event: &VehicleEvent) {
        match event {
            VehicleEvent::VehicleRegistered { spec } => self.spec = Some(spec.clone()),
            VehicleEvent::VehicleRetired { .. } => self.retired = true,
            VehicleEvent::VehicleAvailabilitySet { date, available: false } => {
                self.off.insert(*date);
            }
            VehicleEvent::VehicleAvailabilitySet { date, available: true } => {
                self.off.remove(date);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use eventcore::testing::given;

    use super::*;

    fn spec(capacity_kg: u32, chilled_capacity_kg: u32) -> VehicleSpec {
        VehicleSpec {
            name: Name::try_from("Kangoo frigo").unwrap(),
            capacity_kg,
            volume_l: 3000,
            chilled_capacity_kg,
            home_site: "site-gerland".into(),
        }
    }

    #[test]
    fn capacities_must_make_sense() {
        given::<Vehicle>([])
            .when(VehicleCommand::Register(spec(600, 300)))
            .then([VehicleEvent::VehicleRegistered { spec: spec(600, 300) }]);
        given::<Vehicle>([]).when(VehicleCommand::Register(spec(0, 0))).then_rejected("invalid_capacity");
        given::<Vehicle>([]).when(VehicleCommand::Register(spec(100, 300))).then_rejected("invalid_capacity");
        // Given nothing, when a vehicle carries u32::MAX kilograms or litres, or is based at a
        // site whose id would be NATS wildcards, then it is refused.
        given::<Vehicle>([]).when(VehicleCommand::Register(spec(u32::MAX, 0))).then_rejected("invalid_capacity");
        let roomy = VehicleSpec { volume_l: u32::MAX, ..spec(100, 0) };
        given::<Vehicle>([]).when(VehicleCommand::Register(roomy)).then_rejected("invalid_capacity");
        for site in ["*", "a.b", ""] {
            let odd = VehicleSpec { home_site: site.into(), ..spec(100, 0) };
            given::<Vehicle>([]).when(VehicleCommand::Register(odd)).then_rejected("invalid_site_id");
        }
        given::<Vehicle>([VehicleEvent::VehicleRegistered { spec: spec(600, 0) }])
            .when(VehicleCommand::Register(spec(600, 0)))
            .then_rejected("vehicle_already_registered");
    }

    #[test]
    fn a_vehicle_is_off_the_road_on_the_days_said() {
        let registered = VehicleEvent::VehicleRegistered { spec: spec(600, 0) };
        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        let off = VehicleEvent::VehicleAvailabilitySet { date: day, available: false };
        let state = given::<Vehicle>([registered.clone()])
            .when(VehicleCommand::SetAvailability { date: day, available: false })
            .then([off.clone()]);
        assert!(!state.available_on(day) && state.available_on(day.succ_opt().unwrap()));
        given::<Vehicle>([registered.clone(), off.clone()])
            .when(VehicleCommand::SetAvailability { date: day, available: false })
            .then([]);
        given::<Vehicle>([registered.clone()])
            .when(VehicleCommand::SetAvailability { date: day, available: true })
            .then([]);
        let state = given::<Vehicle>([registered, off])
            .when(VehicleCommand::SetAvailability { date: day, available: true })
            .then([VehicleEvent::VehicleAvailabilitySet { date: day, available: true }]);
        assert!(state.available_on(day));
        given::<Vehicle>([])
            .when(VehicleCommand::SetAvailability { date: day, available: true })
            .then_rejected("vehicle_not_found");
    }

    #[test]
    fn retiring_is_idempotent() {
        let registered = VehicleEvent::VehicleRegistered { spec: spec(600, 0) };
        let retire = VehicleCommand::Retire { reason: "sold".into() };
        given::<Vehicle>([registered.clone()])
            .when(retire.clone())
            .then([VehicleEvent::VehicleRetired { reason: "sold".into() }]);
        given::<Vehicle>([registered, VehicleEvent::VehicleRetired { reason: "sold".into() }])
            .when(retire.clone())
            .then([]);
        given::<Vehicle>([]).when(retire).then_rejected("vehicle_not_found");
    }
}
