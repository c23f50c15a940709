//! Hybrid genetic search (Vidal et al. 2012; Vidal 2022): a population of solutions improved by
//! local search, recombined by order crossover on giant tours cut back into routes by an
//! optimal split, kept diverse by ranking on cost and on distance to the others, with
//! infeasible solutions allowed under adaptive penalties.

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::ls::{neighbourhoods, LocalSearch, DEFAULT_GRANULARITY};
use crate::problem::Problem;
use crate::segment::{Penalties, RouteCost, Segment};
use crate::solution::{Route, Solution, Totals};

#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Smallest size of each subpopulation (µ).
    pub population: usize,
    /// Offspring before a survivor selection (λ).
    pub generation: usize,
    /// Best solutions protected from diversity pressure.
    pub elite: usize,
    /// Closest solutions a solution's diversity is measured against.
    pub close: usize,
    pub granularity: usize,
    /// Share of local-search results that should be feasible; penalties adapt to it.
    pub target_feasible: f64,
    /// Chance that an infeasible offspring is repaired with ten times the penalties.
    pub repair: f64,
    /// Iterations without a better solution before the population restarts.
    pub restart_after: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            population: 12,
            generation: 20,
            elite: 4,
            close: 5,
            granularity: DEFAULT_GRANULARITY,
            target_feasible: 0.2,
            repair: 1.0,
            restart_after: 20_000,
        }
    }
}

impl Params {
    /// A smaller population (8 + 16), for when the budget allows few generations: short time
    /// limits, or a day of a few hundred stops in seconds. Short runs gain more from more
    /// generations than from a wider population (measured on the benchmark sets: Solomon at
    /// 1 s 0.61 % with 8 + 16 against about 0.70 % with 12 + 20; at 5 s 0.30 % against 0.23 %).
    pub fn quick() -> Params {
        Params { population: 8, generation: 16, ..Params::default() }
    }

    /// The defaults, or [`Params::quick`] under 3 s (100-client instances).
    pub fn for_time_limit(limit: Duration) -> Params {
        if limit < Duration::from_secs(3) {
            Params::quick()
        } else {
            Params::default()
        }
    }
}

/// When to stop: at the deadline or after so many iterations, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub time: Option<Duration>,
    pub iterations: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The best feasible solution found, or the least infeasible one.
    pub solution: Solution,
    pub totals: Totals,
    pub iterations: u64,
}

#[derive(Debug, Clone)]
struct Individual {
    solution: Solution,
    giant: Vec<usize>,
    totals: Totals,
    penalised: i64,
    /// (predecessor, successor) of every node.
    links: Vec<(usize, usize)>,
    fitness: f64,
    /// Unique within a run: how the others' distance lists name it.
    id: u64,
    /// Broken-pairs distance to each other member of its subpopulation, closest first.
    near: Vec<(f64, u64)>,
}

impl Individual {
    fn new(p: &Problem, solution: Solution, penalties: &Penalties) -> Individual {
        let totals = solution.totals(p);
        Individual {
            giant: solution.giant_tour(),
            links: solution.neighbours(p),
            penalised: totals.penalised(penalties),
            totals,
            solution,
            fitness: 0.0,
            id: 0,
            near: Vec::new(),
        }
    }

    /// Broken-pairs distance: the share of clients whose neighbours differ (either way round).
    fn distance(&self, other: &Individual, p: &Problem) -> f64 {
        let clients = p.client_nodes();
        let n = clients.len().max(1);
        let broken = clients
            .filter(|&c| {
                let (a, b) = (self.links[c], other.links[c]);
                a != b && a != (b.1, b.0)
            })
            .count();
        broken as f64 / n as f64
    }
}

struct Population {
    feasible: Vec<Individual>,
    infeasible: Vec<Individual>,
}

impl Population {
    fn all(&self) -> impl Iterator<Item = &Individual> {
        self.feasible.iter().chain(&self.infeasible)
    }
}

/// Adds `ind` to a subpopulation, recording its distance to every member (both ways).
fn insert(sub: &mut Vec<Individual>, mut ind: Individual, p: &Problem) {
    for other in sub.iter_mut() {
        let d = ind.distance(other, p);
        let at = other.near.partition_point(|x| x.0 < d);
        other.near.insert(at, (d, ind.id));
        ind.near.push((d, other.id));
    }
    ind.near.sort_by(|a, b| a.0.total_cmp(&b.0));
    sub.push(ind);
}

fn remove(sub: &mut Vec<Individual>, index: usize) {
    let gone = sub.swap_remove(index).id;
    for other in sub.iter_mut() {
        other.near.retain(|x| x.1 != gone);
    }
}

/// Biased fitness: rank by cost, plus rank by (lack of) diversity weighted by how many are not
/// elite. Lower is better.
fn rank(sub: &mut [Individual], params: &Params) {
    let n = sub.len();
    if n == 0 {
        return;
    }
    sub.sort_by_key(|i| i.penalised);
    let diversity: Vec<f64> = sub
        .iter()
        .map(|ind| {
            let k = params.close.min(ind.near.len()).max(1);
            ind.near.iter().take(k).map(|x| x.0).sum::<f64>() / k as f64
        })
        .collect();
    let mut by_diversity: Vec<usize> = (0..n).collect();
    by_diversity.sort_by(|&a, &b| diversity[b].total_cmp(&diversity[a]));
    let mut div_rank = vec![0.0; n];
    for (r, &i) in by_diversity.iter().enumerate() {
        div_rank[i] = r as f64 / (n.max(2) - 1) as f64;
    }
    let weight = 1.0 - params.elite.min(n) as f64 / n as f64;
    for (i, ind) in sub.iter_mut().enumerate() {
        ind.fitness = i as f64 / (n.max(2) - 1) as f64 + weight * div_rank[i];
    }
}

/// Removes the worst (clones first) until `params.population` remain.
fn survivors(sub: &mut Vec<Individual>, params: &Params) {
    while sub.len() > params.population {
        let worst = match (0..sub.len()).find(|&i| sub[i].near.first().is_some_and(|x| x.0 == 0.0)) {
            Some(clone) => clone,
            None => {
                rank(sub, params);
                (0..sub.len()).max_by(|&a, &b| sub[a].fitness.total_cmp(&sub[b].fitness)).expect("not empty")
            }
        };
        remove(sub, worst);
    }
}

/// Cuts a giant tour into routes at least cost (penalised), by dynamic programming over where
/// each route starts; at most `fleet` routes, all of the first vehicle type of the largest
/// capacity (other types are then given to routes by size).
pub fn split(p: &Problem, giant: &[usize], penalties: &Penalties) -> Solution {
    let n = giant.len();
    if n == 0 {
        return Solution::default();
    }
    let vt = (0..p.vehicle_types.len())
        .filter(|&t| p.vehicle_types[t].count > 0)
        .max_by_key(|&t| (p.vehicle_types[t].capacity.0[0], std::cmp::Reverse(t)))
        .expect("a vehicle");
    let v = &p.vehicle_types[vt];
    let depot = Segment::depot(v);
    let fleet = p.fleet_size().min(n);
    // cost[i][j]: route of clients i..j, computed as the routes grow (bounded by load).
    let limit = v.capacity.0[0].saturating_mul(3) / 2;
    let route_costs: Vec<Vec<i64>> = (0..n)
        .map(|i| {
            let mut costs = Vec::new();
            let mut s = depot;
            for &c in &giant[i..] {
                s = s.then(p, &Segment::client(p, c));
                costs.push(RouteCost::of(v, &s.then(p, &depot)).penalised(penalties));
                if s.max_load.0[0] > limit && costs.len() > 1 {
                    break;
                }
            }
            costs
        })
        .collect();
    const INF: i64 = i64::MAX / 4;
    let solve = |max_routes: usize| -> Option<Vec<usize>> {
        // best[k][j]: cost of the first j clients in k routes.
        let mut best = vec![vec![INF; n + 1]; max_routes + 1];
        let mut from = vec![vec![0usize; n + 1]; max_routes + 1];
        best[0][0] = 0;
        for k in 0..max_routes {
            for i in 0..n {
                if best[k][i] >= INF {
                    continue;
                }
                for (len, cost) in route_costs[i].iter().enumerate() {
                    let j = i + len + 1;
                    let c = best[k][i] + cost;
                    if c < best[k + 1][j] {
                        best[k + 1][j] = c;
                        from[k + 1][j] = i;
                    }
                }
            }
        }
        let k = (1..=max_routes).filter(|&k| best[k][n] < INF).min_by_key(|&k| best[k][n])?;
        let mut cuts = Vec::new();
        let (mut k, mut j) = (k, n);
        while j > 0 {
            cuts.push(from[k][j]);
            j = from[k][j];
            k -= 1;
        }
        cuts.reverse();
        Some(cuts)
    };
    // Unlimited first (one pass, cheap); the fleet bound only when it matters.
    let mut pot = vec![INF; n + 1];
    let mut pred = vec![0usize; n + 1];
    pot[0] = 0;
    for i in 0..n {
        if pot[i] >= INF {
            continue;
        }
        for (len, cost) in route_costs[i].iter().enumerate() {
            let j = i + len + 1;
            if pot[i] + cost < pot[j] {
                pot[j] = pot[i] + cost;
                pred[j] = i;
            }
        }
    }
    let mut cuts = Vec::new();
    if pot[n] < INF {
        let mut j = n;
        while j > 0 {
            cuts.push(pred[j]);
            j = pred[j];
        }
        cuts.reverse();
    }
    if cuts.is_empty() || cuts.len() > fleet {
        cuts = solve(fleet).unwrap_or_else(|| (0..fleet).map(|k| k * n / fleet).collect());
    }
    let mut routes: Vec<Route> = cuts
        .iter()
        .enumerate()
        .map(|(r, &start)| {
            let end = cuts.get(r + 1).copied().unwrap_or(n);
            Route { vehicle_type: vt, visits: giant[start..end].to_vec() }
        })
        .collect();
    assign_vehicle_types(p, &mut routes);
    Solution { routes }
}

/// Gives routes vehicle types within the fleet: routes with the most chilled goods first, then
/// the heaviest, each the first type left that holds it (most cold, then most room, first), or
/// failing that the largest left.
fn assign_vehicle_types(p: &Problem, routes: &mut [Route]) {
    if p.vehicle_types.len() == 1 {
        return;
    }
    let cold = crate::problem::DIMS - 1;
    let mut types: Vec<usize> = (0..p.vehicle_types.len()).collect();
    types.sort_by_key(|&t| {
        let c = p.vehicle_types[t].capacity;
        std::cmp::Reverse((c.0[cold], c.0[0]))
    });
    let mut left: Vec<usize> = p.vehicle_types.iter().map(|v| v.count).collect();
    let load =
        |r: &Route| r.visits.iter().fold(crate::Load::ZERO, |l, &c| l + p.client(c).delivery.max(p.client(c).pickup));
    let mut order: Vec<usize> = (0..routes.len()).collect();
    order.sort_by_key(|&r| {
        let l = load(&routes[r]);
        std::cmp::Reverse((l.0[cold], l.0[0]))
    });
    for r in order {
        let need = load(&routes[r]);
        let chosen = types
            .iter()
            .copied()
            .find(|&t| left[t] > 0 && need.fits(p.vehicle_types[t].capacity))
            .or_else(|| types.iter().copied().find(|&t| left[t] > 0));
        if let Some(t) = chosen {
            left[t] -= 1;
            routes[r].vehicle_type = t;
        }
    }
}

/// Order crossover (OX): a slice of one parent's giant tour, the rest in the other's order.
fn crossover(a: &[usize], b: &[usize], rng: &mut impl Rng, nodes: usize) -> Vec<usize> {
    let n = a.len();
    if n < 2 {
        return a.to_vec();
    }
    let start = rng.random_range(0..n);
    let mut end = rng.random_range(0..n);
    while end == start {
        end = rng.random_range(0..n);
    }
    let mut child = vec![usize::MAX; n];
    let mut taken = vec![false; nodes];
    let mut i = start;
    while i != (end + 1) % n {
        child[i] = a[i];
        taken[a[i]] = true;
        i = (i + 1) % n;
    }
    let mut at = (end + 1) % n;
    for k in 0..n {
        let c = b[(end + 1 + k) % n];
        if !taken[c] {
            child[at] = c;
            at = (at + 1) % n;
        }
    }
    child
}

/// The search's state between generations.
struct Search<'a> {
    p: &'a Problem,
    params: &'a Params,
    rng: SmallRng,
    ls: LocalSearch<'a>,
    penalties: Penalties,
    population: Population,
    next_id: u64,
    /// Whether each recent local search ended feasible in load, in time.
    load_log: Vec<bool>,
    time_log: Vec<bool>,
    best: Option<Individual>,
    best_infeasible: Option<Individual>,
}

impl Search<'_> {
    /// Improves `solution` by local search (and, when infeasible, tries to repair it under ten
    /// times the penalties), files it in its subpopulation, keeps it if it is the best so far,
    /// and adapts the penalties. Says whether it is a new best.
    fn educate(&mut self, solution: Solution) -> bool {
        let (p, penalties) = (self.p, self.penalties);
        let improved = self.ls.run(&solution, penalties, &mut self.rng);
        let mut ind = Individual::new(p, improved, &penalties);
        self.load_log.push(ind.totals.excess_load == 0);
        self.time_log.push(ind.totals.time_warp == 0);
        if !ind.totals.feasible() && self.rng.random_bool(self.params.repair) {
            let repaired = self.ls.run(&ind.solution, penalties.scaled(10), &mut self.rng);
            let candidate = Individual::new(p, repaired, &penalties);
            if candidate.totals.feasible() {
                ind = candidate;
            }
        }
        self.next_id += 1;
        ind.id = self.next_id;
        let feasible = ind.totals.feasible();
        let better = feasible && self.best.as_ref().is_none_or(|b| ind.totals.cost() < b.totals.cost());
        if better {
            self.best = Some(ind.clone());
        } else if !feasible
            && self.best.is_none()
            && self.best_infeasible.as_ref().is_none_or(|b| ind.penalised < b.penalised)
        {
            self.best_infeasible = Some(ind.clone());
        }
        let sub = if feasible { &mut self.population.feasible } else { &mut self.population.infeasible };
        insert(sub, ind, p);
        self.adapt();
        better
    }

    /// Every 50 local searches: penalties up by a fifth when too few results were feasible (in
    /// load, in time), down when too many.
    fn adapt(&mut self) {
        if self.load_log.len() < 50 {
            return;
        }
        let target = self.params.target_feasible;
        let step = |penalty: i64, log: &mut Vec<bool>| -> i64 {
            let share = log.iter().filter(|f| **f).count() as f64 / log.len() as f64;
            log.clear();
            if share < target - 0.05 {
                ((penalty as f64 * 1.2).ceil() as i64).min(1 << 40)
            } else if share > target + 0.05 {
                ((penalty as f64 * 0.85) as i64).max(1)
            } else {
                penalty
            }
        };
        self.penalties.load = step(self.penalties.load, &mut self.load_log);
        self.penalties.time = step(self.penalties.time, &mut self.time_log);
        for ind in self.population.infeasible.iter_mut() {
            ind.penalised = ind.totals.penalised(&self.penalties);
        }
    }

    /// A parent's giant tour, by binary tournament on biased fitness over both subpopulations.
    fn parent(&mut self) -> Vec<usize> {
        let n = self.population.feasible.len() + self.population.infeasible.len();
        let (i, j) = (self.rng.random_range(0..n), self.rng.random_range(0..n));
        let (a, b) = (self.population.all().nth(i).expect("drawn"), self.population.all().nth(j).expect("drawn"));
        if a.fitness <= b.fitness {
            a.giant.clone()
        } else {
            b.giant.clone()
        }
    }
}

/// Solves `p` from `seed` within `limits`. The same seed and iteration limit give the same
/// answer; with a time limit, the best found by then.
pub fn solve(p: &Problem, params: &Params, seed: u64, limits: Limits) -> Outcome {
    let started = Instant::now();
    let neighbours = neighbourhoods(p, params.granularity);
    let (mut max_dist, mut max_time) = (1, 1);
    for i in 0..p.nodes() {
        for j in 0..p.nodes() {
            (max_dist, max_time) = (max_dist.max(p.dist(i, j)), max_time.max(p.time(i, j)));
        }
    }
    let max_demand = p.clients.iter().map(|c| c.delivery.0[0].max(c.pickup.0[0])).max().unwrap_or(1).max(1);
    let mut search = Search {
        p,
        params,
        rng: SmallRng::seed_from_u64(seed),
        ls: LocalSearch::new(p, &neighbours),
        // A unit over capacity or late costs about what the longest trip costs per unit of
        // demand or of time; then the penalties adapt to how often the search stays feasible.
        penalties: Penalties {
            load: (max_dist / max_demand).clamp(1, 100_000),
            time: (max_dist / max_time).clamp(1, 100_000),
        },
        population: Population { feasible: Vec::new(), infeasible: Vec::new() },
        next_id: 0,
        load_log: Vec::new(),
        time_log: Vec::new(),
        best: None,
        best_infeasible: None,
    };
    let clients: Vec<usize> = p.client_nodes().collect();
    let mut iterations = 0u64;
    let out_of_time = |iterations: u64| {
        limits.time.is_some_and(|t| started.elapsed() >= t) || limits.iterations.is_some_and(|n| iterations >= n)
    };
    'search: loop {
        // A fresh population of random giant tours (first start, or a restart).
        for _ in 0..4 * params.population {
            if out_of_time(iterations) && (search.best.is_some() || search.best_infeasible.is_some()) {
                break 'search;
            }
            let mut giant = clients.clone();
            giant.shuffle(&mut search.rng);
            let s = split(p, &giant, &search.penalties);
            search.educate(s);
        }
        survivors(&mut search.population.feasible, params);
        survivors(&mut search.population.infeasible, params);
        let mut since_best = 0u64;
        while !out_of_time(iterations) {
            iterations += 1;
            since_best += 1;
            rank(&mut search.population.feasible, params);
            rank(&mut search.population.infeasible, params);
            let (a, b) = (search.parent(), search.parent());
            let child = crossover(&a, &b, &mut search.rng, p.nodes());
            let s = split(p, &child, &search.penalties);
            if search.educate(s) {
                since_best = 0;
            }
            for sub in [&mut search.population.feasible, &mut search.population.infeasible] {
                if sub.len() > params.population + params.generation {
                    survivors(sub, params);
                }
            }
            if since_best >= params.restart_after {
                search.population.feasible.clear();
                search.population.infeasible.clear();
                continue 'search;
            }
        }
        break;
    }
    let chosen = search.best.or(search.best_infeasible).expect("at least one solution was made");
    Outcome { totals: chosen.totals, solution: chosen.solution, iterations }
}
