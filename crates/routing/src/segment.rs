//! Route segments that concatenate in O(1): distance, load along the way (deliveries and
//! pickups mixed), and time (duration, time warp, the window in which the segment may start),
//! after Vidal et al. (2013), "A hybrid genetic algorithm with adaptive diversity management for
//! a large class of vehicle routing problems with time-windows".

use crate::problem::{Load, Problem, VehicleType};

/// A sequence of visits, summarised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub first: u32,
    pub last: u32,
    pub dist: i64,
    /// Delivered along the segment (on board when it starts).
    pub delivery: Load,
    /// Picked up along the segment (on board when it ends).
    pub pickup: Load,
    /// Most on board at any point of the segment.
    pub max_load: Load,
    /// Shortest time from the start of the first service to the end of the last.
    pub duration: i64,
    /// Lateness that cannot be avoided: arriving after a window closes counts as travelling
    /// back in time, penalised.
    pub time_warp: i64,
    /// Window in which the segment's first service may start without waiting or warping.
    pub early: i64,
    pub late: i64,
}

impl Segment {
    /// One client.
    #[inline]
    pub fn client(p: &Problem, node: usize) -> Segment {
        let c = p.client(node);
        Segment {
            first: node as u32,
            last: node as u32,
            dist: 0,
            delivery: c.delivery,
            pickup: c.pickup,
            max_load: c.delivery.max(c.pickup),
            duration: c.service,
            time_warp: 0,
            early: c.early,
            late: c.late,
        }
    }

    /// A vehicle's depot, at the start or end of its route.
    #[inline]
    pub fn depot(v: &VehicleType) -> Segment {
        Segment {
            first: v.depot as u32,
            last: v.depot as u32,
            dist: 0,
            delivery: Load::ZERO,
            pickup: Load::ZERO,
            max_load: Load::ZERO,
            duration: 0,
            time_warp: 0,
            early: v.early,
            late: v.late,
        }
    }

    /// `self` then `next`.
    #[inline]
    pub fn then(&self, p: &Problem, next: &Segment) -> Segment {
        let (a, b) = (self, next);
        let travel = p.time(a.last as usize, b.first as usize);
        let delta = a.duration - a.time_warp + travel;
        let wait = (b.early - delta - a.late).max(0);
        let warp = (a.early + delta - b.late).max(0);
        Segment {
            first: a.first,
            last: b.last,
            dist: a.dist + p.dist(a.last as usize, b.first as usize) + b.dist,
            delivery: a.delivery + b.delivery,
            pickup: a.pickup + b.pickup,
            max_load: (a.max_load + b.delivery).max(b.max_load + a.pickup),
            duration: a.duration + b.duration + travel + wait,
            time_warp: a.time_warp + b.time_warp + warp,
            early: (b.early - delta).max(a.early) - wait,
            late: (b.late - delta).min(a.late) + warp,
        }
    }
}

/// What a whole route (depot to depot) costs and breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouteCost {
    pub dist: i64,
    pub excess_load: i64,
    /// Time warp, plus whatever exceeds the shift length.
    pub time_warp: i64,
    pub fixed: i64,
}

impl RouteCost {
    pub fn of(v: &VehicleType, route: &Segment) -> RouteCost {
        RouteCost {
            dist: route.dist,
            excess_load: route.max_load.excess(v.capacity),
            time_warp: route.time_warp + (route.duration - v.max_duration).max(0),
            fixed: v.fixed_cost,
        }
    }

    #[inline]
    pub fn penalised(&self, penalties: &Penalties) -> i64 {
        self.dist + self.fixed + penalties.load * self.excess_load + penalties.time * self.time_warp
    }

    pub fn feasible(&self) -> bool {
        self.excess_load == 0 && self.time_warp == 0
    }
}

/// Cost per unit of excess load and of time warp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Penalties {
    pub load: i64,
    pub time: i64,
}

impl Penalties {
    pub fn scaled(&self, factor: i64) -> Penalties {
        Penalties { load: self.load.saturating_mul(factor), time: self.time.saturating_mul(factor) }
    }
}
