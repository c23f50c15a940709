//! Benchmark instance formats, parsed from text: CVRPLIB (TSPLIB-style `.vrp`, `EUC_2D`) and
//! Solomon's VRPTW tables. The caller reads the files.

use crate::problem::{Client, Load, Problem, ProblemError, VehicleType};
use crate::solution::Solution;

/// How distances are derived from coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// CVRPLIB: each distance rounded to the nearest integer.
    Nearest,
    /// Solomon: exact Euclidean distances (the search works in thousandths).
    Exact,
}

/// A parsed instance: the problem, and what it takes to report a solution's cost in the
/// instance's own terms.
#[derive(Debug, Clone)]
pub struct Instance {
    pub name: String,
    pub problem: Problem,
    /// Coordinates of every node, depots first (as in the problem).
    pub coords: Vec<(f64, f64)>,
    pub rounding: Rounding,
}

impl Instance {
    /// A solution's distance as the instance's best-known values count it.
    pub fn cost(&self, s: &Solution) -> f64 {
        match self.rounding {
            Rounding::Nearest => s.totals(&self.problem).dist as f64,
            Rounding::Exact => {
                let d = |a: usize, b: usize| {
                    let (p, q) = (self.coords[a], self.coords[b]);
                    ((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2)).sqrt()
                };
                let mut total = 0.0;
                for r in s.routes.iter().filter(|r| !r.visits.is_empty()) {
                    let depot = self.problem.vehicle_types[r.vehicle_type].depot;
                    let mut prev = depot;
                    for &c in &r.visits {
                        total += d(prev, c);
                        prev = c;
                    }
                    total += d(prev, depot);
                }
                total
            }
        }
    }
}

fn matrix(coords: &[(f64, f64)], f: impl Fn(f64) -> i64) -> Vec<i64> {
    let n = coords.len();
    let mut m = vec![0; n * n];
    for i in 0..n {
        for j in 0..n {
            let (a, b) = (coords[i], coords[j]);
            m[i * n + j] = f(((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt());
        }
    }
    m
}

fn bad(what: impl Into<String>) -> ProblemError {
    ProblemError(what.into())
}

/// A CVRPLIB instance (`EUC_2D`, one depot). The fleet is unlimited (as many vehicles as
/// clients), as in the benchmark's best-known solutions.
pub fn parse_cvrplib(text: &str) -> Result<Instance, ProblemError> {
    let mut name = String::new();
    let (mut dimension, mut capacity) = (0usize, 0i64);
    let mut coords: Vec<(usize, f64, f64)> = Vec::new();
    let mut demands: Vec<(usize, i64)> = Vec::new();
    let mut depot = 1usize;
    let mut section = "";
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some((key, value)) = line.split_once(':') {
            let (key, value) = (key.trim(), value.trim());
            match key {
                "NAME" => name = value.to_owned(),
                "DIMENSION" => dimension = value.parse().map_err(|_| bad("DIMENSION is a number"))?,
                "CAPACITY" => capacity = value.parse().map_err(|_| bad("CAPACITY is a number"))?,
                "EDGE_WEIGHT_TYPE" if value != "EUC_2D" => {
                    return Err(bad(format!("EDGE_WEIGHT_TYPE {value} is not supported (EUC_2D is)")))
                }
                _ => {}
            }
            section = "";
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[0] {
            "NODE_COORD_SECTION" | "DEMAND_SECTION" | "DEPOT_SECTION" => {
                section = fields[0];
                continue;
            }
            "EOF" => break,
            _ => {}
        }
        let num = |s: &str| s.parse::<f64>().map_err(|_| bad(format!("not a number: {s}")));
        match section {
            "NODE_COORD_SECTION" if fields.len() >= 3 => {
                coords.push((num(fields[0])? as usize, num(fields[1])?, num(fields[2])?))
            }
            "DEMAND_SECTION" if fields.len() >= 2 => demands.push((num(fields[0])? as usize, num(fields[1])? as i64)),
            "DEPOT_SECTION" => {
                let id = num(fields[0])?;
                if id > 0.0 {
                    depot = id as usize;
                }
            }
            _ => {}
        }
    }
    if dimension < 2 || coords.len() != dimension || demands.len() != dimension || capacity <= 0 {
        return Err(bad("a CVRPLIB instance has DIMENSION nodes with coordinates and demands, and a CAPACITY"));
    }
    // The depot first, then the clients in file order.
    let order: Vec<usize> = std::iter::once(depot).chain((1..=dimension).filter(|&i| i != depot)).collect();
    let coord_of = |id: usize| coords.iter().find(|c| c.0 == id).map(|c| (c.1, c.2));
    let demand_of = |id: usize| demands.iter().find(|d| d.0 == id).map(|d| d.1);
    let xy: Vec<(f64, f64)> = order
        .iter()
        .map(|&id| coord_of(id).ok_or_else(|| bad(format!("node {id} has no coordinates"))))
        .collect::<Result<_, _>>()?;
    let clients: Vec<Client> = order[1..]
        .iter()
        .map(|&id| {
            demand_of(id).map(|d| Client::new(Load::weight(d))).ok_or_else(|| bad(format!("node {id} has no demand")))
        })
        .collect::<Result<_, _>>()?;
    let m = matrix(&xy, |d| d.round() as i64);
    let vehicles = VehicleType::new(clients.len(), Load([capacity, 0, 0]), 0);
    let problem = Problem::new(1, clients, vec![vehicles], m.clone(), m)?;
    Ok(Instance { name, problem, coords: xy, rounding: Rounding::Nearest })
}

/// Whether `text` looks like a Solomon table.
pub fn is_solomon(text: &str) -> bool {
    text.contains("CUSTOMER") && text.contains("VEHICLE")
}

/// A Solomon VRPTW instance: node 0 is the depot (its window is the horizon). Distances and
/// times are exact Euclidean; the search counts them in thousandths.
pub fn parse_solomon(text: &str) -> Result<Instance, ProblemError> {
    const SCALE: i64 = 1000;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let name = lines.next().ok_or_else(|| bad("empty file"))?.to_owned();
    let mut numbers: Vec<Vec<f64>> = Vec::new();
    for line in lines {
        let fields: Vec<f64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
        if !fields.is_empty() && fields.len() == line.split_whitespace().count() {
            numbers.push(fields);
        }
    }
    let fleet = numbers.first().filter(|f| f.len() == 2).ok_or_else(|| bad("no VEHICLE NUMBER and CAPACITY"))?;
    let (count, capacity) = (fleet[0] as usize, fleet[1] as i64);
    let rows: Vec<&Vec<f64>> = numbers[1..].iter().filter(|f| f.len() == 7).collect();
    if rows.len() < 2 || rows[0][0] != 0.0 {
        return Err(bad("a Solomon table starts with the depot, customer 0"));
    }
    let xy: Vec<(f64, f64)> = rows.iter().map(|r| (r[1], r[2])).collect();
    let scaled = |x: f64| (x * SCALE as f64).round() as i64;
    let clients = rows[1..]
        .iter()
        .map(|r| Client {
            delivery: Load::weight(r[3] as i64),
            pickup: Load::ZERO,
            service: scaled(r[6]),
            early: scaled(r[4]),
            late: scaled(r[5]),
        })
        .collect();
    let mut vehicles = VehicleType::new(count.max(1), Load([capacity, 0, 0]), 0);
    (vehicles.early, vehicles.late) = (scaled(rows[0][4]), scaled(rows[0][5]));
    let m = matrix(&xy, scaled);
    let problem = Problem::new(1, clients, vec![vehicles], m.clone(), m)?;
    Ok(Instance { name, problem, coords: xy, rounding: Rounding::Exact })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VRP: &str = "NAME : tiny\nTYPE : CVRP\nDIMENSION : 4\nEDGE_WEIGHT_TYPE : EUC_2D\nCAPACITY : 10\n\
        NODE_COORD_SECTION\n1 0 0\n2 3 4\n3 6 8\n4 0 5\nDEMAND_SECTION\n1 0\n2 4\n3 5\n4 6\nDEPOT_SECTION\n1\n-1\nEOF\n";

    #[test]
    fn cvrplib_files_become_problems_with_rounded_distances() {
        let i = parse_cvrplib(VRP).unwrap();
        assert_eq!(i.name, "tiny");
        assert_eq!(i.problem.clients.len(), 3);
        assert_eq!((i.problem.dist(0, 1), i.problem.dist(0, 2), i.problem.dist(1, 3)), (5, 10, 3));
        assert_eq!(i.problem.vehicle_types[0].capacity, Load([10, 0, 0]));
        assert!(parse_cvrplib("NAME : x\nEDGE_WEIGHT_TYPE : GEO\n").is_err());
    }

    #[test]
    fn solomon_tables_keep_windows_and_exact_distances() {
        let text = "R0\n\nVEHICLE\nNUMBER     CAPACITY\n  2         50\n\nCUSTOMER\n\
            CUST NO.  XCOORD.   YCOORD.    DEMAND   READY TIME  DUE DATE   SERVICE   TIME\n\n\
            0 0 0 0 0 100 0\n1 1 1 10 5 20 3\n2 3 4 20 0 50 3\n";
        assert!(is_solomon(text));
        let i = parse_solomon(text).unwrap();
        assert_eq!(i.problem.clients.len(), 2);
        assert_eq!(i.problem.dist(0, 1), 1414, "thousandths");
        let c = &i.problem.clients[0];
        assert_eq!((c.early, c.late, c.service), (5000, 20000, 3000));
        assert_eq!(i.problem.vehicle_types[0].late, 100_000);
        let s = Solution { routes: vec![crate::Route { vehicle_type: 0, visits: vec![1, 2] }] };
        let exact = 2f64.sqrt() + 13f64.sqrt() + 5.0;
        assert!((i.cost(&s) - exact).abs() < 1e-9);
    }
}
