//! A solution: routes, each a vehicle type and the clients it visits in order.

use crate::problem::Problem;
use crate::segment::{Penalties, RouteCost, Segment};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub vehicle_type: usize,
    /// Client nodes, in order (the depot is implied at both ends).
    pub visits: Vec<usize>,
}

impl Route {
    /// The route's summary, depot to depot.
    pub fn segment(&self, p: &Problem) -> Segment {
        let v = &p.vehicle_types[self.vehicle_type];
        let mut s = Segment::depot(v);
        for &c in &self.visits {
            s = s.then(p, &Segment::client(p, c));
        }
        s.then(p, &Segment::depot(v))
    }

    pub fn cost(&self, p: &Problem) -> RouteCost {
        RouteCost::of(&p.vehicle_types[self.vehicle_type], &self.segment(p))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Solution {
    pub routes: Vec<Route>,
}

/// Totals over a solution's routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub dist: i64,
    pub fixed: i64,
    pub excess_load: i64,
    pub time_warp: i64,
    pub routes: usize,
}

impl Totals {
    pub fn feasible(&self) -> bool {
        self.excess_load == 0 && self.time_warp == 0
    }

    pub fn cost(&self) -> i64 {
        self.dist + self.fixed
    }

    pub fn penalised(&self, penalties: &Penalties) -> i64 {
        self.dist + self.fixed + penalties.load * self.excess_load + penalties.time * self.time_warp
    }
}

impl Solution {
    pub fn totals(&self, p: &Problem) -> Totals {
        let mut t = Totals::default();
        for r in self.routes.iter().filter(|r| !r.visits.is_empty()) {
            let c = r.cost(p);
            t.dist += c.dist;
            t.fixed += c.fixed;
            t.excess_load += c.excess_load;
            t.time_warp += c.time_warp;
            t.routes += 1;
        }
        t
    }

    /// Clients in route order, routes one after the other (the "giant tour").
    pub fn giant_tour(&self) -> Vec<usize> {
        self.routes.iter().flat_map(|r| r.visits.iter().copied()).collect()
    }

    /// For each node, its neighbours in the solution (predecessor, successor), depots as 0.
    pub fn neighbours(&self, p: &Problem) -> Vec<(usize, usize)> {
        let mut out = vec![(0, 0); p.nodes()];
        for r in &self.routes {
            let depot = p.vehicle_types[r.vehicle_type].depot;
            for (i, &c) in r.visits.iter().enumerate() {
                let pred = if i == 0 { depot } else { r.visits[i - 1] };
                let succ = r.visits.get(i + 1).copied().unwrap_or(depot);
                out[c] = (pred, succ);
            }
        }
        out
    }
}
