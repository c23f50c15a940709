//! A site's route plan for a day, and what its drivers do on the road.
//!
//! The plan is one aggregate per site and date. A plan (or a re-plan) replaces the routes that
//! have not started; a route on the road keeps its stops, and a stop done (completed or failed)
//! is never moved. Drivers' actions carry the time they happened on the device (`at`), so work
//! recorded offline and sent later keeps its real time.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use eventcore::{Aggregate, DomainEvent, Rejection};
use serde::{Deserialize, Serialize};
use values::GeoPoint;

/// Whether the vehicle loads (pickup at a donor) or unloads (delivery at a relay point) there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopAction {
    Load,
    Unload,
}

/// One stop of a planned route, with what the driver needs to know there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedStop {
    pub job_id: String,
    pub action: StopAction,
    /// The donor (load) or relay point (unload).
    pub party_id: String,
    pub address: String,
    pub position: GeoPoint,
    pub contact: String,
    pub opens: NaiveTime,
    pub closes: NaiveTime,
    /// When the planner expects the driver there.
    pub arrival: NaiveTime,
    pub service_minutes: u32,
    /// Expected (load) or carried (unload) grams, and the chilled or frozen ones among them.
    pub grams: u64,
    pub chilled_grams: u64,
    /// Parcels to hand over (unload).
    pub parcels: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRoute {
    pub route_id: String,
    pub vehicle_id: String,
    pub driver_id: String,
    /// Whether the vehicle has a cold box.
    pub refrigerated: bool,
    pub departure: NaiveTime,
    pub back: NaiveTime,
    pub metres: u64,
    pub stops: Vec<PlannedStop>,
}

/// A job the plan could not serve, and why (`no_refrigerated_vehicle`, `capacity`,
/// `window_unreachable`, `fleet_full`, `no_vehicle`, `no_position`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unplanned {
    pub job_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PlanCommand {
    /// Plans (or re-plans) the routes that have not started.
    Make {
        date: NaiveDate,
        site_id: String,
        routes: Vec<PlannedRoute>,
        unplanned: Vec<Unplanned>,
    },
    StartRoute {
        route_id: String,
        at: DateTime<Utc>,
    },
    Arrive {
        route_id: String,
        job_id: String,
        at: DateTime<Utc>,
    },
    /// Done: actual grams (less than planned for a partial pickup; none: as planned).
    Complete {
        route_id: String,
        job_id: String,
        at: DateTime<Utc>,
        grams: Option<u64>,
        chilled_grams: Option<u64>,
        /// Longest time chilled goods may spend out of refrigeration (the collective's rule).
        cold_limit_minutes: u32,
    },
    Fail {
        route_id: String,
        job_id: String,
        at: DateTime<Utc>,
        reason: String,
    },
    EndRoute {
        route_id: String,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum PlanEvent {
    /// The routes not started were replaced by `routes` (`revision` counts plans from 1).
    PlanMade {
        revision: u32,
        date: NaiveDate,
        site_id: String,
        routes: Vec<PlannedRoute>,
        unplanned: Vec<Unplanned>,
        /// Routes of the previous revision that this one replaces.
        replaced: Vec<String>,
    },
    RouteStarted {
        route_id: String,
        at: DateTime<Utc>,
    },
    StopArrived {
        route_id: String,
        job_id: String,
        at: DateTime<Utc>,
    },
    StopCompleted {
        route_id: String,
        job_id: String,
        at: DateTime<Utc>,
        grams: u64,
        chilled_grams: u64,
        /// Fewer grams than planned were loaded.
        partial: bool,
    },
    StopFailed {
        route_id: String,
        job_id: String,
        at: DateTime<Utc>,
        reason: String,
    },
    /// Chilled goods spent longer than the rule out of refrigeration at this stop.
    ColdChainExceeded {
        route_id: String,
        job_id: String,
        minutes: u32,
        limit_minutes: u32,
    },
    RouteEnded {
        route_id: String,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for PlanEvent {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopStatus {
    Planned,
    Arrived,
    Completed,
    Failed,
}

/// What happened at a stop so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopState {
    pub status: StopStatus,
    pub arrived_at: Option<DateTime<Utc>>,
    /// When it was completed or failed.
    pub done_at: Option<DateTime<Utc>>,
    /// Grams actually loaded or unloaded.
    pub grams: Option<u64>,
    pub partial: bool,
    pub fail_reason: Option<String>,
    /// Minutes chilled goods spent out of the cold, when over the rule.
    pub cold_chain_minutes: Option<u32>,
}

impl StopState {
    pub fn planned() -> StopState {
        StopState {
            status: StopStatus::Planned,
            arrived_at: None,
            done_at: None,
            grams: None,
            partial: false,
            fail_reason: None,
            cold_chain_minutes: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteState {
    pub route: PlannedRoute,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Progress per job.
    pub stops: BTreeMap<String, StopState>,
}

impl RouteState {
    /// On the road: started and not ended. Its stops stay with it at a re-plan.
    pub fn on_the_road(&self) -> bool {
        self.started_at.is_some() && self.ended_at.is_none()
    }
}

/// Serialisable so that the read model keeps it between events and folds exactly as decisions do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub date: Option<NaiveDate>,
    pub site_id: String,
    pub revision: u32,
    pub routes: BTreeMap<String, RouteState>,
    pub unplanned: Vec<Unplanned>,
}

impl Plan {
    /// Jobs completed or failed: no re-plan moves them.
    pub fn done_jobs(&self) -> BTreeSet<&str> {
        self.routes
            .values()
            .flat_map(|r| r.stops.iter())
            .filter(|(_, s)| matches!(s.status, StopStatus::Completed | StopStatus::Failed))
            .map(|(job, _)| job.as_str())
            .collect()
    }

    /// Routes on the road: their stops stay with them.
    pub fn routes_on_the_road(&self) -> impl Iterator<Item = &RouteState> {
        self.routes.values().filter(|r| r.on_the_road())
    }

    fn route(&self, route_id: &str) -> Result<&RouteState, Rejection> {
        self.routes
            .get(route_id)
            .ok_or_else(|| Rejection::not_found("route_not_found", format!("no route {route_id} in this plan")))
    }

    fn stop<'a>(&'a self, route_id: &str, job_id: &str) -> Result<(&'a RouteState, &'a StopState), Rejection> {
        let route = self.route(route_id)?;
        let stop = route
            .stops
            .get(job_id)
            .ok_or_else(|| Rejection::not_found("stop_not_found", format!("no stop {job_id} on route {route_id}")))?;
        Ok((route, stop))
    }

    fn stop_mut(&mut self, route_id: &str, job_id: &str) -> Option<&mut StopState> {
        self.routes.get_mut(route_id).and_then(|r| r.stops.get_mut(job_id))
    }

    /// Starts the route first when a driver records a stop without having started it.
    fn start_if_needed(route: &RouteState, at: DateTime<Utc>) -> Vec<PlanEvent> {
        match route.started_at {
            None => vec![PlanEvent::RouteStarted { route_id: route.route.route_id.clone(), at }],
            Some(_) => vec![],
        }
    }

    fn make(
        &self,
        date: NaiveDate,
        site_id: &str,
        routes: &[PlannedRoute],
        unplanned: &[Unplanned],
    ) -> Result<Vec<PlanEvent>, Rejection> {
        if self.date.is_some_and(|d| d != date) || (self.date.is_some() && self.site_id != site_id) {
            return Err(Rejection::validation("plan_mismatch", "a plan is for one site and one date"));
        }
        let kept: BTreeSet<&str> =
            self.routes.values().filter(|r| r.started_at.is_some()).map(|r| r.route.route_id.as_str()).collect();
        let frozen: BTreeSet<&str> = self
            .routes_on_the_road()
            .flat_map(|r| r.route.stops.iter().map(|s| s.job_id.as_str()))
            .chain(self.done_jobs())
            .collect();
        let mut seen = BTreeSet::new();
        for route in routes {
            if kept.contains(route.route_id.as_str()) || !seen.insert(route.route_id.as_str()) {
                return Err(Rejection::validation("route_id_taken", format!("route {} exists", route.route_id)));
            }
            if route.stops.is_empty() {
                return Err(Rejection::validation("empty_route", "a route has at least one stop"));
            }
            for stop in &route.stops {
                if frozen.contains(stop.job_id.as_str()) {
                    return Err(Rejection::conflict(
                        "stop_already_underway",
                        format!("job {} is done or on a route on the road", stop.job_id),
                    ));
                }
                if !seen.insert(stop.job_id.as_str()) {
                    return Err(Rejection::validation("job_twice", format!("job {} is planned twice", stop.job_id)));
                }
            }
        }
        let replaced = self.routes.values().filter(|r| r.started_at.is_none()).map(|r| r.route.route_id.clone());
        Ok(vec![PlanEvent::PlanMade {
            revision: self.revision + 1,
            date,
            site_id: site_id.to_owned(),
            routes: routes.to_vec(),
            unplanned: unplanned.to_vec(),
            replaced: replaced.collect(),
        }])
    }

    fn complete(
        &self,
        route_id: &str,
        job_id: &str,
        at: DateTime<Utc>,
        actual: (Option<u64>, Option<u64>),
        cold_limit_minutes: u32,
    ) -> Result<Vec<PlanEvent>, Rejection> {
        let (route, stop) = self.stop(route_id, job_id)?;
        match stop.status {
            StopStatus::Completed => return Ok(vec![]),
            StopStatus::Failed => {
                return Err(Rejection::conflict("stop_failed", "this stop was recorded as failed"));
            }
            StopStatus::Planned | StopStatus::Arrived => {}
        }
        let planned = route.route.stops.iter().find(|s| s.job_id == job_id).expect("a route's stops are its own");
        let grams = actual.0.unwrap_or(planned.grams);
        let chilled_grams = actual.1.unwrap_or(if grams < planned.grams {
            // In u128: a product of two u64 figures; the quotient is below planned.chilled_grams.
            (u128::from(planned.chilled_grams) * u128::from(grams) / u128::from(planned.grams.max(1))) as u64
        } else {
            planned.chilled_grams
        });
        if chilled_grams > grams {
            return Err(Rejection::validation("invalid_quantity", "chilled kilograms are part of the kilograms"));
        }
        if planned.action == StopAction::Unload && grams != planned.grams {
            return Err(Rejection::validation(
                "invalid_quantity",
                "a delivery hands over its parcels whole: leave the kilograms out",
            ));
        }
        let mut events = Self::start_if_needed(route, at);
        // Chilled goods are out of the cold while they are (un)loaded, from arrival to now; on a
        // vehicle without a cold box a delivery's were out since the route left.
        let out_since = match (route.route.refrigerated, planned.action) {
            (false, StopAction::Unload) => route.started_at.unwrap_or(at),
            _ => stop.arrived_at.unwrap_or(at),
        };
        let minutes = u32::try_from((at - out_since).num_minutes().max(0)).unwrap_or(u32::MAX);
        let warm_pickup = !route.route.refrigerated && planned.action == StopAction::Load;
        events.push(PlanEvent::StopCompleted {
            route_id: route_id.to_owned(),
            job_id: job_id.to_owned(),
            at,
            grams,
            chilled_grams,
            partial: grams < planned.grams,
        });
        // Chilled goods loaded on a vehicle without a cold box ride warm until the warehouse.
        if chilled_grams > 0 && (minutes > cold_limit_minutes || warm_pickup) {
            events.push(PlanEvent::ColdChainExceeded {
                route_id: route_id.to_owned(),
                job_id: job_id.to_owned(),
                minutes,
                limit_minutes: cold_limit_minutes,
            });
        }
        Ok(events)
    }
}

impl Aggregate for Plan {
    const KIND: &'static str = "plan";
    type Command = PlanCommand;
    type Event = PlanEvent;

    fn decide(&self, command: &PlanCommand) -> Result<Vec<PlanEvent>, Rejection> {
        if let PlanCommand::Make { date, site_id, routes, unplanned } = command {
            return self.make(*date, site_id, routes, unplanned);
        }
        if self.date.is_none() {
            return Err(Rejection::not_found("plan_not_found", "no plan for this site and date"));
        }
        match command {
            PlanCommand::Make { .. } => unreachable!("handled above"),
            PlanCommand::StartRoute { route_id, at } => {
                let route = self.route(route_id)?;
                if route.ended_at.is_some() {
                    return Err(Rejection::conflict("route_ended", "this route has ended"));
                }
                Ok(Self::start_if_needed(route, *at))
            }
            PlanCommand::Arrive { route_id, job_id, at } => {
                let (route, stop) = self.stop(route_id, job_id)?;
                if stop.status != StopStatus::Planned {
                    return Ok(vec![]);
                }
                let mut events = Self::start_if_needed(route, *at);
                events.push(PlanEvent::StopArrived { route_id: route_id.clone(), job_id: job_id.clone(), at: *at });
                Ok(events)
            }
            PlanCommand::Complete { route_id, job_id, at, grams, chilled_grams, cold_limit_minutes } => {
                self.complete(route_id, job_id, *at, (*grams, *chilled_grams), *cold_limit_minutes)
            }
            PlanCommand::Fail { route_id, job_id, at, reason } => {
                let reason = reason.trim();
                if reason.is_empty() {
                    return Err(Rejection::validation("reason_required", "say why the stop failed"));
                }
                if values::limits::too_long(reason, values::limits::MAX_TEXT) {
                    return Err(Rejection::validation("invalid_reason", "a reason is at most 500 characters"));
                }
                let (route, stop) = self.stop(route_id, job_id)?;
                match stop.status {
                    StopStatus::Failed => Ok(vec![]),
                    StopStatus::Completed => {
                        Err(Rejection::conflict("stop_completed", "this stop was recorded as completed"))
                    }
                    StopStatus::Planned | StopStatus::Arrived => {
                        let mut events = Self::start_if_needed(route, *at);
                        events.push(PlanEvent::StopFailed {
                            route_id: route_id.clone(),
                            job_id: job_id.clone(),
                            at: *at,
                            reason: reason.to_owned(),
                        });
                        Ok(events)
                    }
                }
            }
            PlanCommand::EndRoute { route_id, at } => {
                let route = self.route(route_id)?;
                if route.ended_at.is_some() {
                    return Ok(vec![]);
                }
                let mut events = Self::start_if_needed(route, *at);
                events.push(PlanEvent::RouteEnded { route_id: route_id.clone(), at: *at });
                Ok(events)
            }
        }
    }

    fn apply(&mut self, event: &PlanEvent) {
        match event {
            PlanEvent::PlanMade { revision, date, site_id, routes, unplanned, replaced } => {
                self.revision = *revision;
                self.date = Some(*date);
                self.site_id = site_id.clone();
                for id in replaced {
                    self.routes.remove(id);
                }
                for route in routes {
                    let stops = route.stops.iter().map(|s| (s.job_id.clone(), StopState::planned())).collect();
                    self.routes.insert(
                        route.route_id.clone(),
                        RouteState { route: route.clone(), started_at: None, ended_at: None, stops },
                    );
                }
                self.unplanned = unplanned.clone();
            }
            PlanEvent::RouteStarted { route_id, at } => {
                if let Some(r) = self.routes.get_mut(route_id) {
                    r.started_at = Some(*at);
                }
            }
            PlanEvent::RouteEnded { route_id, at } => {
                if let Some(r) = self.routes.get_mut(route_id) {
                    r.ended_at = Some(*at);
                }
            }
            PlanEvent::StopArrived { route_id, job_id, at } => {
                if let Some(s) = self.stop_mut(route_id, job_id) {
                    s.status = StopStatus::Arrived;
                    s.arrived_at = Some(*at);
                }
            }
            PlanEvent::StopCompleted { route_id, job_id, at, grams, partial, .. } => {
                if let Some(s) = self.stop_mut(route_id, job_id) {
                    s.status = StopStatus::Completed;
                    s.done_at = Some(*at);
                    s.grams = Some(*grams);
                    s.partial = *partial;
                }
            }
            PlanEvent::StopFailed { route_id, job_id, at, reason } => {
                if let Some(s) = self.stop_mut(route_id, job_id) {
                    s.status = StopStatus::Failed;
                    s.done_at = Some(*at);
                    s.fail_reason = Some(reason.clone());
                }
            }
            PlanEvent::ColdChainExceeded { route_id, job_id, minutes, .. } => {
                if let Some(s) = self.stop_mut(route_id, job_id) {
                    s.cold_chain_minutes = Some(*minutes);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use eventcore::testing::given;

    use super::*;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
    }

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, h, m, 0).unwrap()
    }

    fn hm(h: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, 0, 0).unwrap()
    }

    fn stop(job: &str, action: StopAction, grams: u64, chilled: u64) -> PlannedStop {
        PlannedStop {
            job_id: job.into(),
            action,
            party_id: "party".into(),
            address: "1 rue de la Paix".into(),
            position: GeoPoint::new(45.75, 4.83).unwrap(),
            contact: "Mme Martin".into(),
            opens: hm(9),
            closes: hm(12),
            arrival: hm(9),
            service_minutes: 10,
            grams,
            chilled_grams: chilled,
            parcels: u32::from(action == StopAction::Unload),
        }
    }

    fn route(id: &str, refrigerated: bool, stops: Vec<PlannedStop>) -> PlannedRoute {
        PlannedRoute {
            route_id: id.into(),
            vehicle_id: "v1".into(),
            driver_id: "d1".into(),
            refrigerated,
            departure: hm(8),
            back: hm(13),
            metres: 20_000,
            stops,
        }
    }

    fn made(revision: u32, routes: Vec<PlannedRoute>, replaced: Vec<&str>) -> PlanEvent {
        PlanEvent::PlanMade {
            revision,
            date: day(),
            site_id: "gerland".into(),
            routes,
            unplanned: vec![],
            replaced: replaced.into_iter().map(String::from).collect(),
        }
    }

    fn first_plan() -> PlanEvent {
        made(
            1,
            vec![
                route(
                    "1-1",
                    true,
                    vec![
                        stop("pickup", StopAction::Load, 100_000, 40_000),
                        stop("deliv", StopAction::Unload, 9_000, 2_000),
                    ],
                ),
                route("1-2", false, vec![stop("other", StopAction::Unload, 5_000, 0)]),
            ],
            vec![],
        )
    }

    fn completed(job: &str, at: DateTime<Utc>, grams: u64, chilled_grams: u64, partial: bool) -> PlanEvent {
        PlanEvent::StopCompleted { route_id: "1-1".into(), job_id: job.into(), at, grams, chilled_grams, partial }
    }

    fn make(routes: Vec<PlannedRoute>) -> PlanCommand {
        PlanCommand::Make { date: day(), site_id: "gerland".into(), routes, unplanned: vec![] }
    }

    fn complete(job: &str, at: DateTime<Utc>, grams: Option<u64>) -> PlanCommand {
        PlanCommand::Complete {
            route_id: "1-1".into(),
            job_id: job.into(),
            at,
            grams,
            chilled_grams: None,
            cold_limit_minutes: 30,
        }
    }

    #[test]
    fn a_replan_replaces_routes_not_started_and_never_moves_a_stop_underway() {
        let started = PlanEvent::RouteStarted { route_id: "1-1".into(), at: t(8, 0) };
        let new = route("2-1", false, vec![stop("other", StopAction::Unload, 5_000, 0)]);
        let state = given::<Plan>([first_plan(), started.clone()]).when(make(vec![new.clone()])).then([made(
            2,
            vec![new.clone()],
            vec!["1-2"],
        )]);
        assert_eq!(state.routes.keys().collect::<Vec<_>>(), ["1-1", "2-1"], "the route on the road stays");
        let moved = route("2-1", false, vec![stop("deliv", StopAction::Unload, 9_000, 2_000)]);
        given::<Plan>([first_plan(), started.clone()]).when(make(vec![moved])).then_rejected("stop_already_underway");
        given::<Plan>([first_plan(), started])
            .when(make(vec![route("1-1", false, vec![stop("x", StopAction::Load, 1, 0)])]))
            .then_rejected("route_id_taken");
        let twice = route("1-1", false, vec![stop("x", StopAction::Load, 1, 0), stop("x", StopAction::Load, 1, 0)]);
        given::<Plan>([]).when(make(vec![twice])).then_rejected("job_twice");
        let other_day = PlanCommand::Make {
            date: day().succ_opt().unwrap(),
            site_id: "gerland".into(),
            routes: vec![],
            unplanned: vec![],
        };
        given::<Plan>([first_plan()]).when(other_day).then_rejected("plan_mismatch");
    }

    #[test]
    fn a_stop_recorded_without_starting_starts_the_route_at_that_time() {
        let arrive = PlanCommand::Arrive { route_id: "1-1".into(), job_id: "pickup".into(), at: t(9, 0) };
        let state = given::<Plan>([first_plan()]).when(arrive.clone()).then([
            PlanEvent::RouteStarted { route_id: "1-1".into(), at: t(9, 0) },
            PlanEvent::StopArrived { route_id: "1-1".into(), job_id: "pickup".into(), at: t(9, 0) },
        ]);
        assert!(state.routes["1-1"].on_the_road());
        given::<Plan>([]).when(arrive).then_rejected("plan_not_found");
        given::<Plan>([first_plan()])
            .when(PlanCommand::Arrive { route_id: "1-9".into(), job_id: "pickup".into(), at: t(9, 0) })
            .then_rejected("route_not_found");
    }

    #[test]
    fn a_partial_pickup_records_what_was_loaded_and_its_chilled_share() {
        let started = PlanEvent::RouteStarted { route_id: "1-1".into(), at: t(8, 0) };
        let arrived = PlanEvent::StopArrived { route_id: "1-1".into(), job_id: "pickup".into(), at: t(9, 0) };
        let state = given::<Plan>([first_plan(), started.clone(), arrived.clone()])
            .when(complete("pickup", t(9, 10), Some(50_000)))
            .then([completed("pickup", t(9, 10), 50_000, 20_000, true)]);
        assert_eq!(state.done_jobs(), ["pickup"].into());
        let progress = &state.routes["1-1"].stops["pickup"];
        assert_eq!((progress.grams, progress.partial, progress.done_at), (Some(50_000), true, Some(t(9, 10))));
        let done = completed("pickup", t(9, 10), 50_000, 20_000, true);
        given::<Plan>([first_plan(), started.clone(), arrived.clone(), done.clone()])
            .when(complete("pickup", t(9, 20), None))
            .then([]);
        given::<Plan>([first_plan(), started.clone(), arrived, done])
            .when(PlanCommand::Fail {
                route_id: "1-1".into(),
                job_id: "pickup".into(),
                at: t(9, 20),
                reason: "x".into(),
            })
            .then_rejected("stop_completed");
        given::<Plan>([first_plan(), started])
            .when(complete("deliv", t(9, 20), Some(1_000)))
            .then_rejected("invalid_quantity");
    }

    #[test]
    fn chilled_goods_out_of_the_cold_too_long_are_flagged() {
        let started = PlanEvent::RouteStarted { route_id: "1-1".into(), at: t(8, 0) };
        let arrived = PlanEvent::StopArrived { route_id: "1-1".into(), job_id: "deliv".into(), at: t(10, 0) };
        given::<Plan>([first_plan(), started.clone(), arrived.clone()]).when(complete("deliv", t(10, 45), None)).then(
            [
                completed("deliv", t(10, 45), 9_000, 2_000, false),
                PlanEvent::ColdChainExceeded {
                    route_id: "1-1".into(),
                    job_id: "deliv".into(),
                    minutes: 45,
                    limit_minutes: 30,
                },
            ],
        );
        given::<Plan>([first_plan(), started, arrived]).when(complete("deliv", t(10, 20), None)).then([completed(
            "deliv",
            t(10, 20),
            9_000,
            2_000,
            false,
        )]);
    }

    #[test]
    fn a_failed_stop_says_why_and_stays_failed() {
        let fail = |reason: &str| PlanCommand::Fail {
            route_id: "1-1".into(),
            job_id: "pickup".into(),
            at: t(9, 0),
            reason: reason.into(),
        };
        let failed = PlanEvent::StopFailed {
            route_id: "1-1".into(),
            job_id: "pickup".into(),
            at: t(9, 0),
            reason: "closed".into(),
        };
        let started = PlanEvent::RouteStarted { route_id: "1-1".into(), at: t(8, 0) };
        given::<Plan>([first_plan(), started.clone()]).when(fail(" closed ")).then([failed.clone()]);
        given::<Plan>([first_plan(), started.clone()]).when(fail("  ")).then_rejected("reason_required");
        given::<Plan>([first_plan(), started.clone()])
            .when(fail(&"fermé ".repeat(2_000)))
            .then_rejected("invalid_reason");
        given::<Plan>([first_plan(), started.clone(), failed.clone()]).when(fail("closed")).then([]);
        given::<Plan>([first_plan(), started, failed])
            .when(complete("pickup", t(9, 5), None))
            .then_rejected("stop_failed");
    }
}
