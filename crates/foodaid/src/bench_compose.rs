//! `foodaid bench compose`: the parcel composer on a synthetic wave, against a first-come
//! baseline on the same data, with quality figures.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use chrono::{Duration, NaiveDate};
use distribution::compose::{compose, compose_first_come, quality, Demand, Offer};
use distribution::{Composition, Diet, NeedsReference};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use values::{Allergen, DateKind, FoodGroup, StorageClass, Traits};

#[derive(Serialize)]
struct ComposeFigures {
    households: usize,
    lots: usize,
    scarcity: f64,
    compose_s: f64,
    coverage_pct: f64,
    baseline_coverage_pct: f64,
    jain: f64,
    baseline_jain: f64,
    min_max_ratio: f64,
    baseline_min_max_ratio: f64,
    expired_unallocated_kg: f64,
    baseline_expired_unallocated_kg: f64,
    coverage_pct_by_group: BTreeMap<FoodGroup, f64>,
    baseline_compose_s: f64,
}

/// A kind of product the synthetic stock is made of.
struct Kind {
    group: FoodGroup,
    storage: StorageClass,
    date_kind: DateKind,
    unit_grams: u32,
    /// What diets check, and allergens.
    traits: (Traits, BTreeSet<Allergen>),
    /// Share of its group's stock.
    share: f64,
}

fn kinds() -> Vec<Kind> {
    use FoodGroup::*;
    let t = |meat, pork, halal, ready_to_eat, allergens: &[Allergen]| {
        (Traits { meat, pork, halal, ready_to_eat }, allergens.iter().copied().collect())
    };
    let k = |group, storage, date_kind, unit_grams, traits, share| Kind {
        group,
        storage,
        date_kind,
        unit_grams,
        traits,
        share,
    };
    let (a, c, f) = (StorageClass::Ambient, StorageClass::Chilled, StorageClass::Frozen);
    let (dlc, ddm, none) = (DateKind::Dlc, DateKind::Ddm, DateKind::None);
    vec![
        k(Starches, a, ddm, 500, t(false, false, false, false, &[Allergen::Gluten]), 0.5), // pasta
        k(Starches, a, ddm, 1000, t(false, false, false, false, &[]), 0.3),                // rice
        k(Starches, a, dlc, 400, t(false, false, false, true, &[Allergen::Gluten]), 0.2),  // bread
        k(FruitVegetables, a, none, 1000, t(false, false, false, true, &[]), 0.4),         // apples
        k(FruitVegetables, a, ddm, 400, t(false, false, false, true, &[]), 0.4),           // tins
        k(FruitVegetables, c, dlc, 250, t(false, false, false, true, &[]), 0.2),           // salad
        k(Dairy, c, dlc, 500, t(false, false, false, true, &[Allergen::Milk]), 0.5),       // yoghurt
        k(Dairy, a, ddm, 1000, t(false, false, false, true, &[Allergen::Milk]), 0.5),      // UHT milk
        k(MeatFishEggs, c, dlc, 200, t(true, true, false, true, &[]), 0.2),                // ham
        k(MeatFishEggs, f, dlc, 1000, t(true, false, true, false, &[]), 0.2),              // halal chicken
        k(MeatFishEggs, a, ddm, 140, t(true, false, false, true, &[Allergen::Fish]), 0.3), // tuna
        k(MeatFishEggs, c, dlc, 360, t(false, false, false, false, &[Allergen::Eggs]), 0.3), // eggs
        k(Fats, a, ddm, 1000, t(false, false, false, false, &[]), 1.0),                    // oil
        k(SugarySalty, a, ddm, 300, t(false, false, false, true, &[Allergen::Gluten]), 1.0), // biscuits
        k(Drinks, a, ddm, 1000, t(false, false, false, true, &[]), 1.0),                   // juice
        k(BabyFood, a, ddm, 800, t(false, false, false, true, &[Allergen::Milk]), 1.0),    // infant milk
        k(Hygiene, a, none, 1000, t(false, false, false, true, &[]), 1.0),                 // nappies, soap
    ]
}

fn demands(households: usize, rng: &mut StdRng) -> Vec<Demand> {
    let needs = NeedsReference::default();
    // 40 associations in 20 communes, of uneven sizes; 70 % of relay points keep cold goods.
    let weights: Vec<f64> = (0..40).map(|_| rng.random_range(0.3..3.0)).collect();
    let total: f64 = weights.iter().sum();
    let cold: Vec<bool> = (0..40).map(|_| rng.random_bool(0.7)).collect();
    let mut out = Vec::with_capacity(households);
    for (a, w) in weights.iter().enumerate() {
        let n = ((w / total) * households as f64).round() as usize;
        for _ in 0..n {
            if out.len() == households {
                break;
            }
            let composition = Composition {
                adults: rng.random_range(1..=2),
                teens: u8::from(rng.random_bool(0.25)),
                children: rng.random_range(0..=3),
                infants: u8::from(rng.random_bool(0.2)),
            };
            let allergy = [Allergen::Gluten, Allergen::Milk, Allergen::Peanuts, Allergen::Eggs, Allergen::Fish];
            let diet = Diet {
                no_pork: rng.random_bool(0.25),
                halal: rng.random_bool(0.15),
                vegetarian: false,
                no_kitchen: rng.random_bool(0.05),
                allergies: if rng.random_bool(0.1) {
                    [allergy[rng.random_range(0..5)]].into()
                } else {
                    Default::default()
                },
            };
            out.push(Demand {
                household_id: format!("h{}", out.len()),
                association_id: format!("asso-{a:02}"),
                commune: format!("commune-{:02}", a / 2),
                emergency: rng.random_bool(0.03),
                cold_storage: cold[a],
                diet,
                needs: needs.parcel_needs(&composition),
            });
        }
    }
    while out.len() < households {
        let mut d = out[out.len() % out.len().max(1)].clone();
        d.household_id = format!("h{}", out.len());
        out.push(d);
    }
    out
}

/// Lots holding `1 - scarcity` of the wave's needs, per food group.
fn offers(demands: &[Demand], lots: usize, scarcity: f64, day: NaiveDate, rng: &mut StdRng) -> Vec<Offer> {
    let mut need: BTreeMap<FoodGroup, f64> = BTreeMap::new();
    for d in demands {
        for (g, grams) in &d.needs {
            *need.entry(*g).or_default() += *grams as f64;
        }
    }
    let kinds = kinds();
    let per_kind: Vec<f64> =
        kinds.iter().map(|k| need.get(&k.group).copied().unwrap_or(0.0) * k.share * (1.0 - scarcity)).collect();
    let total: f64 = per_kind.iter().sum();
    let mut out = Vec::with_capacity(lots);
    for (i, kind) in kinds.iter().enumerate() {
        let n = ((per_kind[i] / total) * lots as f64).round().max(1.0) as usize;
        let units_total = (per_kind[i] / f64::from(kind.unit_grams)).round() as u64;
        for l in 0..n {
            let units = (units_total / n as u64 + u64::from((l as u64) < units_total % n as u64)) as u32;
            if units == 0 {
                continue;
            }
            let date = match kind.date_kind {
                DateKind::Dlc => Some(day + Duration::days(rng.random_range(1..=12))),
                DateKind::Ddm => Some(day + Duration::days(rng.random_range(20..=400))),
                DateKind::None => None,
            };
            out.push(Offer {
                lot_id: format!("lot-{i:02}-{l:05}"),
                product_id: format!("product-{i:02}"),
                food_group: kind.group,
                storage: kind.storage,
                date_kind: kind.date_kind,
                date,
                units,
                unit_grams: kind.unit_grams,
                traits: kind.traits.0,
                allergens: kind.traits.1.clone(),
            });
        }
    }
    out
}

pub fn run(households: usize, lots: usize, scarcity: f64, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(households > 0 && lots > 0, "--households and --lots must be positive");
    anyhow::ensure!((0.0..1.0).contains(&scarcity), "--scarcity is between 0 and 1");
    let mut rng = StdRng::seed_from_u64(2026);
    let day = NaiveDate::from_ymd_opt(2026, 11, 25).expect("date");
    let next_wave = day + Duration::days(7);
    let demands = demands(households, &mut rng);
    let offers = offers(&demands, lots, scarcity, day, &mut rng);

    let started = Instant::now();
    let wave = compose(&demands, &offers, day);
    let compose_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let baseline = compose_first_come(&demands, &offers, day);
    let baseline_compose_s = started.elapsed().as_secs_f64();
    let q = quality(&demands, &offers, &wave, day, next_wave);
    let b = quality(&demands, &offers, &baseline, day, next_wave);
    let figures = ComposeFigures {
        households: demands.len(),
        lots: offers.len(),
        scarcity,
        compose_s,
        coverage_pct: q.coverage_pct,
        baseline_coverage_pct: b.coverage_pct,
        jain: q.jain,
        baseline_jain: b.jain,
        min_max_ratio: q.min_max_ratio,
        baseline_min_max_ratio: b.min_max_ratio,
        expired_unallocated_kg: q.expired_unallocated_kg,
        baseline_expired_unallocated_kg: b.expired_unallocated_kg,
        coverage_pct_by_group: q.coverage_pct_by_group.clone(),
        baseline_compose_s,
    };
    if json {
        println!("{}", serde_json::to_string(&figures)?);
        return Ok(());
    }
    println!("{} households, {} lots, scarcity {:.0} %", figures.households, figures.lots, scarcity * 100.0);
    println!("{:<28} {:>12} {:>12}", "", "composer", "first come");
    println!("{:<28} {:>12.3} {:>12.3}", "compose time (s)", compose_s, baseline_compose_s);
    println!("{:<28} {:>12.1} {:>12.1}", "need coverage (%)", q.coverage_pct, b.coverage_pct);
    println!("{:<28} {:>12.3} {:>12.3}", "Jain's index (associations)", q.jain, b.jain);
    println!("{:<28} {:>12.3} {:>12.3}", "min/max coverage", q.min_max_ratio, b.min_max_ratio);
    println!(
        "{:<28} {:>12.1} {:>12.1}",
        "expiring unallocated (kg)", q.expired_unallocated_kg, b.expired_unallocated_kg
    );
    for (g, pct) in &q.coverage_pct_by_group {
        println!("  {:<26} {:>12.1} {:>12.1}", g.as_str(), pct, b.coverage_pct_by_group.get(g).copied().unwrap_or(0.0));
    }
    Ok(())
}
