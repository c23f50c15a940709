//! Local search over granular neighbourhoods (Toth & Vigo 2003; Vidal et al. 2012): each
//! client is tried only against its closest clients, with relocate, swap and 2-opt* moves,
//! every move evaluated in O(1) from route prefix and suffix segments, the first improving one
//! applied. SWAP* (Vidal 2022) exchanges two clients between routes, each inserted at its best
//! place in the other route.

use rand::seq::SliceRandom;
use rand::Rng;

use crate::problem::Problem;
use crate::segment::{Penalties, RouteCost, Segment};
use crate::solution::{Route, Solution};

/// How many close clients each client is tried against.
pub const DEFAULT_GRANULARITY: usize = 20;

/// For each client, its `k` closest clients by a proximity that also weighs waiting and
/// lateness between their windows (Vidal et al. 2013). Depots get none.
pub fn neighbourhoods(p: &Problem, k: usize) -> Vec<Vec<u32>> {
    let mut out = vec![Vec::new(); p.nodes()];
    for u in p.client_nodes() {
        let cu = p.client(u);
        let mut scored: Vec<(i64, u32)> = p
            .client_nodes()
            .filter(|&v| v != u)
            .map(|v| {
                let cv = p.client(v);
                let proximity = |a: usize, b: usize, ca: &crate::Client, cb: &crate::Client| {
                    let t = p.time(a, b);
                    let wait = (cb.early - t - ca.service - ca.late).max(0);
                    let late = (ca.early + ca.service + t - cb.late).max(0);
                    p.dist(a, b) + wait / 5 + late
                };
                (proximity(u, v, cu, cv).min(proximity(v, u, cv, cu)), v as u32)
            })
            .collect();
        scored.sort_unstable();
        out[u] = scored.into_iter().take(k).map(|(_, v)| v).collect();
    }
    out
}

#[derive(Debug, Clone)]
struct LsRoute {
    vehicle_type: usize,
    /// Depot, clients, depot.
    nodes: Vec<u32>,
    /// `pre[i]`: nodes 0..=i.
    pre: Vec<Segment>,
    /// `tail[i]`: clients i..=k (i from 1); `tail[k + 1]` is unused.
    tail: Vec<Segment>,
    cost: i64,
    /// Its distance plus fixed cost: what the cost is without penalties.
    base: i64,
    /// When it last changed, in moves.
    modified: u64,
}

impl LsRoute {
    fn clients(&self) -> usize {
        self.nodes.len() - 2
    }

    fn tail(&self, i: usize) -> Option<&Segment> {
        (i <= self.clients()).then(|| &self.tail[i])
    }
}

/// The search's working state: routes with their segments, and where each client is.
pub struct LocalSearch<'a> {
    p: &'a Problem,
    neighbours: &'a [Vec<u32>],
    routes: Vec<LsRoute>,
    route_of: Vec<usize>,
    pos_of: Vec<usize>,
    client_seg: Vec<Segment>,
    depot_seg: Vec<Segment>,
    penalties: Penalties,
    moves: u64,
    tested: Vec<u64>,
    order: Vec<usize>,
}

impl<'a> LocalSearch<'a> {
    pub fn new(p: &'a Problem, neighbours: &'a [Vec<u32>]) -> LocalSearch<'a> {
        let client_seg = (0..p.nodes())
            .map(|n| if p.is_client(n) { Segment::client(p, n) } else { Segment::depot(&p.vehicle_types[0]) })
            .collect();
        let depot_seg = p.vehicle_types.iter().map(Segment::depot).collect();
        LocalSearch {
            p,
            neighbours,
            routes: Vec::new(),
            route_of: vec![usize::MAX; p.nodes()],
            pos_of: vec![0; p.nodes()],
            client_seg,
            depot_seg,
            penalties: Penalties { load: 1, time: 1 },
            moves: 0,
            tested: vec![0; p.nodes()],
            order: p.client_nodes().collect(),
        }
    }

    /// Improves `s` under `penalties` until no move in the neighbourhoods improves it. Every
    /// vehicle of the fleet is a route, empty or not.
    pub fn run(&mut self, s: &Solution, penalties: Penalties, rng: &mut impl Rng) -> Solution {
        self.penalties = penalties;
        self.moves = 1;
        self.load(s);
        self.order.shuffle(rng);
        self.tested.iter_mut().for_each(|t| *t = 0);
        loop {
            let mut improved = false;
            for k in 0..self.order.len() {
                let u = self.order[k];
                let since = self.tested[u];
                self.tested[u] = self.moves;
                let mut moved = false;
                for &v in &self.neighbours[u] {
                    let v = v as usize;
                    let changed = self.routes[self.route_of[u]].modified.max(self.routes[self.route_of[v]].modified);
                    if changed < since {
                        continue;
                    }
                    if self.try_moves(u, v) {
                        moved = true;
                        break;
                    }
                }
                if !moved && self.try_empty_route(u) {
                    moved = true;
                }
                improved |= moved;
            }
            if !improved && !self.swap_star() {
                break;
            }
        }
        self.solution()
    }

    fn load(&mut self, s: &Solution) {
        self.routes.clear();
        let mut used = vec![0usize; self.p.vehicle_types.len()];
        for r in s.routes.iter().filter(|r| !r.visits.is_empty()) {
            used[r.vehicle_type] += 1;
            self.push_route(r.vehicle_type, &r.visits);
        }
        for (t, v) in self.p.vehicle_types.iter().enumerate() {
            for _ in used[t]..v.count {
                self.push_route(t, &[]);
            }
        }
    }

    fn push_route(&mut self, vehicle_type: usize, visits: &[usize]) {
        let depot = self.p.vehicle_types[vehicle_type].depot as u32;
        let mut nodes = Vec::with_capacity(visits.len() + 2);
        nodes.push(depot);
        nodes.extend(visits.iter().map(|&c| c as u32));
        nodes.push(depot);
        self.routes.push(LsRoute {
            vehicle_type,
            nodes,
            pre: Vec::new(),
            tail: Vec::new(),
            cost: 0,
            base: 0,
            modified: 0,
        });
        let r = self.routes.len() - 1;
        self.update(r);
    }

    fn solution(&self) -> Solution {
        let routes = self
            .routes
            .iter()
            .filter(|r| r.clients() > 0)
            .map(|r| Route {
                vehicle_type: r.vehicle_type,
                visits: r.nodes[1..r.nodes.len() - 1].iter().map(|&c| c as usize).collect(),
            })
            .collect();
        Solution { routes }
    }

    /// Recomputes a route's segments, cost and positions after a change.
    fn update(&mut self, r: usize) {
        let p = self.p;
        let route = &mut self.routes[r];
        let k = route.nodes.len() - 2;
        let depot = self.depot_seg[route.vehicle_type];
        route.pre.clear();
        route.pre.push(depot);
        for i in 1..=k {
            let s = route.pre[i - 1].then(p, &self.client_seg[route.nodes[i] as usize]);
            route.pre.push(s);
        }
        route.tail.clear();
        route.tail.resize(k + 2, depot);
        if k > 0 {
            route.tail[k] = self.client_seg[route.nodes[k] as usize];
            for i in (1..k).rev() {
                route.tail[i] = self.client_seg[route.nodes[i] as usize].then(p, &route.tail[i + 1]);
            }
            let whole = route.pre[k].then(p, &depot);
            let rc = RouteCost::of(&p.vehicle_types[route.vehicle_type], &whole);
            route.cost = rc.penalised(&self.penalties);
            route.base = rc.dist + rc.fixed;
        } else {
            route.cost = 0;
            route.base = 0;
        }
        route.modified = self.moves;
        for (i, &n) in route.nodes.iter().enumerate().take(k + 1).skip(1) {
            self.route_of[n as usize] = r;
            self.pos_of[n as usize] = i;
        }
    }

    /// The penalised cost of a route of `vehicle_type` made of `start` (a prefix, with its
    /// depot), `middle` and `tail` (clients), back to its depot; `clients` says whether any.
    #[inline]
    fn cost(
        &self,
        vehicle_type: usize,
        start: &Segment,
        middle: &[Segment],
        tail: Option<&Segment>,
        clients: bool,
    ) -> i64 {
        if !clients {
            return 0;
        }
        let mut s = *start;
        for m in middle {
            s = s.then(self.p, m);
        }
        if let Some(t) = tail {
            s = s.then(self.p, t);
        }
        s = s.then(self.p, &self.depot_seg[vehicle_type]);
        RouteCost::of(&self.p.vehicle_types[vehicle_type], &s).penalised(&self.penalties)
    }

    /// What a route of `vehicle_type` shaped like `shape` costs at least: its distance and
    /// fixed cost (penalties only add).
    #[inline]
    fn lower_bound(&self, vehicle_type: usize, shape: &Shape) -> i64 {
        let (start, middle, tail, clients) = *shape;
        if !clients {
            return 0;
        }
        let p = self.p;
        let (mut d, mut last) = (start.dist, start.last as usize);
        for m in middle {
            d += p.dist(last, m.first as usize) + m.dist;
            last = m.last as usize;
        }
        if let Some(t) = tail {
            d += p.dist(last, t.first as usize) + t.dist;
            last = t.last as usize;
        }
        let v = &p.vehicle_types[vehicle_type];
        d + p.dist(last, v.depot) + v.fixed_cost
    }

    fn seg(&self, node: u32) -> Segment {
        self.client_seg[node as usize]
    }

    /// Tries the moves of `u` towards its neighbour `v`; applies the first that improves.
    fn try_moves(&mut self, u: usize, v: usize) -> bool {
        let (ru, rv) = (self.route_of[u], self.route_of[v]);
        if ru == rv {
            return self.try_intra(u, v);
        }
        let (iu, jv) = (self.pos_of[u], self.pos_of[v]);
        let (a, b) = (&self.routes[ru], &self.routes[rv]);
        let (ku, kv) = (a.clients(), b.clients());
        let old = a.cost + b.cost;
        let su = self.seg(a.nodes[iu]);
        let x = (iu < ku).then(|| self.seg(a.nodes[iu + 1]));
        let sv = self.seg(b.nodes[jv]);
        let y = (jv < kv).then(|| self.seg(b.nodes[jv + 1]));
        let (ta, tb) = (a.vehicle_type, b.vehicle_type);
        let mut best: Option<(i64, Move)> = None;
        // Each candidate: route a's new shape, route b's, and the move. Distances first: a
        // move that does not shorten them enough to pay for the penalties it could remove is
        // not worth the full evaluation.
        let mut consider = |ra: Shape, rb: Shape, m: Move| {
            let bound = best.as_ref().map_or(0, |(d, _)| *d);
            if self.lower_bound(ta, &ra) + self.lower_bound(tb, &rb) - old >= bound {
                return;
            }
            let delta = self.cost(ta, ra.0, ra.1, ra.2, ra.3) + self.cost(tb, rb.0, rb.1, rb.2, rb.3) - old;
            if delta < bound {
                best = Some((delta, m));
            }
        };
        // Relocate u after v, and before v.
        for j in [jv, jv - 1] {
            consider(
                (&a.pre[iu - 1], &[], a.tail(iu + 1), ku > 1),
                (&b.pre[j], &[su], b.tail(j + 1), true),
                Move::Relocate { n: 1, reversed: false, after: j },
            );
        }
        if let Some(x) = x {
            // Relocate (u, x) after v, in order or reversed.
            let rest = (&a.pre[iu - 1], &[][..], a.tail(iu + 2), ku > 2);
            consider(
                rest,
                (&b.pre[jv], &[su, x], b.tail(jv + 1), true),
                Move::Relocate { n: 2, reversed: false, after: jv },
            );
            consider(
                rest,
                (&b.pre[jv], &[x, su], b.tail(jv + 1), true),
                Move::Relocate { n: 2, reversed: true, after: jv },
            );
            // Swap (u, x) with v, and with (v, y).
            consider(
                (&a.pre[iu - 1], &[sv], a.tail(iu + 2), true),
                (&b.pre[jv - 1], &[su, x], b.tail(jv + 1), true),
                Move::Swap { nu: 2, nv: 1 },
            );
            if let Some(y) = y {
                consider(
                    (&a.pre[iu - 1], &[sv, y], a.tail(iu + 2), true),
                    (&b.pre[jv - 1], &[su, x], b.tail(jv + 2), true),
                    Move::Swap { nu: 2, nv: 2 },
                );
            }
        }
        // Swap u and v.
        consider(
            (&a.pre[iu - 1], &[sv], a.tail(iu + 1), true),
            (&b.pre[jv - 1], &[su], b.tail(jv + 1), true),
            Move::Swap { nu: 1, nv: 1 },
        );
        // 2-opt*: exchange the tails after u and after v, and after u and before v.
        for (i, j) in [(iu, jv), (iu, jv - 1), (iu - 1, jv)] {
            consider(
                (&a.pre[i], &[], b.tail(j + 1), i + (kv - j) > 0),
                (&b.pre[j], &[], a.tail(i + 1), j + (ku - i) > 0),
                Move::TwoOptStar { i, j },
            );
        }
        let Some((_, m)) = best else { return false };
        let (mut na, mut nb) = (self.routes[ru].nodes.clone(), self.routes[rv].nodes.clone());
        match m {
            Move::Relocate { n, reversed, after } => {
                let mut taken: Vec<u32> = na.drain(iu..iu + n).collect();
                if reversed {
                    taken.reverse();
                }
                nb.splice(after + 1..after + 1, taken);
            }
            Move::Swap { nu, nv } => {
                let from_a: Vec<u32> = na[iu..iu + nu].to_vec();
                let from_b: Vec<u32> = nb[jv..jv + nv].to_vec();
                na.splice(iu..iu + nu, from_b);
                nb.splice(jv..jv + nv, from_a);
            }
            Move::TwoOptStar { i, j } => {
                let tail_a: Vec<u32> = na[i + 1..na.len() - 1].to_vec();
                let tail_b: Vec<u32> = nb[j + 1..nb.len() - 1].to_vec();
                let (da, db) = (na[0], nb[0]);
                na.truncate(i + 1);
                na.extend(tail_b);
                na.push(da);
                nb.truncate(j + 1);
                nb.extend(tail_a);
                nb.push(db);
            }
        }
        self.commit(ru, na);
        self.commit(rv, nb);
        true
    }

    fn commit(&mut self, r: usize, nodes: Vec<u32>) {
        self.moves += 1;
        self.routes[r].nodes = nodes;
        self.update(r);
    }

    /// Penalised cost of a whole route given as nodes (depot, clients, depot).
    fn cost_of_nodes(&self, vehicle_type: usize, nodes: &[u32]) -> i64 {
        if nodes.len() <= 2 {
            return 0;
        }
        let mut s = self.depot_seg[vehicle_type];
        for &n in &nodes[1..nodes.len() - 1] {
            s = s.then(self.p, &self.client_seg[n as usize]);
        }
        s = s.then(self.p, &self.depot_seg[vehicle_type]);
        RouteCost::of(&self.p.vehicle_types[vehicle_type], &s).penalised(&self.penalties)
    }

    /// Clients `from..=to` of route `r` merged, in order or reversed; `None` when empty.
    fn between(&self, r: usize, from: usize, to: usize, reversed: bool) -> Option<Segment> {
        if from > to {
            return None;
        }
        let nodes = &self.routes[r].nodes;
        let at = |k: usize| self.client_seg[nodes[if reversed { to - k } else { from + k }] as usize];
        let mut s = at(0);
        for k in 1..=to - from {
            s = s.then(self.p, &at(k));
        }
        Some(s)
    }

    /// Moves within one route: relocate u after or before v, swap them, reverse the stretch
    /// between them. Distances first, segments only for promising ones.
    fn try_intra(&mut self, u: usize, v: usize) -> bool {
        let r = self.route_of[u];
        let (iu, jv) = (self.pos_of[u], self.pos_of[v]);
        let route = &self.routes[r];
        let nodes = &route.nodes;
        let d = |i: usize, j: usize| self.p.dist(nodes[i] as usize, nodes[j] as usize);
        let slack = route.cost - route.base;
        let vt = route.vehicle_type;
        let su = self.client_seg[u];
        let mut best: Option<(i64, IntraMove)> = None;
        let mut consider =
            |dist_delta: i64, m: IntraMove, build: &dyn Fn() -> (Segment, Vec<Segment>, Option<Segment>)| {
                let bound = best.as_ref().map_or(0, |(b, _)| *b);
                if dist_delta - slack >= bound {
                    return;
                }
                let (start, middle, tail) = build();
                let delta = self.cost(vt, &start, &middle, tail.as_ref(), true) - route.cost;
                if delta < bound {
                    best = Some((delta, m));
                }
            };
        for after in [jv, jv - 1] {
            if after == iu || after + 1 == iu {
                continue;
            }
            // Take u out, put it between `after` and its successor.
            let dist_delta = d(iu - 1, iu + 1) - d(iu - 1, iu) - d(iu, iu + 1) + d(after, iu) + d(iu, after + 1)
                - d(after, after + 1);
            consider(dist_delta, IntraMove::Relocate { after }, &|| {
                if after > iu {
                    let mut middle: Vec<Segment> = self.between(r, iu + 1, after, false).into_iter().collect();
                    middle.push(su);
                    (route.pre[iu - 1], middle, route.tail(after + 1).copied())
                } else {
                    let mut middle = vec![su];
                    middle.extend(self.between(r, after + 1, iu - 1, false));
                    (route.pre[after], middle, route.tail(iu + 1).copied())
                }
            });
        }
        let (lo, hi) = (iu.min(jv), iu.max(jv));
        let swap_delta = if hi == lo + 1 {
            d(lo - 1, hi) + d(hi, lo) + d(lo, hi + 1) - d(lo - 1, lo) - d(lo, hi) - d(hi, hi + 1)
        } else {
            d(lo - 1, hi) + d(hi, lo + 1) + d(hi - 1, lo) + d(lo, hi + 1)
                - d(lo - 1, lo)
                - d(lo, lo + 1)
                - d(hi - 1, hi)
                - d(hi, hi + 1)
        };
        consider(swap_delta, IntraMove::Swap { lo, hi }, &|| {
            let mut middle = vec![self.client_seg[nodes[hi] as usize]];
            middle.extend(self.between(r, lo + 1, hi - 1, false));
            middle.push(self.client_seg[nodes[lo] as usize]);
            (route.pre[lo - 1], middle, route.tail(hi + 1).copied())
        });
        for from in [lo, lo + 1] {
            if hi <= from {
                continue;
            }
            let inner: i64 = (from..hi).map(|i| d(i + 1, i) - d(i, i + 1)).sum();
            let dist_delta = d(from - 1, hi) + d(from, hi + 1) - d(from - 1, from) - d(hi, hi + 1) + inner;
            consider(dist_delta, IntraMove::Reverse { from, to: hi }, &|| {
                let middle: Vec<Segment> = self.between(r, from, hi, true).into_iter().collect();
                (route.pre[from - 1], middle, route.tail(hi + 1).copied())
            });
        }
        let Some((_, m)) = best else { return false };
        let mut nodes = self.routes[r].nodes.clone();
        match m {
            IntraMove::Relocate { after } => {
                let x = nodes.remove(iu);
                nodes.insert(if after > iu { after } else { after + 1 }, x);
            }
            IntraMove::Swap { lo, hi } => nodes.swap(lo, hi),
            IntraMove::Reverse { from, to } => nodes[from..=to].reverse(),
        }
        self.commit(r, nodes);
        true
    }

    /// Moves `u` into an empty route, if one of its vehicles would serve it better.
    fn try_empty_route(&mut self, u: usize) -> bool {
        let ru = self.route_of[u];
        let iu = self.pos_of[u];
        let a = &self.routes[ru];
        let without = self.cost(a.vehicle_type, &a.pre[iu - 1], &[], a.tail(iu + 1), a.clients() > 1);
        let mut best: Option<(i64, usize)> = None;
        let mut seen_types = Vec::new();
        for (r, route) in self.routes.iter().enumerate() {
            if route.clients() > 0 || seen_types.contains(&route.vehicle_type) {
                continue;
            }
            seen_types.push(route.vehicle_type);
            let alone = self.cost(route.vehicle_type, &route.pre[0], &[self.seg(u as u32)], None, true);
            let delta = without + alone - a.cost;
            if delta < 0 && best.is_none_or(|(d, _)| delta < d) {
                best = Some((delta, r));
            }
        }
        let Some((_, r)) = best else { return false };
        let mut na = self.routes[ru].nodes.clone();
        na.remove(iu);
        let mut nr = self.routes[r].nodes.clone();
        nr.insert(1, u as u32);
        self.commit(ru, na);
        self.commit(r, nr);
        true
    }

    /// SWAP* (Vidal 2022) between pairs of routes that are near each other (a client of one has
    /// a close client in the other): `u` of one and `v` of the other trade routes, each
    /// inserted where it fits best in the other route, not necessarily where the other was.
    /// Candidates are judged by distance and load, the best evaluated exactly and applied.
    fn swap_star(&mut self) -> bool {
        let mut improved = false;
        let n = self.routes.len();
        let mut near = vec![false; n];
        for ra in 0..n {
            if self.routes[ra].clients() == 0 {
                continue;
            }
            near.iter_mut().for_each(|x| *x = false);
            for &u in &self.routes[ra].nodes[1..self.routes[ra].nodes.len() - 1] {
                for &v in &self.neighbours[u as usize] {
                    near[self.route_of[v as usize]] = true;
                }
            }
            for (rb, &close) in near.iter().enumerate().skip(ra + 1) {
                if close && self.routes[rb].clients() > 0 && self.swap_star_pair(ra, rb) {
                    improved = true;
                }
            }
        }
        improved
    }

    fn swap_star_pair(&mut self, ra: usize, rb: usize) -> bool {
        let p = self.p;
        let (a, b) = (&self.routes[ra], &self.routes[rb]);
        let (ka, kb) = (a.clients(), b.clients());
        let d = |x: u32, y: u32| p.dist(x as usize, y as usize);
        // The three cheapest places (by detour) for a node in a route.
        let top3 = |into: &LsRoute, node: u32| -> [(i64, usize); 3] {
            let mut best = [(i64::MAX, 0usize); 3];
            for j in 0..into.nodes.len() - 1 {
                let (x, y) = (into.nodes[j], into.nodes[j + 1]);
                let detour = d(x, node) + d(node, y) - d(x, y);
                if detour < best[2].0 {
                    best[2] = (detour, j);
                    best.sort_unstable();
                }
            }
            best
        };
        let removal = |r: &LsRoute, i: usize| {
            let (x, u, y) = (r.nodes[i - 1], r.nodes[i], r.nodes[i + 1]);
            d(x, y) - d(x, u) - d(u, y)
        };
        // Cheapest insertion of a node in `into` once its client at `removed` is gone: at one of
        // its top places not next to the removed one, or in the removed one's place.
        let insertion = |into: &LsRoute, tops: &[(i64, usize); 3], node: u32, removed: usize| -> (i64, usize) {
            let (x, y) = (into.nodes[removed - 1], into.nodes[removed + 1]);
            let mut best = (d(x, node) + d(node, y) - d(x, y), removed - 1);
            for &(detour, at) in tops {
                if detour < best.0 && at != removed && at + 1 != removed {
                    best = (detour, at);
                }
            }
            best
        };
        let va = &p.vehicle_types[a.vehicle_type];
        let vb = &p.vehicle_types[b.vehicle_type];
        let load_a = a.pre[ka].delivery;
        let load_b = b.pre[kb].delivery;
        let penalty = |l: crate::Load, cap: crate::Load| self.penalties.load * l.excess(cap);
        let base = penalty(load_a, va.capacity) + penalty(load_b, vb.capacity);
        let tops_a_in_b: Vec<[(i64, usize); 3]> = (1..=ka).map(|i| top3(b, a.nodes[i])).collect();
        let tops_b_in_a: Vec<[(i64, usize); 3]> = (1..=kb).map(|j| top3(a, b.nodes[j])).collect();
        let mut best: Option<(i64, usize, usize, usize, usize)> = None;
        for i in 1..=ka {
            let u = a.nodes[i];
            let du = p.client(u as usize).delivery;
            let remove_u = removal(a, i);
            for j in 1..=kb {
                let v = b.nodes[j];
                let dv = p.client(v as usize).delivery;
                let new_a = crate::Load(std::array::from_fn(|k| load_a.0[k] - du.0[k] + dv.0[k]));
                let new_b = crate::Load(std::array::from_fn(|k| load_b.0[k] - dv.0[k] + du.0[k]));
                let load_delta = penalty(new_a, va.capacity) + penalty(new_b, vb.capacity) - base;
                let (into_b, pa) = insertion(b, &tops_a_in_b[i - 1], u, j);
                let (into_a, pb) = insertion(a, &tops_b_in_a[j - 1], v, i);
                let delta = remove_u + removal(b, j) + into_b + into_a + load_delta;
                if delta < 0 && best.is_none_or(|(bd, ..)| delta < bd) {
                    best = Some((delta, i, j, pa, pb));
                }
            }
        }
        let Some((_, i, j, pa, pb)) = best else { return false };
        let na = build_swapped(&a.nodes, i, b.nodes[j], pb);
        let nb = build_swapped(&b.nodes, j, a.nodes[i], pa);
        let delta = self.cost_of_nodes(a.vehicle_type, &na) + self.cost_of_nodes(b.vehicle_type, &nb) - a.cost - b.cost;
        if delta >= 0 {
            return false;
        }
        self.commit(ra, na);
        self.commit(rb, nb);
        true
    }
}

/// `nodes` without position `removed`, with `inserted` placed after position `after` (of the
/// original list; `after` may be the removed one's predecessor, meaning in its place).
fn build_swapped(nodes: &[u32], removed: usize, inserted: u32, after: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(nodes.len());
    for (k, &n) in nodes.iter().enumerate() {
        if k != removed {
            out.push(n);
        }
        if k == after {
            out.push(inserted);
        }
    }
    out
}

/// A route in the making: a prefix (with its depot), clients in the middle, a tail of clients,
/// and whether there is any client at all.
type Shape<'s> = (&'s Segment, &'s [Segment], Option<&'s Segment>, bool);

#[derive(Debug, Clone, Copy)]
enum IntraMove {
    Relocate { after: usize },
    Swap { lo: usize, hi: usize },
    Reverse { from: usize, to: usize },
}

#[derive(Debug, Clone, Copy)]
enum Move {
    Relocate { n: usize, reversed: bool, after: usize },
    Swap { nu: usize, nv: usize },
    TwoOptStar { i: usize, j: usize },
}
