//! The search's segment algebra against the independent validator, on random problems with
//! deliveries and pickups, windows, shifts, two vehicle types at two depots; and the search on
//! small instances.

use proptest::prelude::*;
use routing::{solve, validate, Client, Limits, Load, Params, Problem, Route, Solution, VehicleType, Violation};

/// A random problem: `n` clients on a 100 × 100 grid, two depots.
fn problem(n: usize, seed: &[i64]) -> Problem {
    let at = |k: usize| seed[k % seed.len()].rem_euclid(100);
    let nodes = n + 2;
    let xy: Vec<(i64, i64)> = (0..nodes).map(|i| (at(3 * i), at(3 * i + 1))).collect();
    let mut m = vec![0; nodes * nodes];
    for i in 0..nodes {
        for j in 0..nodes {
            let (a, b) = (xy[i], xy[j]);
            m[i * nodes + j] = (((a.0 - b.0).pow(2) + (a.1 - b.1).pow(2)) as f64).sqrt().round() as i64;
        }
    }
    let clients = (0..n)
        .map(|i| {
            let early = at(7 * i + 2) * 3;
            Client {
                delivery: Load([at(5 * i) % 30, at(5 * i + 1) % 7, if i % 3 == 0 { at(i) % 10 } else { 0 }]),
                pickup: Load([if i % 4 == 0 { at(11 * i) % 20 } else { 0 }, 0, 0]),
                service: at(13 * i) % 10,
                early,
                late: early + 20 + at(17 * i) % 200,
            }
        })
        .collect();
    let mut fridge = VehicleType::new(2, Load([100, 20, 40]), 0);
    (fridge.early, fridge.late, fridge.max_duration) = (0, 600, 400);
    let mut van = VehicleType::new(3, Load([80, 30, 0]), 1);
    (van.early, van.late) = (0, 700);
    Problem::new(2, clients, vec![fridge, van], m.clone(), m).unwrap()
}

fn timing(v: &Violation) -> bool {
    matches!(v, Violation::Window { .. } | Violation::ReturnLate { .. } | Violation::ShiftLength { .. })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn segments_and_the_validator_agree_on_every_route(
        seed in prop::collection::vec(0i64..10_000, 20..60),
        n in 3usize..14,
        cuts in prop::collection::vec(0usize..5, 1..5),
    ) {
        let p = problem(n, &seed);
        // Clients dealt to routes of alternating vehicle types.
        let mut routes: Vec<Route> = Vec::new();
        let mut clients: Vec<usize> = p.client_nodes().collect();
        clients.rotate_left(seed[0] as usize % n);
        let mut rest = &clients[..];
        for (k, c) in cuts.iter().enumerate() {
            let take = (*c).min(rest.len());
            routes.push(Route { vehicle_type: k % 2, visits: rest[..take].to_vec() });
            rest = &rest[take..];
        }
        routes.push(Route { vehicle_type: 1, visits: rest.to_vec() });
        let s = Solution { routes };
        let totals = s.totals(&p);
        let violations = validate(&p, &s, &[]);
        let capacity = violations.iter().any(|v| matches!(v, Violation::Capacity { .. }));
        prop_assert_eq!(totals.excess_load > 0, capacity, "{:?} {:?}", totals, violations);
        prop_assert_eq!(totals.time_warp > 0, violations.iter().any(timing), "{:?} {:?}", totals, violations);
    }
}

#[test]
fn the_validator_names_what_is_wrong() {
    let p = problem(6, &[3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43, 38, 32, 79, 50, 28]);
    let s = Solution { routes: vec![Route { vehicle_type: 0, visits: vec![2, 3, 3, 9] }] };
    let v = validate(&p, &s, &[4]);
    assert!(v.contains(&Violation::Repeated { node: 3 }), "{v:?}");
    assert!(v.contains(&Violation::NotAClient { node: 9 }), "{v:?}");
    assert!(v.contains(&Violation::Missing { node: 5 }), "{v:?}");
    assert!(!v.contains(&Violation::Missing { node: 4 }), "left out on purpose");
    let crowded = Solution { routes: (0..3).map(|k| Route { vehicle_type: 0, visits: vec![2 + k] }).collect() };
    assert!(validate(&p, &crowded, &[5, 6, 7]).contains(&Violation::TooManyVehicles {
        vehicle_type: 0,
        used: 3,
        available: 2
    }));
}

#[test]
fn small_instances_are_solved_to_optimality_and_the_same_seed_gives_the_same_plan() {
    // Eight clients on a circle around the depot, capacity for four: two half-circles.
    let nodes = 9;
    let xy: Vec<(f64, f64)> = std::iter::once((0.0, 0.0))
        .chain((0..8).map(|k| {
            let a = k as f64 * std::f64::consts::PI / 4.0;
            (100.0 * a.cos(), 100.0 * a.sin())
        }))
        .collect();
    let mut m = vec![0; nodes * nodes];
    for i in 0..nodes {
        for j in 0..nodes {
            m[i * nodes + j] = ((xy[i].0 - xy[j].0).hypot(xy[i].1 - xy[j].1)).round() as i64;
        }
    }
    let clients = (0..8).map(|_| Client::new(Load::weight(1))).collect();
    let p = Problem::new(1, clients, vec![VehicleType::new(4, Load::weight(4), 0)], m.clone(), m).unwrap();
    let limits = Limits { time: None, iterations: Some(300) };
    let a = solve(&p, &Params::default(), 7, limits);
    assert!(validate(&p, &a.solution, &[]).is_empty());
    // Two routes: out 100, three chords of 77 between neighbours, back 100.
    assert_eq!((a.totals.routes, a.totals.dist), (2, 2 * (200 + 3 * 77)), "{:?}", a.solution);
    let b = solve(&p, &Params::default(), 7, limits);
    assert_eq!(a.solution, b.solution);
}

#[test]
fn a_plan_serves_what_the_fleet_can_and_says_why_not_the_rest() {
    // Depot at 0; clients on a line, 10 apart; a van with no cold box (20 kg), a small
    // refrigerated van (10 kg, 5 kg chilled), both on an 8-hour shift.
    let positions = [0i64, 10, 20, 30, 40, 50, 60, 70];
    let n = positions.len();
    let mut m = vec![0; n * n];
    for i in 0..n {
        for j in 0..n {
            m[i * n + j] = (positions[i] - positions[j]).abs();
        }
    }
    let mut clients: Vec<Client> = (1..n).map(|_| Client::new(Load([3, 0, 0]))).collect();
    clients[0].delivery = Load([4, 0, 4]); // node 1: chilled, fits the fridge
    clients[1].delivery = Load([8, 0, 8]); // node 2: more cold than any vehicle has
    clients[2].delivery = Load([25, 0, 0]); // node 3: heavier than any vehicle
    (clients[3].early, clients[3].late) = (500, 510); // node 4: after the shift
    let mut van = VehicleType::new(1, Load([20, 100, 0]), 0);
    let mut fridge = VehicleType::new(1, Load([10, 100, 5]), 0);
    for v in [&mut van, &mut fridge] {
        (v.early, v.late) = (0, 480);
    }
    let p = Problem::new(1, clients, vec![van, fridge], m.clone(), m).unwrap();
    let plan = routing::plan(&p, &Params::default(), 3, Limits { time: None, iterations: Some(200) });
    use routing::Unserved::*;
    assert_eq!(plan.unserved, [(2, NoRefrigeratedVehicle), (3, Capacity), (4, WindowUnreachable)], "{plan:?}");
    let left_out: Vec<usize> = plan.unserved.iter().map(|(c, _)| *c).collect();
    assert!(validate(&p, &plan.solution, &left_out).is_empty(), "{plan:?}");
    // The chilled client rides the refrigerated van.
    let route = plan.solution.routes.iter().find(|r| r.visits.contains(&1)).unwrap();
    assert_eq!(route.vehicle_type, 1);

    // Twice the clients the fleet can carry: some are left out, the plan still holds.
    let busy: Vec<Client> = (1..n).map(|_| Client::new(Load([9, 0, 0]))).collect();
    let p = Problem::new(1, busy, p.vehicle_types.clone(), p_matrix(&positions), p_matrix(&positions)).unwrap();
    let plan = routing::plan(&p, &Params::default(), 3, Limits { time: None, iterations: Some(200) });
    assert!(!plan.unserved.is_empty() && plan.unserved.iter().all(|(_, why)| *why == FleetFull), "{plan:?}");
    let left_out: Vec<usize> = plan.unserved.iter().map(|(c, _)| *c).collect();
    assert!(validate(&p, &plan.solution, &left_out).is_empty(), "{plan:?}");
    assert_eq!(plan.solution.routes.iter().map(|r| r.visits.len()).sum::<usize>() + left_out.len(), n - 1);
}

fn p_matrix(positions: &[i64]) -> Vec<i64> {
    let n = positions.len();
    (0..n * n).map(|k| (positions[k / n] - positions[k % n]).abs()).collect()
}

#[test]
fn searches_on_several_threads_keep_the_best_of_their_seeds_and_repeat() {
    let p = problem(20, &[17, 83, 5, 61, 29, 44, 97, 12, 70, 38, 3, 55]);
    let limits = Limits { time: None, iterations: Some(100) };
    let params = Params::quick();
    let alone: Vec<routing::Plan> = (0..3).map(|k| routing::plan(&p, &params, 11 + k, limits)).collect();
    let together = routing::plan_parallel(&p, &params, 11, limits, 3);
    let key = |plan: &routing::Plan| (plan.unserved.len(), plan.totals.cost());
    assert_eq!(Some(key(&together)), alone.iter().map(key).min(), "the best of the three seeds");
    assert!(alone.contains(&together));
    assert_eq!(together, routing::plan_parallel(&p, &params, 11, limits, 3), "the same answer again");
    let left_out: Vec<usize> = together.unserved.iter().map(|(c, _)| *c).collect();
    assert!(validate(&p, &together.solution, &left_out).is_empty());
}
