use std::collections::BTreeMap;

use chrono::NaiveDate;
use eventcore::{Aggregate, DomainEvent, Rejection};
use serde::{Deserialize, Serialize};
use values::FoodGroup;

use crate::compose::Line;
use crate::Composition;

#[derive(Debug, Clone, PartialEq)]
pub enum ParcelCommand {
    /// Asks for a parcel for a household on a distribution day (`today` is the service's clock).
    Request {
        household_id: String,
        association_id: String,
        relay_point_id: String,
        date: NaiveDate,
        emergency: bool,
        /// Who it is for, by age band (what reports count).
        people: Composition,
        today: NaiveDate,
    },
    Cancel {
        reason: String,
    },
    /// Records what the wave put in it (and what stock reserved for it).
    Compose {
        lines: Vec<Line>,
        short: Vec<FoodGroup>,
        /// The household's needs per food group, grams (what the fair-share ledger weighs).
        needs: BTreeMap<FoodGroup, u64>,
        commune: String,
        /// The stock reservations holding its lines.
        reservations: Vec<String>,
        /// Some of its lots were taken between composing and reserving, and it was composed
        /// again from what was left.
        recomposed: bool,
    },
    /// The next step of its life: picked, shipped, at the relay point, collected or not,
    /// returned to the warehouse when nobody collected it.
    Advance(ParcelStatus),
    /// Not collected: the association gave it to another of its households instead.
    Redistribute {
        household_id: String,
        people: Composition,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ParcelEvent {
    ParcelRequested {
        household_id: String,
        association_id: String,
        relay_point_id: String,
        date: NaiveDate,
        emergency: bool,
        #[serde(default)]
        people: Option<Composition>,
    },
    ParcelCancelled {
        reason: String,
    },
    ParcelComposed {
        lines: Vec<Line>,
        short: Vec<FoodGroup>,
        #[serde(default)]
        needs: BTreeMap<FoodGroup, u64>,
        #[serde(default)]
        commune: String,
        /// Absent in the first version of the event: one reservation, named after the parcel.
        #[serde(default)]
        reservations: Option<Vec<String>>,
        #[serde(default)]
        recomposed: bool,
    },
    ParcelPicked {},
    ParcelShipped {},
    ParcelAtRelay {},
    ParcelCollected {},
    /// Not collected by the deadline.
    ParcelNotCollected {},
    /// Not collected, and taken back to the warehouse.
    ParcelReturned {},
    /// Not collected, and given to another household of the association.
    ParcelRedistributed {
        household_id: String,
        #[serde(default)]
        people: Option<Composition>,
    },
}

impl DomainEvent for ParcelEvent {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParcelStatus {
    Requested,
    Composed,
    Picked,
    Shipped,
    AtRelay,
    Collected,
    NotCollected,
    Returned,
    Redistributed,
    Cancelled,
}

/// One household's parcel for one distribution day. Its id is `<household>-<date>`, so a
/// household has at most one parcel a day whoever asks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parcel {
    pub status: Option<ParcelStatus>,
    pub household_id: String,
    pub association_id: String,
    pub relay_point_id: String,
    pub date: Option<NaiveDate>,
    pub emergency: bool,
    pub redistributed_to: Option<String>,
    reservations: Option<Vec<String>>,
}

impl Parcel {
    pub fn id_for(household_id: &str, date: NaiveDate) -> String {
        format!("{household_id}-{date}")
    }

    /// The stock reservations that hold (or held) its lines, once composed.
    pub fn reservations(&self) -> Vec<String> {
        match (&self.reservations, self.date) {
            (Some(ids), _) => ids.clone(),
            (None, Some(date)) if self.status.is_some_and(|s| s != ParcelStatus::Requested) => {
                vec![Parcel::id_for(&self.household_id, date)]
            }
            _ => Vec::new(),
        }
    }
}

impl Aggregate for Parcel {
    const KIND: &'static str = "parcel";
    type Command = ParcelCommand;
    type Event = ParcelEvent;

    fn decide(&self, command: &ParcelCommand) -> Result<Vec<ParcelEvent>, Rejection> {
        match (command, self.status) {
            (ParcelCommand::Request { .. }, Some(s)) if s != ParcelStatus::Cancelled => {
                Err(Rejection::conflict("parcel_already_requested", "this household already has a parcel that day"))
            }
            (
                ParcelCommand::Request { household_id, association_id, relay_point_id, date, emergency, people, today },
                _,
            ) => {
                if date < today {
                    return Err(Rejection::validation("date_in_past", "a parcel is requested for today or later"));
                }
                Ok(vec![ParcelEvent::ParcelRequested {
                    household_id: household_id.clone(),
                    association_id: association_id.clone(),
                    relay_point_id: relay_point_id.clone(),
                    date: *date,
                    emergency: *emergency,
                    people: Some(*people),
                }])
            }
            (ParcelCommand::Cancel { .. }, None) => Err(Rejection::not_found("parcel_not_found", "no such parcel")),
            (ParcelCommand::Cancel { .. }, Some(ParcelStatus::Cancelled)) => Ok(vec![]),
            (ParcelCommand::Compose { .. }, None) => Err(Rejection::not_found("parcel_not_found", "no such parcel")),
            (ParcelCommand::Compose { .. }, Some(ParcelStatus::Cancelled)) => {
                Err(Rejection::conflict("parcel_cancelled", "this parcel was cancelled"))
            }
            (
                ParcelCommand::Compose { lines, short, needs, commune, reservations, recomposed },
                Some(ParcelStatus::Requested),
            ) => Ok(vec![ParcelEvent::ParcelComposed {
                lines: lines.clone(),
                short: short.clone(),
                needs: needs.clone(),
                commune: commune.clone(),
                reservations: Some(reservations.clone()),
                recomposed: *recomposed,
            }]),
            // Composed already (a repeated wave): nothing new.
            (ParcelCommand::Compose { .. }, Some(_)) => Ok(vec![]),
            (ParcelCommand::Advance(_), None) => Err(Rejection::not_found("parcel_not_found", "no such parcel")),
            (ParcelCommand::Advance(to), Some(from)) => {
                use ParcelStatus::*;
                if *to == from {
                    return Ok(vec![]);
                }
                let event = match (from, to) {
                    (Composed, Picked) => ParcelEvent::ParcelPicked {},
                    (Composed | Picked, Shipped) => ParcelEvent::ParcelShipped {},
                    (Shipped, AtRelay) => ParcelEvent::ParcelAtRelay {},
                    (Shipped | AtRelay, Collected) => ParcelEvent::ParcelCollected {},
                    (Shipped | AtRelay, NotCollected) => ParcelEvent::ParcelNotCollected {},
                    (NotCollected, Returned) => ParcelEvent::ParcelReturned {},
                    _ => {
                        return Err(Rejection::conflict(
                            "parcel_state",
                            format!("a parcel {from:?} cannot become {to:?}").to_lowercase(),
                        ))
                    }
                };
                Ok(vec![event])
            }
            (ParcelCommand::Redistribute { household_id, people }, Some(ParcelStatus::NotCollected)) => {
                if *household_id == self.household_id {
                    return Err(Rejection::validation(
                        "same_household",
                        "a parcel is redistributed to another household",
                    ));
                }
                Ok(vec![ParcelEvent::ParcelRedistributed { household_id: household_id.clone(), people: Some(*people) }])
            }
            (ParcelCommand::Redistribute { .. }, None) => {
                Err(Rejection::not_found("parcel_not_found", "no such parcel"))
            }
            (ParcelCommand::Redistribute { household_id, .. }, Some(ParcelStatus::Redistributed))
                if self.redistributed_to.as_deref() == Some(household_id.as_str()) =>
            {
                Ok(vec![])
            }
            (ParcelCommand::Redistribute { .. }, Some(_)) => {
                Err(Rejection::conflict("parcel_state", "only a parcel nobody collected is redistributed"))
            }
            (ParcelCommand::Cancel { reason }, Some(ParcelStatus::Requested | ParcelStatus::Composed)) => {
                if reason.chars().count() > 500 {
                    return Err(Rejection::validation("invalid_reason", "a reason is at most 500 characters"));
                }
                Ok(vec![ParcelEvent::ParcelCancelled { reason: reason.trim().to_owned() }])
            }
            (ParcelCommand::Cancel { .. }, Some(_)) => {
                Err(Rejection::conflict("parcel_state", "a parcel that left the warehouse cannot be cancelled"))
            }
        }
    }

    fn apply(&mut self, event: &ParcelEvent) {
        match event {
            ParcelEvent::ParcelRequested { household_id, association_id, relay_point_id, date, emergency, .. } => {
                self.status = Some(ParcelStatus::Requested);
                self.household_id = household_id.clone();
                self.association_id = association_id.clone();
                self.relay_point_id = relay_point_id.clone();
                self.date = Some(*date);
                self.emergency = *emergency;
            }
            ParcelEvent::ParcelCancelled { .. } => self.status = Some(ParcelStatus::Cancelled),
            ParcelEvent::ParcelComposed { reservations, .. } => {
                self.status = Some(ParcelStatus::Composed);
                self.reservations = reservations.clone();
            }
            ParcelEvent::ParcelPicked {} => self.status = Some(ParcelStatus::Picked),
            ParcelEvent::ParcelShipped {} => self.status = Some(ParcelStatus::Shipped),
            ParcelEvent::ParcelAtRelay {} => self.status = Some(ParcelStatus::AtRelay),
            ParcelEvent::ParcelCollected {} => self.status = Some(ParcelStatus::Collected),
            ParcelEvent::ParcelNotCollected {} => self.status = Some(ParcelStatus::NotCollected),
            ParcelEvent::ParcelReturned {} => self.status = Some(ParcelStatus::Returned),
            ParcelEvent::ParcelRedistributed { household_id, .. } => {
                self.status = Some(ParcelStatus::Redistributed);
                self.redistributed_to = Some(household_id.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use eventcore::testing::given;

    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    fn request(date: NaiveDate) -> ParcelCommand {
        ParcelCommand::Request {
            household_id: "hh-1".into(),
            association_id: "asso-a".into(),
            relay_point_id: "rp-a".into(),
            date,
            emergency: false,
            people: family(),
            today: day(23),
        }
    }

    fn requested() -> ParcelEvent {
        ParcelEvent::ParcelRequested {
            household_id: "hh-1".into(),
            association_id: "asso-a".into(),
            relay_point_id: "rp-a".into(),
            date: day(25),
            emergency: false,
            people: Some(family()),
        }
    }

    /// A parcel composed with nothing in it, as the first version of the event read.
    fn composed_empty() -> ParcelEvent {
        ParcelEvent::ParcelComposed {
            lines: vec![],
            short: vec![],
            needs: BTreeMap::new(),
            commune: String::new(),
            reservations: None,
            recomposed: false,
        }
    }

    fn family() -> Composition {
        Composition { adults: 2, teens: 0, children: 1, infants: 1 }
    }

    #[test]
    fn one_parcel_a_day_requested_ahead_and_cancelled_once() {
        given::<Parcel>([]).when(request(day(25))).then([requested()]);
        given::<Parcel>([requested()]).when(request(day(25))).then_rejected("parcel_already_requested");
        given::<Parcel>([]).when(request(day(22))).then_rejected("date_in_past");
        let cancel = ParcelCommand::Cancel { reason: " déménagé ".into() };
        given::<Parcel>([requested()])
            .when(cancel.clone())
            .then([ParcelEvent::ParcelCancelled { reason: "déménagé".into() }]);
        given::<Parcel>([requested(), ParcelEvent::ParcelCancelled { reason: String::new() }])
            .when(cancel.clone())
            .then([]);
        // A cancelled parcel can be asked for again.
        given::<Parcel>([requested(), ParcelEvent::ParcelCancelled { reason: String::new() }])
            .when(request(day(25)))
            .then([requested()]);
        given::<Parcel>([]).when(cancel).then_rejected("parcel_not_found");
    }

    #[test]
    fn a_requested_parcel_is_composed_once() {
        let line = Line {
            lot_id: "lot-1".into(),
            product_id: "pasta".into(),
            food_group: FoodGroup::Starches,
            units: 3,
            grams: 1500,
            need_g: 2000,
            date: Some(day(30)),
            date_kind: values::DateKind::Ddm,
        };
        let needs: BTreeMap<FoodGroup, u64> = [(FoodGroup::Starches, 2000)].into();
        let compose = ParcelCommand::Compose {
            lines: vec![line.clone()],
            short: vec![FoodGroup::Starches],
            needs: needs.clone(),
            commune: "Lyon".into(),
            reservations: vec!["hh-1-2026-11-25".into(), "hh-1-2026-11-25_2".into()],
            recomposed: true,
        };
        let composed = ParcelEvent::ParcelComposed {
            lines: vec![line],
            short: vec![FoodGroup::Starches],
            needs,
            commune: "Lyon".into(),
            reservations: Some(vec!["hh-1-2026-11-25".into(), "hh-1-2026-11-25_2".into()]),
            recomposed: true,
        };
        let state = given::<Parcel>([requested()]).when(compose.clone()).then([composed.clone()]);
        assert_eq!(state.reservations(), ["hh-1-2026-11-25", "hh-1-2026-11-25_2"]);
        // The first version of the event named no reservation: the parcel's own id.
        let legacy: ParcelEvent = serde_json::from_value(serde_json::json!({"type": "parcel_composed",
            "data": {"lines": [], "short": []}}))
        .unwrap();
        let mut state = Parcel::default();
        for e in [requested(), legacy] {
            state.apply(&e);
        }
        assert_eq!(state.reservations(), ["hh-1-2026-11-25"]);
        given::<Parcel>([requested(), composed]).when(compose.clone()).then([]);
        given::<Parcel>([requested(), ParcelEvent::ParcelCancelled { reason: String::new() }])
            .when(compose)
            .then_rejected("parcel_cancelled");
    }

    #[test]
    fn a_parcel_goes_from_the_warehouse_to_the_household_in_order() {
        let composed = composed_empty();
        let advance = |s| ParcelCommand::Advance(s);
        given::<Parcel>([requested(), composed.clone()])
            .when(advance(ParcelStatus::Picked))
            .then([ParcelEvent::ParcelPicked {}]);
        given::<Parcel>([requested(), composed.clone()])
            .when(advance(ParcelStatus::Collected))
            .then_rejected("parcel_state");
        let shipped = [requested(), composed.clone(), ParcelEvent::ParcelPicked {}, ParcelEvent::ParcelShipped {}];
        given::<Parcel>(shipped.clone()).when(advance(ParcelStatus::AtRelay)).then([ParcelEvent::ParcelAtRelay {}]);
        given::<Parcel>(shipped.clone()).when(advance(ParcelStatus::Collected)).then([ParcelEvent::ParcelCollected {}]);
        given::<Parcel>(shipped.clone())
            .when(advance(ParcelStatus::NotCollected))
            .then([ParcelEvent::ParcelNotCollected {}]);
        given::<Parcel>(shipped.clone()).when(advance(ParcelStatus::Shipped)).then([]);
        given::<Parcel>(shipped).when(ParcelCommand::Cancel { reason: String::new() }).then_rejected("parcel_state");
        given::<Parcel>([requested()]).when(advance(ParcelStatus::Shipped)).then_rejected("parcel_state");
    }

    #[test]
    fn a_parcel_nobody_collected_goes_back_to_the_warehouse_or_to_another_household() {
        let composed = composed_empty();
        let shipped = [requested(), composed, ParcelEvent::ParcelShipped {}];
        let mut missed = shipped.to_vec();
        missed.push(ParcelEvent::ParcelNotCollected {});
        let redistribute = |h: &str| ParcelCommand::Redistribute { household_id: h.into(), people: family() };
        given::<Parcel>(missed.clone())
            .when(ParcelCommand::Advance(ParcelStatus::Returned))
            .then([ParcelEvent::ParcelReturned {}]);
        given::<Parcel>(shipped.clone())
            .when(ParcelCommand::Advance(ParcelStatus::Returned))
            .then_rejected("parcel_state");
        let state = given::<Parcel>(missed.clone())
            .when(redistribute("hh-2"))
            .then([ParcelEvent::ParcelRedistributed { household_id: "hh-2".into(), people: Some(family()) }]);
        assert_eq!(state.redistributed_to.as_deref(), Some("hh-2"));
        given::<Parcel>(missed.clone()).when(redistribute("hh-1")).then_rejected("same_household");
        given::<Parcel>(shipped).when(redistribute("hh-2")).then_rejected("parcel_state");
        let mut given_away = missed.clone();
        given_away.push(ParcelEvent::ParcelRedistributed { household_id: "hh-2".into(), people: Some(family()) });
        given::<Parcel>(given_away.clone()).when(redistribute("hh-2")).then([]);
        given::<Parcel>(given_away.clone()).when(redistribute("hh-3")).then_rejected("parcel_state");
        given::<Parcel>(given_away).when(ParcelCommand::Advance(ParcelStatus::Returned)).then_rejected("parcel_state");
    }
}
