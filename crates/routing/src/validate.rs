//! An independent check of a solution: each route simulated stop by stop, with none of the
//! search's segment algebra, so that tests and benchmarks do not trust the solver's own sums.

use crate::problem::{Problem, DIMS};
use crate::solution::Solution;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A client no route visits (and that was not left out on purpose).
    Missing {
        node: usize,
    },
    Repeated {
        node: usize,
    },
    NotAClient {
        node: usize,
    },
    UnknownVehicleType {
        route: usize,
    },
    TooManyVehicles {
        vehicle_type: usize,
        used: usize,
        available: usize,
    },
    /// On board at some point of the route: more than the vehicle holds in a dimension.
    Capacity {
        route: usize,
        dimension: usize,
        load: i64,
        capacity: i64,
    },
    /// No departure time lets the route meet every window and be back in time.
    Window {
        route: usize,
        node: usize,
        start: i64,
        late: i64,
    },
    ReturnLate {
        route: usize,
        back: i64,
        late: i64,
    },
    ShiftLength {
        route: usize,
        duration: i64,
        max: i64,
    },
}

/// Every broken rule; empty when the solution is feasible. `left_out` are clients the caller
/// accepts to leave unserved.
pub fn validate(p: &Problem, s: &Solution, left_out: &[usize]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut seen = vec![false; p.nodes()];
    let mut used = vec![0usize; p.vehicle_types.len()];
    for (r, route) in s.routes.iter().enumerate() {
        let Some(v) = p.vehicle_types.get(route.vehicle_type) else {
            out.push(Violation::UnknownVehicleType { route: r });
            continue;
        };
        if route.visits.is_empty() {
            continue;
        }
        used[route.vehicle_type] += 1;
        for &c in &route.visits {
            if c >= p.nodes() || !p.is_client(c) {
                out.push(Violation::NotAClient { node: c });
            } else if std::mem::replace(&mut seen[c], true) {
                out.push(Violation::Repeated { node: c });
            }
        }
        if route.visits.iter().any(|&c| c >= p.nodes() || !p.is_client(c)) {
            continue;
        }
        // Load on board: every delivery leaves the depot, every pickup comes back.
        let mut load = [0i64; DIMS];
        for &c in &route.visits {
            for (d, l) in load.iter_mut().enumerate() {
                *l += p.client(c).delivery.0[d];
            }
        }
        let mut worst = load;
        for &c in &route.visits {
            for (d, l) in load.iter_mut().enumerate() {
                *l += p.client(c).pickup.0[d] - p.client(c).delivery.0[d];
                worst[d] = worst[d].max(*l);
            }
        }
        for (d, w) in worst.iter().enumerate() {
            if *w > v.capacity.0[d] {
                out.push(Violation::Capacity { route: r, dimension: d, load: *w, capacity: v.capacity.0[d] });
            }
        }
        // Time: try the departures at which some window is met exactly, keep the shortest
        // feasible schedule.
        let mut departures = vec![v.early];
        let (mut at, mut prev) = (0i64, v.depot);
        for &c in &route.visits {
            at += p.time(prev, c);
            let departure = p.client(c).early - at;
            if departure > v.early {
                departures.push(departure);
            }
            at += p.client(c).service;
            prev = c;
        }
        let simulate = |departure: i64| -> Result<i64, Violation> {
            let (mut t, mut prev) = (departure, v.depot);
            for &c in &route.visits {
                let client = p.client(c);
                t += p.time(prev, c);
                let start = t.max(client.early);
                if start > client.late {
                    return Err(Violation::Window { route: r, node: c, start, late: client.late });
                }
                t = start + client.service;
                prev = c;
            }
            let back = t + p.time(prev, v.depot);
            if back > v.late {
                return Err(Violation::ReturnLate { route: r, back, late: v.late });
            }
            Ok(back - departure)
        };
        let results: Vec<Result<i64, Violation>> = departures.iter().map(|&d| simulate(d)).collect();
        match results.iter().filter_map(|r| r.as_ref().ok()).min() {
            Some(&duration) if duration > v.max_duration => {
                out.push(Violation::ShiftLength { route: r, duration, max: v.max_duration })
            }
            Some(_) => {}
            None => out.push(results[0].clone().expect_err("no departure is feasible")),
        }
    }
    for (t, v) in p.vehicle_types.iter().enumerate() {
        if used[t] > v.count {
            out.push(Violation::TooManyVehicles { vehicle_type: t, used: used[t], available: v.count });
        }
    }
    for c in p.client_nodes() {
        if !seen[c] && !left_out.contains(&c) {
            out.push(Violation::Missing { node: c });
        }
    }
    out
}
