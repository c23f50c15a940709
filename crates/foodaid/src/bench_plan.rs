//! `foodaid bench plan`: a synthetic day of the collective's transport — supermarket and farm
//! pickups in the morning, relay-point deliveries in the afternoon, some chilled — planned for
//! a mixed fleet within a time limit, and checked by the independent validator.

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use routing::{Client, Limits, Load, Params, Problem, VehicleType};
use serde::Serialize;

#[derive(Debug, Serialize)]
struct Figures {
    stops: usize,
    vehicles: usize,
    threads: usize,
    seconds: f64,
    time_limit_s: f64,
    served: usize,
    unserved: std::collections::BTreeMap<&'static str, usize>,
    routes: usize,
    km: f64,
    /// The plan checked stop by stop: capacity, cold, windows, shifts.
    feasible: bool,
    /// Kilometres if each stop had its own trip from the warehouse and back (the naive plan).
    baseline_km: f64,
    km_ratio: f64,
}

/// A seeded day around Lyon: the warehouse at Gerland, stops within about 20 km.
fn day(stops: usize, vehicles: usize, seed: u64) -> Problem {
    let mut rng = SmallRng::seed_from_u64(seed);
    let warehouse = (45.7300, 4.8300);
    let mut points = vec![warehouse];
    let mut clients = Vec::with_capacity(stops);
    for k in 0..stops {
        points.push((warehouse.0 + rng.random_range(-0.15..0.15), warehouse.1 + rng.random_range(-0.2..0.2)));
        let pickup = k % 5 < 2;
        let kg = rng.random_range(if pickup { 25..90 } else { 10..45 }) * 1000;
        let chilled = if rng.random_bool(0.3) { kg * rng.random_range(10..50) / 100 } else { 0 };
        let litres = kg / 400;
        let load = Load([kg, litres, chilled]);
        // Supermarkets give in the morning; relay points open for three or four hours from late
        // morning on.
        let (open, hours) = if pickup {
            (rng.random_range(7..10) * 3600, rng.random_range(2..4) * 3600)
        } else {
            (rng.random_range(10..15) * 3600, rng.random_range(3..5) * 3600)
        };
        clients.push(Client {
            delivery: if pickup { Load::ZERO } else { load },
            pickup: if pickup { load } else { Load::ZERO },
            service: 10 * 60,
            early: open,
            late: open + hours,
        });
    }
    let (dist, time) = routing::geo::matrices(&points, 1.3, 30.0);
    let fridges = vehicles * 2 / 5;
    let shift = |mut v: VehicleType| {
        (v.early, v.late, v.max_duration) = (7 * 3600, 19 * 3600, 10 * 3600);
        v
    };
    let types = vec![
        shift(VehicleType::new(fridges, Load([1_000_000, 6_000, 400_000]), 0)),
        shift(VehicleType::new(vehicles - fridges, Load([1_200_000, 8_000, 0]), 0)),
    ];
    Problem::new(1, clients, types, dist, time).expect("a well-formed day")
}

pub fn run(
    stops: usize,
    vehicles: usize,
    time_limit: f64,
    seed: u64,
    threads: usize,
    json: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(stops > 0 && vehicles > 0 && threads > 0, "--stops, --vehicles and --threads are positive");
    anyhow::ensure!(time_limit > 0.0, "--time-limit is a number of seconds above 0");
    let p = day(stops, vehicles, seed);
    let started = Instant::now();
    let limits = Limits { time: Some(Duration::from_secs_f64(time_limit)), iterations: None };
    // A day of a few hundred stops gets few generations in seconds: the quick population.
    let plan = routing::plan_parallel(&p, &Params::quick(), seed, limits, threads);
    let seconds = started.elapsed().as_secs_f64();
    let left_out: Vec<usize> = plan.unserved.iter().map(|(c, _)| *c).collect();
    let feasible = routing::validate(&p, &plan.solution, &left_out).is_empty();
    let mut unserved = std::collections::BTreeMap::new();
    for (_, why) in &plan.unserved {
        *unserved.entry(why.code()).or_default() += 1;
    }
    let baseline: i64 = p.client_nodes().filter(|c| !left_out.contains(c)).map(|c| p.dist(0, c) + p.dist(c, 0)).sum();
    let km = plan.totals.dist as f64 / 1000.0;
    let f = Figures {
        stops,
        vehicles,
        threads,
        seconds,
        time_limit_s: time_limit,
        served: stops - left_out.len(),
        unserved,
        routes: plan.totals.routes,
        km,
        feasible,
        baseline_km: baseline as f64 / 1000.0,
        km_ratio: km / (baseline as f64 / 1000.0).max(1e-9),
    };
    if json {
        println!("{}", serde_json::to_string(&f)?);
    } else {
        println!(
            "{} stops, {} vehicles, {} thread(s): planned in {:.2} s (limit {:.1} s); {} served on {} routes, {:.1} km \
             ({:.2} × the {:.1} km of one trip per stop); left out {:?}; feasible: {}",
            f.stops,
            f.vehicles,
            f.threads,
            f.seconds,
            f.time_limit_s,
            f.served,
            f.routes,
            f.km,
            f.km_ratio,
            f.baseline_km,
            f.unserved,
            f.feasible
        );
    }
    Ok(())
}
