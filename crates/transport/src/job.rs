//! A day's work for the fleet: pickups at donors (supermarket collections, farm produce) and
//! deliveries to relay points (the parcels shipped for them, grouped).

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveTime};
use eventcore::{Aggregate, DomainEvent, Rejection};
use serde::{Deserialize, Serialize};
use values::limits::{too_long, MAX_KG, MAX_TEXT};
use values::GeoPoint;

/// Where and when a job is done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stop {
    pub date: NaiveDate,
    /// The site whose vehicles do it.
    pub site_id: String,
    /// Where to go; a place with none recorded cannot be routed (the plan says so).
    pub position: Option<GeoPoint>,
    pub address: String,
    /// Who to ask for there (a name and a phone, given by the donor or the association).
    pub contact: String,
    /// The stop starts within [opens, closes].
    pub opens: NaiveTime,
    pub closes: NaiveTime,
    pub service_minutes: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobKind {
    /// Expected kilograms to collect, and how much of it is chilled or frozen.
    Pickup { donor_id: String, kg: u32, chilled_kg: u32 },
    /// Parcels to hand over at a relay point.
    Delivery { relay_point_id: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobCommand {
    Schedule {
        stop: Stop,
        kind: JobKind,
    },
    /// A shipped parcel joins its relay point's delivery (idempotent per parcel).
    AddParcel {
        parcel_id: String,
        grams: u64,
        chilled_grams: u64,
        /// Chilled and frozen lots in it: flagged if the cold chain breaks on the way.
        chilled_lots: Vec<String>,
    },
    Cancel {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum JobEvent {
    JobScheduled {
        stop: Stop,
        kind: JobKind,
    },
    ParcelAdded {
        parcel_id: String,
        grams: u64,
        chilled_grams: u64,
        #[serde(default)]
        chilled_lots: Vec<String>,
    },
    JobCancelled {
        reason: String,
    },
}

impl DomainEvent for JobEvent {}

/// Serialisable so that the read model keeps it between events and folds exactly as decisions do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub stop: Option<Stop>,
    pub kind: Option<JobKind>,
    /// For a delivery: parcel → (grams, chilled grams).
    pub parcels: BTreeMap<String, (u64, u64)>,
    /// Chilled and frozen lots its parcels carry.
    pub chilled_lots: std::collections::BTreeSet<String>,
    pub cancelled: bool,
}

impl Job {
    /// What the vehicle carries for it, grams: (total, chilled). Deliveries leave the depot
    /// loaded; pickups come back loaded.
    pub fn load(&self) -> (u64, u64) {
        match &self.kind {
            Some(JobKind::Pickup { kg, chilled_kg, .. }) => (u64::from(*kg) * 1000, u64::from(*chilled_kg) * 1000),
            Some(JobKind::Delivery { .. }) => self
                .parcels
                .values()
                .fold((0u64, 0u64), |(g, c), (pg, pc)| (g.saturating_add(*pg), c.saturating_add(*pc))),
            None => (0, 0),
        }
    }
}

impl Aggregate for Job {
    const KIND: &'static str = "job";
    type Command = JobCommand;
    type Event = JobEvent;

    fn decide(&self, command: &JobCommand) -> Result<Vec<JobEvent>, Rejection> {
        match command {
            JobCommand::Schedule { stop, kind } => {
                if let Some(existing) = &self.stop {
                    return if existing == stop && self.kind.as_ref() == Some(kind) {
                        Ok(vec![])
                    } else {
                        Err(Rejection::conflict("job_exists", "this job is already scheduled otherwise"))
                    };
                }
                if stop.opens >= stop.closes {
                    return Err(Rejection::validation("invalid_window", "a stop's window closes after it opens"));
                }
                if stop.service_minutes > 240 {
                    return Err(Rejection::validation("invalid_service_time", "a stop takes at most 4 hours"));
                }
                if too_long(&stop.address, MAX_TEXT) || too_long(&stop.contact, MAX_TEXT) {
                    return Err(Rejection::validation(
                        "invalid_address",
                        "an address or a contact is at most 500 characters",
                    ));
                }
                let party = match kind {
                    JobKind::Pickup { donor_id, .. } => donor_id,
                    JobKind::Delivery { relay_point_id } => relay_point_id,
                };
                for (id, code) in [(&stop.site_id, "invalid_site_id"), (party, "invalid_party_id")] {
                    if id.parse::<eventcore::AggregateId>().is_err() {
                        return Err(Rejection::validation(code, format!("{id:?} is not an id")));
                    }
                }
                if let JobKind::Pickup { kg, chilled_kg, .. } = kind {
                    if *kg == 0 || *kg > MAX_KG || chilled_kg > kg {
                        return Err(Rejection::validation(
                            "invalid_quantity",
                            "a pickup expects some kilograms, the chilled ones among them",
                        ));
                    }
                }
                Ok(vec![JobEvent::JobScheduled { stop: stop.clone(), kind: kind.clone() }])
            }
            _ if self.stop.is_none() => Err(Rejection::not_found("job_not_found", "no such job")),
            JobCommand::AddParcel { .. } if self.cancelled => {
                Err(Rejection::conflict("job_cancelled", "this delivery was cancelled"))
            }
            JobCommand::AddParcel { parcel_id, grams, chilled_grams, chilled_lots } => {
                if !matches!(self.kind, Some(JobKind::Delivery { .. })) {
                    return Err(Rejection::validation("not_a_delivery", "parcels join deliveries"));
                }
                if chilled_grams > grams {
                    return Err(Rejection::validation("invalid_quantity", "chilled grams are part of the grams"));
                }
                if self.parcels.contains_key(parcel_id) {
                    return Ok(vec![]);
                }
                Ok(vec![JobEvent::ParcelAdded {
                    parcel_id: parcel_id.clone(),
                    grams: *grams,
                    chilled_grams: *chilled_grams,
                    chilled_lots: chilled_lots.clone(),
                }])
            }
            JobCommand::Cancel { .. } if self.cancelled => Ok(vec![]),
            JobCommand::Cancel { reason } if too_long(reason, MAX_TEXT) => {
                Err(Rejection::validation("invalid_reason", "a reason is at most 500 characters"))
            }
            JobCommand::Cancel { reason } => Ok(vec![JobEvent::JobCancelled { reason: reason.trim().to_owned() }]),
        }
    }

    fn apply(&mut self, event: &JobEvent) {
        match event {
            JobEvent::JobScheduled { stop, kind } => {
                self.stop = Some(stop.clone());
                self.kind = Some(kind.clone());
            }
            JobEvent::ParcelAdded { parcel_id, grams, chilled_grams, chilled_lots } => {
                self.parcels.insert(parcel_id.clone(), (*grams, *chilled_grams));
                self.chilled_lots.extend(chilled_lots.iter().cloned());
            }
            JobEvent::JobCancelled { .. } => self.cancelled = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use eventcore::testing::given;

    use super::*;

    fn stop() -> Stop {
        Stop {
            date: NaiveDate::from_ymd_opt(2026, 11, 26).unwrap(),
            site_id: "gerland".into(),
            position: GeoPoint::new(45.7578, 4.832).ok(),
            address: "Place Bellecour".into(),
            contact: "Mme Dupont 04 78 00 00 00".into(),
            opens: NaiveTime::from_hms_opt(14, 0, 0).unwrap(),
            closes: NaiveTime::from_hms_opt(17, 0, 0).unwrap(),
            service_minutes: 15,
        }
    }

    fn delivery() -> JobEvent {
        JobEvent::JobScheduled { stop: stop(), kind: JobKind::Delivery { relay_point_id: "rp-a".into() } }
    }

    #[test]
    fn a_job_is_scheduled_once_with_a_window_that_makes_sense() {
        let kind = JobKind::Pickup { donor_id: "carrefour".into(), kg: 300, chilled_kg: 80 };
        let schedule = JobCommand::Schedule { stop: stop(), kind: kind.clone() };
        let scheduled = JobEvent::JobScheduled { stop: stop(), kind: kind.clone() };
        let state = given::<Job>([]).when(schedule.clone()).then([scheduled.clone()]);
        assert_eq!(state.load(), (300_000, 80_000));
        given::<Job>([scheduled.clone()]).when(schedule).then([]);
        given::<Job>([scheduled])
            .when(JobCommand::Schedule { stop: Stop { service_minutes: 30, ..stop() }, kind: kind.clone() })
            .then_rejected("job_exists");
        let backwards = Stop { opens: stop().closes, closes: stop().opens, ..stop() };
        given::<Job>([])
            .when(JobCommand::Schedule { stop: backwards, kind: kind.clone() })
            .then_rejected("invalid_window");
        let odd = JobKind::Pickup { donor_id: "x".into(), kg: 10, chilled_kg: 20 };
        given::<Job>([]).when(JobCommand::Schedule { stop: stop(), kind: odd }).then_rejected("invalid_quantity");
        // At the edges: u32::MAX kilograms, ids that would be NATS wildcards, an address of
        // 10,000 characters.
        let heavy = JobKind::Pickup { donor_id: "x".into(), kg: u32::MAX, chilled_kg: 0 };
        given::<Job>([]).when(JobCommand::Schedule { stop: stop(), kind: heavy }).then_rejected("invalid_quantity");
        let at_star = Stop { site_id: "*".into(), ..stop() };
        given::<Job>([])
            .when(JobCommand::Schedule { stop: at_star, kind: kind.clone() })
            .then_rejected("invalid_site_id");
        let to_dots = JobKind::Delivery { relay_point_id: "a.b".into() };
        given::<Job>([]).when(JobCommand::Schedule { stop: stop(), kind: to_dots }).then_rejected("invalid_party_id");
        let long = Stop { address: "rue ".repeat(2_500), ..stop() };
        given::<Job>([]).when(JobCommand::Schedule { stop: long, kind }).then_rejected("invalid_address");
    }

    #[test]
    fn shipped_parcels_join_their_relay_point_delivery_once() {
        let lots = |c: u64| if c > 0 { vec!["lot-yoghurt".to_owned()] } else { vec![] };
        let add = |p: &str, g: u64, c: u64| JobCommand::AddParcel {
            parcel_id: p.into(),
            grams: g,
            chilled_grams: c,
            chilled_lots: lots(c),
        };
        let added = JobEvent::ParcelAdded {
            parcel_id: "p1".into(),
            grams: 9_000,
            chilled_grams: 2_000,
            chilled_lots: lots(2_000),
        };
        given::<Job>([delivery()]).when(add("p1", 9_000, 2_000)).then([added.clone()]);
        let state = given::<Job>([delivery(), added.clone()]).when(add("p1", 9_000, 2_000)).then([]);
        assert_eq!((state.load(), state.chilled_lots.len()), ((9_000, 2_000), 1));
        let state = given::<Job>([delivery(), added]).when(add("p2", 6_000, 0)).then([JobEvent::ParcelAdded {
            parcel_id: "p2".into(),
            grams: 6_000,
            chilled_grams: 0,
            chilled_lots: vec![],
        }]);
        assert_eq!(state.load(), (15_000, 2_000));
        given::<Job>([]).when(add("p1", 1, 0)).then_rejected("job_not_found");
        given::<Job>([delivery(), JobEvent::JobCancelled { reason: String::new() }])
            .when(add("p3", 1, 0))
            .then_rejected("job_cancelled");
        let pickup = JobEvent::JobScheduled {
            stop: stop(),
            kind: JobKind::Pickup { donor_id: "d".into(), kg: 10, chilled_kg: 0 },
        };
        given::<Job>([pickup]).when(add("p1", 1, 0)).then_rejected("not_a_delivery");
    }
}
