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
        // Time: the shortest schedule leaves as late as it still can (leaving later only saves
        // waiting), and whether a departure is feasible only gets worse as it gets later: the
        // latest feasible departure is found by bisection, simulating stop by stop.
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
        match simulate(v.early) {
            Err(late) => out.push(late),
            Ok(_) => {
                let (mut feasible, mut infeasible) = (v.early, v.late.saturating_add(1));
                while infeasible - feasible > 1 {
                    let mid = feasible + (infeasible - feasible) / 2;
                    if simulate(mid).is_ok() {
                        feasible = mid;
                    } else {
                        infeasible = mid;
                    }
                }
                let duration = simulate(feasible).expect("the departure found is feasible");
                if duration > v.max_duration {
                    out.push(Violation::ShiftLength { route: r, duration, max: v.max_duration });
                }
            }
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
