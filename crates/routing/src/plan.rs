//! A day's plan: every client the fleet can serve routed, and every other one returned with the
//! reason — no vehicle with enough cold, no vehicle big enough, a window no vehicle can reach,
//! or more work than the fleet can do.

use crate::hgs::{solve, Limits, Params};
use crate::problem::{Problem, DIMS};
use crate::solution::{Solution, Totals};
use crate::validate::{validate, Violation};

/// Why a client is left out of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unserved {
    /// It has chilled goods and no vehicle can carry that much cold (or none has a cold box).
    NoRefrigeratedVehicle,
    /// More than any vehicle holds, in weight or volume.
    Capacity,
    /// No vehicle can be there within its window and be back before its shift ends.
    WindowUnreachable,
    /// It could be served alone, but the fleet ran out of room or time for it.
    FleetFull,
}

impl Unserved {
    pub fn code(self) -> &'static str {
        match self {
            Unserved::NoRefrigeratedVehicle => "no_refrigerated_vehicle",
            Unserved::Capacity => "capacity",
            Unserved::WindowUnreachable => "window_unreachable",
            Unserved::FleetFull => "fleet_full",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Routes over the problem's own nodes; feasible.
    pub solution: Solution,
    pub totals: Totals,
    pub unserved: Vec<(usize, Unserved)>,
    pub iterations: u64,
}

/// Why no vehicle could serve `client` even alone, if so.
pub fn screen(p: &Problem, client: usize) -> Option<Unserved> {
    let c = p.client(client);
    let chilled = c.delivery.0[DIMS - 1].max(c.pickup.0[DIMS - 1]);
    if chilled > 0 && p.vehicle_types.iter().all(|v| v.count == 0 || v.capacity.0[DIMS - 1] < chilled) {
        return Some(Unserved::NoRefrigeratedVehicle);
    }
    let load = c.delivery.max(c.pickup);
    let fitting: Vec<_> = p.vehicle_types.iter().filter(|v| v.count > 0 && load.fits(v.capacity)).collect();
    if fitting.is_empty() {
        return Some(Unserved::Capacity);
    }
    let reachable = fitting.iter().any(|v| {
        let arrive = (v.early + p.time(v.depot, client)).max(c.early);
        let back = arrive + c.service + p.time(client, v.depot);
        arrive <= c.late && back <= v.late && back - (arrive - p.time(v.depot, client)) <= v.max_duration
    });
    (!reachable).then_some(Unserved::WindowUnreachable)
}

/// Plans the clients `p` can serve: those no vehicle could serve alone are screened out first;
/// if the search still cannot serve everyone feasibly, the clients whose removal helps most
/// are left out (`FleetFull`) until the plan holds.
pub fn plan(p: &Problem, params: &Params, seed: u64, limits: Limits) -> Plan {
    let mut unserved: Vec<(usize, Unserved)> =
        p.client_nodes().filter_map(|c| screen(p, c).map(|why| (c, why))).collect();
    let keep: Vec<usize> = p.client_nodes().filter(|c| !unserved.iter().any(|(u, _)| u == c)).collect();
    if keep.is_empty() {
        return Plan { solution: Solution::default(), totals: Totals::default(), unserved, iterations: 0 };
    }
    let (sub, nodes) = p.restrict(&keep);
    let outcome = solve(&sub, params, seed, limits);
    let mut solution = outcome.solution;
    for route in &mut solution.routes {
        for c in &mut route.visits {
            *c = nodes[*c];
        }
    }
    // Leave out, one by one, the client whose removal makes a broken route cheapest.
    loop {
        let violations = validate(p, &solution, &unserved.iter().map(|(c, _)| *c).collect::<Vec<_>>());
        let Some(route) = violations.iter().find_map(|v| match v {
            Violation::Capacity { route, .. }
            | Violation::Window { route, .. }
            | Violation::ReturnLate { route, .. }
            | Violation::ShiftLength { route, .. } => Some(*route),
            _ => None,
        }) else {
            break;
        };
        let penalties = crate::segment::Penalties { load: 1_000_000, time: 1_000_000 };
        let r = &solution.routes[route];
        let best = (0..r.visits.len())
            .min_by_key(|&i| {
                let mut shorter = r.clone();
                shorter.visits.remove(i);
                if shorter.visits.is_empty() {
                    0
                } else {
                    shorter.cost(p).penalised(&penalties)
                }
            })
            .expect("a broken route has clients");
        let client = solution.routes[route].visits.remove(best);
        unserved.push((client, Unserved::FleetFull));
    }
    solution.routes.retain(|r| !r.visits.is_empty());
    reinsert(p, &mut solution, &mut unserved);
    unserved.sort_unstable_by_key(|(c, _)| *c);
    Plan { totals: solution.totals(p), solution, unserved, iterations: outcome.iterations }
}

/// [`plan`] on `threads` threads at once, each searching from its own seed (`seed`, `seed + 1`,
/// ...), and the best of their plans: fewest clients left out, then cheapest, then the lowest
/// seed. With an iteration limit the answer depends on `seed` and `threads` only.
pub fn plan_parallel(p: &Problem, params: &Params, seed: u64, limits: Limits, threads: usize) -> Plan {
    if threads <= 1 {
        return plan(p, params, seed, limits);
    }
    let plans: Vec<Plan> = std::thread::scope(|scope| {
        let runs: Vec<_> =
            (0..threads as u64).map(|k| scope.spawn(move || plan(p, params, seed.wrapping_add(k), limits))).collect();
        runs.into_iter().map(|run| run.join().expect("a search thread does not panic")).collect()
    });
    plans
        .into_iter()
        .enumerate()
        .min_by_key(|(k, plan)| (plan.unserved.len(), plan.totals.cost(), *k))
        .map(|(_, plan)| plan)
        .expect("at least one thread")
}

/// Puts clients left out for lack of room back where they fit after all (in a route, or in a
/// vehicle the search left idle), cheapest place first.
fn reinsert(p: &Problem, solution: &mut Solution, unserved: &mut Vec<(usize, Unserved)>) {
    let mut used = vec![0usize; p.vehicle_types.len()];
    for r in &solution.routes {
        used[r.vehicle_type] += 1;
    }
    let mut k = 0;
    while k < unserved.len() {
        let (client, why) = unserved[k];
        if why != Unserved::FleetFull {
            k += 1;
            continue;
        }
        let mut best: Option<(i64, Option<usize>, usize, usize)> = None;
        let mut consider = |route: &crate::Route, index: Option<usize>, at: usize| {
            let before = if route.visits.is_empty() { 0 } else { route.cost(p).dist };
            let mut longer = route.clone();
            longer.visits.insert(at, client);
            let cost = longer.cost(p);
            if cost.feasible() {
                let added = cost.dist + if route.visits.is_empty() { cost.fixed } else { 0 } - before;
                if best.is_none_or(|b| added < b.0) {
                    best = Some((added, index, route.vehicle_type, at));
                }
            }
        };
        for (i, route) in solution.routes.iter().enumerate() {
            for at in 0..=route.visits.len() {
                consider(route, Some(i), at);
            }
        }
        for (t, v) in p.vehicle_types.iter().enumerate() {
            if used[t] < v.count {
                consider(&crate::Route { vehicle_type: t, visits: Vec::new() }, None, 0);
            }
        }
        match best {
            Some((_, Some(i), _, at)) => solution.routes[i].visits.insert(at, client),
            Some((_, None, t, _)) => {
                used[t] += 1;
                solution.routes.push(crate::Route { vehicle_type: t, visits: vec![client] });
            }
            None => {
                k += 1;
                continue;
            }
        }
        unserved.remove(k);
    }
}
