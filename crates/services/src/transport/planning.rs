//! From a site's day (its jobs, vehicles and drivers) to planned routes: crews are formed, the
//! routing problem is built and solved, the solution is checked by the independent validator
//! and turned into routes with times the drivers can read.

use std::time::Duration;

use chrono::{NaiveDate, NaiveTime, Timelike};
use routing::{Client, Limits, Load, Params, Problem, VehicleType};
use transport::{PlannedRoute, PlannedStop, Slot, StopAction, Unplanned};
use values::GeoPoint;

use super::{DriverRow, JobRow, VehicleRow};
use crate::common::TransportRules;

/// A vehicle and who drives it, for the longest of the driver's free slots that day.
#[derive(Debug, Clone)]
pub struct Crew {
    pub vehicle: VehicleRow,
    pub driver: DriverRow,
    pub slot: Slot,
}

/// Pairs vehicles with drivers who may drive them: refrigerated and larger vehicles first,
/// each given the free driver with the fewest other choices (then the longest slot), so that
/// versatile drivers remain for the vehicles only they may drive.
pub fn crews(vehicles: &[VehicleRow], drivers: &[DriverRow], date: NaiveDate) -> Vec<Crew> {
    let mut vehicles: Vec<&VehicleRow> =
        vehicles.iter().filter(|v| !v.retired && !v.off_days.contains(&date)).collect();
    vehicles.sort_by_key(|v| (std::cmp::Reverse(v.chilled_capacity_kg > 0), std::cmp::Reverse(v.capacity_kg)));
    let mut free: Vec<(&DriverRow, Slot)> = drivers
        .iter()
        .filter(|d| !d.retired)
        .filter_map(|d| {
            let slots = d.availability.get(&date)?;
            slots.iter().max_by_key(|s| s.to - s.from).map(|s| (d, *s))
        })
        .collect();
    let mut crews = Vec::new();
    for vehicle in vehicles {
        let choice = free
            .iter()
            .enumerate()
            .filter(|(_, (d, _))| d.vehicles.contains(&vehicle.vehicle_id))
            .min_by_key(|(_, (d, s))| (d.vehicles.len(), std::cmp::Reverse(s.to - s.from)))
            .map(|(i, _)| i);
        if let Some(i) = choice {
            let (driver, slot) = free.remove(i);
            crews.push(Crew { vehicle: vehicle.clone(), driver: driver.clone(), slot });
        }
    }
    crews
}

/// What the planner needs of a day.
pub struct Day {
    pub plan_id: String,
    pub revision: u32,
    pub depot: GeoPoint,
    pub jobs: Vec<JobRow>,
    pub crews: Vec<Crew>,
    /// Nothing leaves before this (a re-plan during the day), seconds after midnight.
    pub not_before: i64,
}

pub struct Planned {
    pub routes: Vec<PlannedRoute>,
    pub unplanned: Vec<Unplanned>,
    pub iterations: u64,
}

/// Road distances (m) and times (s) between points, row-major.
pub type Matrices = (Vec<i64>, Vec<i64>);

fn seconds(t: NaiveTime) -> i64 {
    i64::from(t.num_seconds_from_midnight())
}

fn time_of(s: i64) -> NaiveTime {
    NaiveTime::from_num_seconds_from_midnight_opt(s.clamp(0, 86_399) as u32, 0).expect("within a day")
}

impl Day {
    /// The points to route between: the depot, then the jobs that have a position, in order.
    pub fn points(&self) -> Vec<(f64, f64)> {
        let jobs = self.jobs.iter().filter_map(|j| j.position.map(|p| (p.lat, p.lon)));
        std::iter::once((self.depot.lat(), self.depot.lon())).chain(jobs).collect()
    }
}

/// Plans the day's routes within `budget`, over `matrices` between the day's [`Day::points`].
pub fn plan_day(day: Day, matrices: Matrices, budget: Duration, seed: u64) -> Result<Planned, String> {
    let mut unplanned = Vec::new();
    let mut jobs = Vec::new();
    for job in day.jobs {
        match job.position {
            Some(_) => jobs.push(job),
            None => unplanned.push(Unplanned { job_id: job.job_id, reason: "no_position".into() }),
        }
    }
    if day.crews.is_empty() || jobs.is_empty() {
        let reason = "no_vehicle";
        unplanned.extend(jobs.into_iter().map(|j| Unplanned { job_id: j.job_id, reason: reason.into() }));
        return Ok(Planned { routes: vec![], unplanned, iterations: 0 });
    }
    let (dist, time) = matrices;
    let clients = jobs
        .iter()
        .map(|j| {
            let load = Load([j.grams as i64, 0, j.chilled_grams as i64]);
            let pickup = j.kind == "pickup";
            Client {
                delivery: if pickup { Load::ZERO } else { load },
                pickup: if pickup { load } else { Load::ZERO },
                service: i64::from(j.service_minutes) * 60,
                early: seconds(j.opens),
                late: seconds(j.closes),
            }
        })
        .collect();
    let types = day
        .crews
        .iter()
        .map(|c| {
            let (from, to) = (seconds(c.slot.from).max(day.not_before), seconds(c.slot.to));
            VehicleType {
                count: 1,
                // Volumes are not known per job yet: the volume dimension does not bind.
                capacity: Load([
                    i64::from(c.vehicle.capacity_kg) * 1000,
                    0,
                    i64::from(c.vehicle.chilled_capacity_kg) * 1000,
                ]),
                depot: 0,
                early: from,
                late: to.max(from),
                max_duration: i64::from(c.driver.max_shift_minutes) * 60,
                fixed_cost: 0,
            }
        })
        .collect();
    let p = Problem::new(1, clients, types, dist, time).map_err(|e| e.to_string())?;
    let outcome = routing::plan(&p, &Params::quick(), seed, Limits { time: Some(budget), iterations: None });
    let left_out: Vec<usize> = outcome.unserved.iter().map(|(c, _)| *c).collect();
    let violations = routing::validate(&p, &outcome.solution, &left_out);
    if !violations.is_empty() {
        return Err(format!("the planner produced an invalid plan: {violations:?}"));
    }
    for (client, why) in &outcome.unserved {
        let job = &jobs[client - p.depots];
        unplanned.push(Unplanned { job_id: job.job_id.clone(), reason: why.code().into() });
    }
    let mut routes = Vec::new();
    for route in outcome.solution.routes.iter().filter(|r| !r.visits.is_empty()) {
        let v = &p.vehicle_types[route.vehicle_type];
        let crew = &day.crews[route.vehicle_type];
        // Leave so as to reach the first stop as it opens, no earlier than the shift.
        let first = route.visits[0];
        let departure = v.early.max(p.client(first).early - p.time(0, first));
        let (mut t, mut prev, mut metres) = (departure, 0, 0);
        let mut stops = Vec::with_capacity(route.visits.len());
        for &node in &route.visits {
            let c = p.client(node);
            t = (t + p.time(prev, node)).max(c.early);
            metres += p.dist(prev, node);
            let job = &jobs[node - p.depots];
            stops.push(PlannedStop {
                job_id: job.job_id.clone(),
                action: if job.kind == "pickup" { StopAction::Load } else { StopAction::Unload },
                party_id: job.party_id.clone(),
                address: job.address.clone(),
                position: job.position.and_then(|p| GeoPoint::new(p.lat, p.lon).ok()).expect("kept above"),
                contact: job.contact.clone(),
                opens: job.opens,
                closes: job.closes,
                arrival: time_of(t),
                service_minutes: job.service_minutes,
                grams: job.grams,
                chilled_grams: job.chilled_grams,
                parcels: job.parcels.len() as u32,
            });
            t += c.service;
            prev = node;
        }
        metres += p.dist(prev, 0);
        routes.push(PlannedRoute {
            route_id: format!("{}_{}-{}", day.plan_id, day.revision, routes.len() + 1),
            vehicle_id: crew.vehicle.vehicle_id.clone(),
            driver_id: crew.driver.driver_id.clone(),
            refrigerated: crew.vehicle.chilled_capacity_kg > 0,
            departure: time_of(departure),
            back: time_of(t + p.time(prev, 0)),
            metres: metres as u64,
            stops,
        });
    }
    Ok(Planned { routes, unplanned, iterations: outcome.iterations })
}

/// Great-circle distances times the detour factor, at the configured speed.
pub fn estimated(points: &[(f64, f64)], rules: &TransportRules) -> Matrices {
    routing::geo::matrices(points, rules.detour_factor, rules.speed_kmh)
}

/// Road distances and times from an OSRM server's table API
/// (`/table/v1/driving/{lon,lat;...}?annotations=distance,duration`).
pub async fn osrm(base: &str, points: &[(f64, f64)]) -> Result<Matrices, String> {
    let coordinates: Vec<String> = points.iter().map(|(lat, lon)| format!("{lon:.6},{lat:.6}")).collect();
    let url = format!(
        "{}/table/v1/driving/{}?annotations=distance,duration",
        base.trim_end_matches('/'),
        coordinates.join(";")
    );
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().map_err(|e| e.to_string())?;
    let answer: serde_json::Value = client
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    osrm_matrices(&answer, points.len())
}

/// Reads an OSRM table answer; a pair without a road between them is an error.
pub fn osrm_matrices(answer: &serde_json::Value, n: usize) -> Result<Matrices, String> {
    if answer["code"] != "Ok" {
        return Err(format!("OSRM answered {}", answer["code"]));
    }
    let read = |name: &str| -> Result<Vec<i64>, String> {
        let rows = answer[name].as_array().ok_or(format!("no {name} in the answer"))?;
        if rows.len() != n {
            return Err(format!("{name}: {} rows for {n} points", rows.len()));
        }
        let mut out = Vec::with_capacity(n * n);
        for row in rows {
            let row = row.as_array().filter(|r| r.len() == n).ok_or(format!("{name}: a row is not {n} long"))?;
            for cell in row {
                let value = cell.as_f64().ok_or(format!("{name}: no road between two points"))?;
                out.push(value.round().max(0.0) as i64);
            }
        }
        Ok(out)
    };
    Ok((read("distances")?, read("durations")?))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use chrono::Utc;

    use super::*;
    use crate::common::Position;

    fn hm(h: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, 0, 0).unwrap()
    }

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
    }

    fn vehicle(id: &str, kg: u32, chilled: u32) -> VehicleRow {
        VehicleRow {
            vehicle_id: id.into(),
            name: id.into(),
            capacity_kg: kg,
            volume_l: 0,
            chilled_capacity_kg: chilled,
            home_site: "gerland".into(),
            retired: false,
            off_days: vec![],
            registered_at: Utc::now(),
        }
    }

    fn driver(id: &str, vehicles: &[&str], slot: (u32, u32)) -> DriverRow {
        DriverRow {
            driver_id: id.into(),
            name: id.into(),
            vehicles: vehicles.iter().map(|v| v.to_string()).collect::<BTreeSet<_>>(),
            max_shift_minutes: 8 * 60,
            availability: BTreeMap::from([(day(), vec![Slot { from: hm(slot.0), to: hm(slot.1) }])]),
            retired: false,
        }
    }

    fn job(id: &str, kind: &str, kg: u64, chilled: u64, window: (u32, u32), lat: f64) -> JobRow {
        JobRow {
            job_id: id.into(),
            date: day(),
            site_id: "gerland".into(),
            kind: kind.into(),
            party_id: "party".into(),
            address: "somewhere".into(),
            position: Some(Position { lat, lon: 4.85 }),
            contact: String::new(),
            opens: hm(window.0),
            closes: hm(window.1),
            service_minutes: 10,
            grams: kg * 1000,
            chilled_grams: chilled * 1000,
            parcels: if kind == "delivery" { vec!["p".into()] } else { vec![] },
            chilled_lots: vec![],
            cancelled: false,
        }
    }

    #[test]
    fn crews_give_each_vehicle_a_driver_allowed_to_drive_it() {
        let vehicles = [vehicle("van", 800, 0), vehicle("fridge", 500, 300), vehicle("car", 200, 0)];
        let drivers = [driver("only-fridge", &["fridge"], (8, 12)), driver("any", &["van", "fridge", "car"], (8, 18))];
        let crews = crews(&vehicles, &drivers, day());
        let pairs: Vec<(&str, &str)> =
            crews.iter().map(|c| (c.vehicle.vehicle_id.as_str(), c.driver.driver_id.as_str())).collect();
        assert_eq!(pairs, [("fridge", "only-fridge"), ("van", "any")]);
        assert!(super::crews(&vehicles, &drivers, day().succ_opt().unwrap()).is_empty(), "nobody free that day");
    }

    #[test]
    fn a_day_is_planned_with_times_and_reasons_for_what_cannot_be_served() {
        let vehicles = [vehicle("fridge", 500, 200), vehicle("van", 800, 0)];
        let drivers = [driver("a", &["fridge"], (8, 16)), driver("b", &["van"], (8, 16))];
        let jobs = vec![
            job("pick", "pickup", 120, 60, (9, 11), 45.76),
            job("deliv", "delivery", 80, 20, (13, 16), 45.74),
            job("too-cold", "delivery", 300, 250, (13, 16), 45.75),
            job("nowhere", "delivery", 10, 0, (13, 16), 0.0),
        ];
        let mut jobs = jobs;
        jobs[3].position = None;
        let depot = GeoPoint::new(45.73, 4.83).unwrap();
        let rules = TransportRules::default();
        let day = Day {
            plan_id: "gerland-20261126".into(),
            revision: 1,
            depot,
            jobs,
            crews: crews(&vehicles, &drivers, day()),
            not_before: 0,
        };
        let matrices = estimated(&day.points(), &rules);
        let planned = plan_day(day, matrices, Duration::from_millis(300), 1).unwrap();
        let reasons: BTreeMap<&str, &str> =
            planned.unplanned.iter().map(|u| (u.job_id.as_str(), u.reason.as_str())).collect();
        assert_eq!(reasons, BTreeMap::from([("nowhere", "no_position"), ("too-cold", "no_refrigerated_vehicle")]));
        let route = planned.routes.iter().find(|r| r.stops.iter().any(|s| s.job_id == "pick")).unwrap();
        assert!(route.refrigerated && route.route_id.starts_with("gerland-20261126_1-"));
        for stop in planned.routes.iter().flat_map(|r| &r.stops) {
            assert!(stop.opens <= stop.arrival && stop.arrival <= stop.closes, "{stop:?}");
        }
    }

    #[test]
    fn an_osrm_table_is_read_and_a_missing_road_refused() {
        let answer = serde_json::json!({
            "code": "Ok",
            "durations": [[0.0, 61.4], [59.0, 0.0]],
            "distances": [[0.0, 812.2], [790.0, 0.0]],
        });
        assert_eq!(osrm_matrices(&answer, 2).unwrap(), (vec![0, 812, 790, 0], vec![0, 61, 59, 0]));
        let gap = serde_json::json!({"code": "Ok", "durations": [[0.0, null], [59.0, 0.0]], "distances": [[0.0, 1.0], [1.0, 0.0]]});
        assert!(osrm_matrices(&gap, 2).is_err());
        assert!(osrm_matrices(&serde_json::json!({"code": "InvalidQuery"}), 2).is_err());
    }
}
