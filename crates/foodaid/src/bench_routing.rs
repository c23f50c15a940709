//! `foodaid bench routing`: the route planner on the CVRPLIB and Solomon benchmark instances,
//! each solved within a time limit, checked by the independent validator, and compared with
//! the best-known solutions (`bks.csv` files found in the instances' folders).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use routing::formats::{is_solomon, parse_cvrplib, parse_solomon, Instance};
use serde::Serialize;

#[derive(Debug, Serialize)]
struct Row {
    name: String,
    set: String,
    cost: f64,
    bks: Option<f64>,
    gap_pct: Option<f64>,
    feasible: bool,
    seconds: f64,
    /// Search iterations (offspring) made.
    iterations: u64,
}

#[derive(Debug, Serialize)]
struct SetSummary {
    avg_gap_pct: Option<f64>,
    count: usize,
    infeasible: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    instances: Vec<Row>,
    sets: BTreeMap<String, SetSummary>,
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// `instance,bks,...` lines of every `bks.csv` under the folder.
fn best_known(paths: &[PathBuf]) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for path in paths.iter().filter(|p| p.file_name().is_some_and(|n| n == "bks.csv")) {
        let text = std::fs::read_to_string(path)?;
        for line in text.lines().skip(1) {
            let mut fields = line.splitn(3, ',');
            if let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                if let Ok(v) = value.trim().parse::<f64>() {
                    out.insert(name.trim().to_owned(), v);
                }
            }
        }
    }
    Ok(out)
}

fn load(path: &Path) -> anyhow::Result<Option<(Instance, String)>> {
    let is_vrp = path.extension().is_some_and(|e| e == "vrp");
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    // Files that are not text (pictures, archives) are not instances; an unreadable `.vrp` is.
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(_) if !is_vrp => return Ok(None),
        Err(e) => bail!("{}: {e}", path.display()),
    };
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
    if is_vrp {
        let mut instance = parse_cvrplib(&text).with_context(|| format!("{}", path.display()))?;
        if instance.name.is_empty() {
            instance.name = stem;
        }
        let set = instance.name.split('-').next().unwrap_or_default().to_owned();
        return Ok(Some((instance, set)));
    }
    if is_solomon(&text) {
        let mut instance = parse_solomon(&text).with_context(|| format!("{}", path.display()))?;
        instance.name = stem;
        return Ok(Some((instance, "Solomon".to_owned())));
    }
    Ok(None)
}

pub fn run(dir: &Path, time_limit: f64, seed: u64, only: Option<&str>, json: bool) -> anyhow::Result<()> {
    if time_limit.is_nan() || time_limit <= 0.0 {
        bail!("--time-limit is a number of seconds above 0");
    }
    let mut paths = Vec::new();
    files(dir, &mut paths)?;
    paths.sort();
    let bks = best_known(&paths)?;
    let mut rows = Vec::new();
    for path in &paths {
        let Some((instance, set)) = load(path)? else { continue };
        if only.is_some_and(|f| !instance.name.contains(f)) {
            continue;
        }
        let started = Instant::now();
        let limits = routing::Limits { time: Some(Duration::from_secs_f64(time_limit)), iterations: None };
        let outcome = routing::solve(
            &instance.problem,
            &routing::Params::for_time_limit(Duration::from_secs_f64(time_limit)),
            seed,
            limits,
        );
        let seconds = started.elapsed().as_secs_f64();
        let violations = routing::validate(&instance.problem, &outcome.solution, &[]);
        let cost = instance.cost(&outcome.solution);
        let best = bks.get(&instance.name).copied();
        let feasible = violations.is_empty();
        let row = Row {
            gap_pct: best.filter(|_| feasible).map(|b| 100.0 * (cost - b) / b),
            name: instance.name.clone(),
            set,
            cost,
            bks: best,
            feasible,
            seconds,
            iterations: outcome.iterations,
        };
        if !json {
            let gap = row.gap_pct.map_or("-".to_owned(), |g| format!("{g:.2} %"));
            let note = if feasible {
                String::new()
            } else {
                format!("  INFEASIBLE: {:?}", &violations[..violations.len().min(3)])
            };
            println!(
                "{:<14} {:<8} cost {:>10.2}  bks {:>10}  gap {:>8}  {:.2} s  {:>6} it{note}",
                row.name,
                row.set,
                row.cost,
                row.bks.map_or("-".to_owned(), |b| format!("{b}")),
                gap,
                row.seconds,
                row.iterations
            );
        }
        rows.push(row);
    }
    let mut sets: BTreeMap<String, SetSummary> = BTreeMap::new();
    for set in rows.iter().map(|r| r.set.clone()).collect::<std::collections::BTreeSet<_>>() {
        let of: Vec<&Row> = rows.iter().filter(|r| r.set == set).collect();
        let gaps: Vec<f64> = of.iter().filter_map(|r| r.gap_pct).collect();
        sets.insert(
            set,
            SetSummary {
                avg_gap_pct: (!gaps.is_empty()).then(|| gaps.iter().sum::<f64>() / gaps.len() as f64),
                count: of.len(),
                infeasible: of.iter().filter(|r| !r.feasible).count(),
            },
        );
    }
    let report = Report { instances: rows, sets };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for (set, s) in &report.sets {
            let gap = s.avg_gap_pct.map_or("-".to_owned(), |g| format!("{g:.3} %"));
            println!("set {set:<8} instances {:>3}  infeasible {:>2}  average gap {gap}", s.count, s.infeasible);
        }
    }
    Ok(())
}
