//! Volunteer drivers: the vehicles they may drive, how long a shift they take, and when they
//! are free, day by day.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{NaiveDate, NaiveTime};
use eventcore::{Aggregate, DomainEvent, Rejection};
use serde::{Deserialize, Serialize};
use values::Name;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverSpec {
    /// How the coordinators call them (a first name is enough).
    pub name: Name,
    /// Vehicles they may drive (licence, insurance, habit).
    pub vehicles: BTreeSet<String>,
    /// Longest shift they take, minutes.
    pub max_shift_minutes: u32,
}

/// A stretch of a day when a driver is free, local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Slot {
    pub from: NaiveTime,
    pub to: NaiveTime,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DriverCommand {
    Register(DriverSpec),
    /// Replaces what they said of that day (no slot: not available).
    SetAvailability {
        date: NaiveDate,
        slots: Vec<Slot>,
    },
    Retire,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum DriverEvent {
    DriverRegistered { spec: DriverSpec },
    AvailabilitySet { date: NaiveDate, slots: Vec<Slot> },
    DriverRetired {},
}

impl DomainEvent for DriverEvent {}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Driver {
    pub spec: Option<DriverSpec>,
    pub availability: BTreeMap<NaiveDate, Vec<Slot>>,
    pub retired: bool,
}

/// At most this many slots a day.
const MAX_SLOTS: usize = 6;
/// At most this many vehicles a driver may drive.
const MAX_VEHICLES: usize = 100;

impl Driver {
    /// When they are free on `date` (nothing said: not free).
    pub fn slots(&self, date: NaiveDate) -> &[Slot] {
        self.availability.get(&date).map_or(&[], Vec::as_slice)
    }
}

impl Aggregate for Driver {
    const KIND: &'static str = "driver";
    type Command = DriverCommand;
    type Event = DriverEvent;

    fn decide(&self, command: &DriverCommand) -> Result<Vec<DriverEvent>, Rejection> {
        match (command, &self.spec) {
            (DriverCommand::Register(_), Some(_)) => {
                Err(Rejection::conflict("driver_already_registered", "this driver is already registered"))
            }
            (DriverCommand::Register(spec), None) => {
                if !(60..=14 * 60).contains(&spec.max_shift_minutes) {
                    return Err(Rejection::validation("invalid_shift", "a shift is 1 to 14 hours"));
                }
                if spec.vehicles.is_empty() {
                    return Err(Rejection::validation("no_vehicle", "a driver may drive at least one vehicle"));
                }
                if spec.vehicles.len() > MAX_VEHICLES
                    || spec.vehicles.iter().any(|v| v.parse::<eventcore::AggregateId>().is_err())
                {
                    return Err(Rejection::validation(
                        "invalid_vehicle_id",
                        format!("a driver may drive 1 to {MAX_VEHICLES} vehicles, named by their ids"),
                    ));
                }
                Ok(vec![DriverEvent::DriverRegistered { spec: spec.clone() }])
            }
            (_, None) => Err(Rejection::not_found("driver_not_found", "no such driver")),
            (DriverCommand::Retire, Some(_)) if self.retired => Ok(vec![]),
            (DriverCommand::Retire, Some(_)) => Ok(vec![DriverEvent::DriverRetired {}]),
            (DriverCommand::SetAvailability { .. }, Some(_)) if self.retired => {
                Err(Rejection::conflict("driver_retired", "this driver no longer drives"))
            }
            (DriverCommand::SetAvailability { date, slots }, Some(_)) => {
                if slots.len() > MAX_SLOTS {
                    return Err(Rejection::validation("invalid_slots", format!("at most {MAX_SLOTS} slots a day")));
                }
                let mut sorted = slots.clone();
                sorted.sort();
                for (i, s) in sorted.iter().enumerate() {
                    if s.from >= s.to {
                        return Err(Rejection::validation("invalid_slots", "a slot ends after it starts"));
                    }
                    if i > 0 && sorted[i - 1].to > s.from {
                        return Err(Rejection::validation("invalid_slots", "slots do not overlap"));
                    }
                }
                if self.slots(*date) == sorted.as_slice() {
                    return Ok(vec![]);
                }
                Ok(vec![DriverEvent::AvailabilitySet { date: *date, slots: sorted }])
            }
        }
    }

    fn apply(&mut self, event: &DriverEvent) {
        match event {
            DriverEvent::DriverRegistered { spec } => self.spec = Some(spec.clone()),
            DriverEvent::AvailabilitySet { date, slots } => {
                if slots.is_empty() {
                    self.availability.remove(date);
                } else {
                    self.availability.insert(*date, slots.clone());
                }
            }
            DriverEvent::DriverRetired {} => self.retired = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use eventcore::testing::given;

    use super::*;

    fn spec() -> DriverSpec {
        DriverSpec {
            name: Name::try_from("Monique").unwrap(),
            vehicles: ["kangoo-frigo".to_owned()].into(),
            max_shift_minutes: 5 * 60,
        }
    }

    fn slot(from: u32, to: u32) -> Slot {
        Slot { from: NaiveTime::from_hms_opt(from, 0, 0).unwrap(), to: NaiveTime::from_hms_opt(to, 0, 0).unwrap() }
    }

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
    }

    #[test]
    fn a_driver_registers_with_vehicles_and_a_reasonable_shift() {
        let registered = DriverEvent::DriverRegistered { spec: spec() };
        given::<Driver>([]).when(DriverCommand::Register(spec())).then([registered.clone()]);
        given::<Driver>([registered]).when(DriverCommand::Register(spec())).then_rejected("driver_already_registered");
        let none = DriverSpec { vehicles: BTreeSet::new(), ..spec() };
        given::<Driver>([]).when(DriverCommand::Register(none)).then_rejected("no_vehicle");
        for odd in ["a.b", ">", "a b", ""] {
            let spec = DriverSpec { vehicles: [odd.to_owned()].into(), ..spec() };
            given::<Driver>([]).when(DriverCommand::Register(spec)).then_rejected("invalid_vehicle_id");
        }
        let endless = DriverSpec { max_shift_minutes: 20 * 60, ..spec() };
        given::<Driver>([]).when(DriverCommand::Register(endless)).then_rejected("invalid_shift");
        given::<Driver>([]).when(DriverCommand::Retire).then_rejected("driver_not_found");
    }

    #[test]
    fn availability_is_said_day_by_day_in_slots_that_make_sense() {
        let registered = DriverEvent::DriverRegistered { spec: spec() };
        let set = |slots: Vec<Slot>| DriverCommand::SetAvailability { date: day(), slots };
        let state = given::<Driver>([registered.clone()])
            .when(set(vec![slot(14, 17), slot(8, 12)]))
            .then([DriverEvent::AvailabilitySet { date: day(), slots: vec![slot(8, 12), slot(14, 17)] }]);
        assert_eq!(state.slots(day()), [slot(8, 12), slot(14, 17)]);
        assert!(state.slots(day().succ_opt().unwrap()).is_empty(), "nothing said: not free");
        let said = DriverEvent::AvailabilitySet { date: day(), slots: vec![slot(8, 12), slot(14, 17)] };
        given::<Driver>([registered.clone(), said.clone()]).when(set(vec![slot(8, 12), slot(14, 17)])).then([]);
        let state = given::<Driver>([registered.clone(), said])
            .when(set(vec![]))
            .then([DriverEvent::AvailabilitySet { date: day(), slots: vec![] }]);
        assert!(state.slots(day()).is_empty());
        given::<Driver>([registered.clone()]).when(set(vec![slot(12, 8)])).then_rejected("invalid_slots");
        given::<Driver>([registered.clone()]).when(set(vec![slot(8, 12), slot(11, 13)])).then_rejected("invalid_slots");
        given::<Driver>([registered, DriverEvent::DriverRetired {}])
            .when(set(vec![slot(8, 12)]))
            .then_rejected("driver_retired");
    }
}
