//! The parcel composer: a distribution wave's parcels from the stock on offer, fitted to each
//! household and fair when food is short. Pure and deterministic: the same demands and offers
//! give the same parcels.
//!
//! **The fairness rule.** Within each food group, stock goes by *progressive filling* on each
//! household's coverage (grams received ÷ grams needed): the next unit of a lot goes to the
//! eligible household that is least covered so far, emergency parcels first until met. When
//! stock suffices everyone is covered; when it does not, coverage rises evenly, so every
//! association and commune gets a share proportional to its registered need (max-min fair
//! where diets or cold storage make some lots unusable for some households).
//!
//! **Fit.** A lot goes only to a household whose diet and allergies it respects, ready-to-eat
//! products only to households without a kitchen, chilled and frozen lots only to relay points
//! with cold storage, and never past its use-by date. Lots go earliest-expiring first (FEFO).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use values::{Allergen, DateKind, FoodGroup, StorageClass, Traits};

use crate::Diet;

/// One household's parcel request, with its needs per food group (grams).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Demand {
    pub household_id: String,
    pub association_id: String,
    pub commune: String,
    pub emergency: bool,
    /// Whether its relay point can keep chilled and frozen goods.
    pub cold_storage: bool,
    pub diet: Diet,
    pub needs: BTreeMap<FoodGroup, u64>,
}

/// Units of a lot on offer for the wave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub lot_id: String,
    pub product_id: String,
    pub food_group: FoodGroup,
    pub storage: StorageClass,
    pub date_kind: DateKind,
    pub date: Option<NaiveDate>,
    pub units: u32,
    pub unit_grams: u32,
    pub traits: Traits,
    pub allergens: BTreeSet<Allergen>,
}

/// A line of a parcel, with why it is there (also what a composed parcel records).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub lot_id: String,
    pub product_id: String,
    pub food_group: FoodGroup,
    pub units: u32,
    pub grams: u64,
    /// Why this line: the household's need in this group (grams)...
    pub need_g: u64,
    /// ...and the lot's date, the earliest on offer that fits (FEFO); `first come` lines in the
    /// baseline carry the same.
    pub date: Option<NaiveDate>,
    pub date_kind: DateKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parcel {
    pub household_id: String,
    pub association_id: String,
    pub lines: Vec<Line>,
    /// Per food group: (needed, given) grams.
    pub coverage: BTreeMap<FoodGroup, (u64, u64)>,
    /// Food groups the stock could not fill.
    pub short: Vec<FoodGroup>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wave {
    pub parcels: Vec<Parcel>,
    /// Units of each lot left unallocated.
    pub left: BTreeMap<String, u32>,
}

/// Whether `offer` may go to a household with `diet` and (or without) cold storage on `day`.
pub fn fits(diet: &Diet, cold_storage: bool, offer: &Offer, day: NaiveDate) -> bool {
    let t = &offer.traits;
    !(diet.no_pork && t.pork
        || diet.halal && t.meat && !t.halal
        || diet.vegetarian && t.meat
        || diet.no_kitchen && !t.ready_to_eat
        || !diet.allergies.is_disjoint(&offer.allergens)
        || offer.storage != StorageClass::Ambient && !cold_storage
        || expired(offer, day))
}

/// Past its use-by date on `day`: for no one.
fn expired(offer: &Offer, day: NaiveDate) -> bool {
    offer.date_kind == DateKind::Dlc && offer.date.is_some_and(|d| d < day)
}

/// Earliest use-by first, then earliest best-before, then undated; lot id on a tie.
fn fefo(offers: &[Offer]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..offers.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |o: &Offer| {
            let rank = match o.date_kind {
                DateKind::Dlc => 0,
                DateKind::Ddm => 1,
                DateKind::None => 2,
            };
            (if o.date.is_some() { rank } else { 2 }, o.date, o.lot_id.clone())
        };
        key(&offers[a]).cmp(&key(&offers[b]))
    });
    order
}

/// How far a household still is from its need: lower is served first.
type Priority = (bool, u64, usize);

fn priority(emergency: bool, given: u64, need: u64, index: usize) -> Priority {
    // Coverage in millionths; emergencies that are not yet met come before everyone.
    (!(emergency && given < need), given.saturating_mul(1_000_000) / need.max(1), index)
}

/// Composes the wave: fair progressive filling per food group (see the module's note).
pub fn compose(demands: &[Demand], offers: &[Offer], day: NaiveDate) -> Wave {
    let mut given: Vec<BTreeMap<FoodGroup, u64>> = vec![BTreeMap::new(); demands.len()];
    let mut lines: Vec<Vec<Line>> = vec![Vec::new(); demands.len()];
    let mut left: BTreeMap<String, u32> = BTreeMap::new();
    // Households that share a diet and cold storage are alike for every lot.
    let mut classes: BTreeMap<(&Diet, bool), Vec<usize>> = BTreeMap::new();
    for (i, d) in demands.iter().enumerate() {
        classes.entry((&d.diet, d.cold_storage)).or_default().push(i);
    }
    let classes: Vec<(Diet, bool, Vec<usize>)> =
        classes.into_iter().map(|((diet, cold), members)| (diet.clone(), cold, members)).collect();
    let order = fefo(offers);
    for group in FoodGroup::ALL {
        let group_offers: Vec<usize> = order.iter().copied().filter(|&o| offers[o].food_group == group).collect();
        // Offers alike for diets (same storage, traits, expiry) form one profile; classes that
        // accept the same profiles share one queue, so each unit looks at few queues.
        let mut profiles: Vec<&Offer> = Vec::new();
        let mut profile_of: Vec<usize> = Vec::with_capacity(group_offers.len());
        for &o in &group_offers {
            let offer = &offers[o];
            let alike = |p: &&Offer| {
                p.storage == offer.storage
                    && p.traits == offer.traits
                    && p.allergens == offer.allergens
                    && expired(p, day) == expired(offer, day)
            };
            let index = match profiles.iter().position(alike) {
                Some(i) => i,
                None => {
                    profiles.push(offer);
                    profiles.len() - 1
                }
            };
            profile_of.push(index);
        }
        let mut signatures: BTreeMap<Vec<bool>, Vec<usize>> = BTreeMap::new();
        for (c, (diet, cold, _)) in classes.iter().enumerate() {
            let signature: Vec<bool> = profiles.iter().map(|p| fits(diet, *cold, p, day)).collect();
            signatures.entry(signature).or_default().push(c);
        }
        let merged: Vec<(Vec<bool>, Vec<usize>)> = signatures.into_iter().collect();
        let mut queues: Vec<BinaryHeap<Reverse<Priority>>> = merged
            .iter()
            .map(|(_, cs)| {
                cs.iter()
                    .flat_map(|&c| classes[c].2.iter().copied())
                    .filter_map(|i| {
                        let need = demands[i].needs.get(&group).copied().unwrap_or(0);
                        (need > 0).then(|| Reverse(priority(demands[i].emergency, 0, need, i)))
                    })
                    .collect()
            })
            .collect();
        let need_of: Vec<u64> = demands.iter().map(|d| d.needs.get(&group).copied().unwrap_or(0)).collect();
        let mut got_of: Vec<u64> = vec![0; demands.len()];
        for (k, &o) in group_offers.iter().enumerate() {
            let offer = &offers[o];
            let eligible: Vec<usize> = (0..merged.len()).filter(|&q| merged[q].0[profile_of[k]]).collect();
            let mut units = offer.units;
            while units > 0 {
                let Some(c) = eligible
                    .iter()
                    .copied()
                    .filter(|&c| !queues[c].is_empty())
                    .min_by_key(|&c| queues[c].peek().map(|r| r.0))
                else {
                    break;
                };
                let Reverse((_, _, i)) = queues[c].pop().expect("not empty");
                let need = need_of[i];
                let got = &mut got_of[i];
                *got += u64::from(offer.unit_grams);
                units -= 1;
                match lines[i].last_mut() {
                    Some(line) if line.lot_id == offer.lot_id => {
                        line.units += 1;
                        line.grams += u64::from(offer.unit_grams);
                    }
                    _ => lines[i].push(Line {
                        lot_id: offer.lot_id.clone(),
                        product_id: offer.product_id.clone(),
                        food_group: group,
                        units: 1,
                        grams: u64::from(offer.unit_grams),
                        need_g: need,
                        date: offer.date,
                        date_kind: offer.date_kind,
                    }),
                }
                if *got < need {
                    queues[c].push(Reverse(priority(demands[i].emergency, *got, need, i)));
                }
            }
            if units > 0 {
                left.insert(offer.lot_id.clone(), units);
            }
        }
        for (i, got) in got_of.into_iter().enumerate() {
            if got > 0 {
                given[i].insert(group, got);
            }
        }
    }
    let parcels = demands.iter().zip(given).zip(lines).map(|((d, given), lines)| parcel(d, &given, lines)).collect();
    Wave { parcels, left }
}

fn parcel(d: &Demand, given: &BTreeMap<FoodGroup, u64>, lines: Vec<Line>) -> Parcel {
    let coverage: BTreeMap<FoodGroup, (u64, u64)> =
        d.needs.iter().map(|(g, need)| (*g, (*need, given.get(g).copied().unwrap_or(0)))).collect();
    let short = coverage.iter().filter(|(_, (need, got))| got < need).map(|(g, _)| *g).collect();
    Parcel { household_id: d.household_id.clone(), association_id: d.association_id.clone(), lines, coverage, short }
}

/// What a composed parcel lost when stock granted only `granted` grams per group of what the
/// composer chose (its lots were taken meanwhile): the demand to compose again from what is
/// left, up to the share the composer gave it (never more, so that the others' fair share is
/// not taken). `None` when nothing was lost.
pub fn shortfall(demand: &Demand, planned: &Parcel, granted: &BTreeMap<FoodGroup, u64>) -> Option<Demand> {
    let needs: BTreeMap<FoodGroup, u64> = planned
        .coverage
        .iter()
        .filter_map(|(g, (need, given))| {
            let lost = (*given).min(*need).saturating_sub(granted.get(g).copied().unwrap_or(0));
            (lost > 0).then_some((*g, lost))
        })
        .collect();
    (!needs.is_empty()).then(|| Demand { needs, ..demand.clone() })
}

/// The first-come baseline: each household in request order takes what it needs, FEFO, from
/// what fits it. What a naive "whoever asks first" distribution does.
pub fn compose_first_come(demands: &[Demand], offers: &[Offer], day: NaiveDate) -> Wave {
    let mut by_group: BTreeMap<FoodGroup, Vec<usize>> = BTreeMap::new();
    for o in fefo(offers) {
        by_group.entry(offers[o].food_group).or_default().push(o);
    }
    // Where each group's first lot with units left is: the lots before it are empty.
    let mut first: BTreeMap<FoodGroup, usize> = BTreeMap::new();
    let mut units: Vec<u32> = offers.iter().map(|o| o.units).collect();
    let mut parcels = Vec::with_capacity(demands.len());
    for d in demands {
        let mut given: BTreeMap<FoodGroup, u64> = BTreeMap::new();
        let mut lines = Vec::new();
        for (&group, &need) in &d.needs {
            let Some(list) = by_group.get(&group) else { continue };
            let start = first.entry(group).or_default();
            while *start < list.len() && units[list[*start]] == 0 {
                *start += 1;
            }
            for &o in &list[*start..] {
                let got = given.entry(group).or_default();
                if *got >= need {
                    break;
                }
                let offer = &offers[o];
                if units[o] == 0 || !fits(&d.diet, d.cold_storage, offer, day) {
                    continue;
                }
                let take = ((need - *got).div_ceil(u64::from(offer.unit_grams.max(1))) as u32).min(units[o]);
                units[o] -= take;
                *got += u64::from(take) * u64::from(offer.unit_grams);
                lines.push(Line {
                    lot_id: offer.lot_id.clone(),
                    product_id: offer.product_id.clone(),
                    food_group: group,
                    units: take,
                    grams: u64::from(take) * u64::from(offer.unit_grams),
                    need_g: need,
                    date: offer.date,
                    date_kind: offer.date_kind,
                });
            }
        }
        parcels.push(parcel(d, &given, lines));
    }
    let left = offers.iter().zip(units).filter(|(_, u)| *u > 0).map(|(o, u)| (o.lot_id.clone(), u)).collect();
    Wave { parcels, left }
}

/// How good a wave is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Σ min(given, need) ÷ Σ need, over every household and group, in percent.
    pub coverage_pct: f64,
    pub coverage_pct_by_group: BTreeMap<FoodGroup, f64>,
    /// Jain's index over associations' coverage (1 = perfectly even).
    pub jain: f64,
    /// Least covered association ÷ most covered.
    pub min_max_ratio: f64,
    /// Kg left unallocated that expire before the next wave, in groups some household still
    /// lacked and could have taken them.
    pub expired_unallocated_kg: f64,
}

pub fn quality(demands: &[Demand], offers: &[Offer], wave: &Wave, day: NaiveDate, next_wave: NaiveDate) -> Quality {
    let mut by_group: BTreeMap<FoodGroup, (u64, u64)> = BTreeMap::new();
    let mut by_association: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for p in &wave.parcels {
        for (g, (need, got)) in &p.coverage {
            let covered = (*got).min(*need);
            let e = by_group.entry(*g).or_default();
            e.0 += need;
            e.1 += covered;
            let a = by_association.entry(p.association_id.as_str()).or_default();
            a.0 += need;
            a.1 += covered;
        }
    }
    let pct = |(need, got): (u64, u64)| if need == 0 { 100.0 } else { 100.0 * got as f64 / need as f64 };
    let total = by_group.values().fold((0, 0), |acc, v| (acc.0 + v.0, acc.1 + v.1));
    let shares: Vec<f64> = by_association.values().map(|v| pct(*v) / 100.0).collect();
    let (sum, squares) = shares.iter().fold((0.0, 0.0), |acc, x| (acc.0 + x, acc.1 + x * x));
    let jain = if squares == 0.0 { 1.0 } else { sum * sum / (shares.len() as f64 * squares) };
    let (min, max) = shares.iter().fold((f64::MAX, 0.0f64), |acc, x| (acc.0.min(*x), acc.1.max(*x)));
    // Lacking households per group and class, to judge whether a leftover lot could have helped.
    let lacking: Vec<(&Demand, &Parcel)> =
        demands.iter().zip(&wave.parcels).filter(|(_, p)| !p.short.is_empty()).collect();
    let mut expired_g = 0u64;
    for offer in offers {
        let Some(&units) = wave.left.get(&offer.lot_id) else { continue };
        let expires = offer.date_kind == DateKind::Dlc && offer.date.is_some_and(|d| d < next_wave);
        if expires
            && lacking
                .iter()
                .any(|(d, p)| p.short.contains(&offer.food_group) && fits(&d.diet, d.cold_storage, offer, day))
        {
            expired_g += u64::from(units) * u64::from(offer.unit_grams);
        }
    }
    Quality {
        coverage_pct: pct(total),
        coverage_pct_by_group: by_group.into_iter().map(|(g, v)| (g, pct(v))).collect(),
        jain,
        min_max_ratio: if max == 0.0 { 1.0 } else { min / max },
        expired_unallocated_kg: expired_g as f64 / 1000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 25).unwrap()
    }

    fn demand(id: &str, association: &str, grams: u64) -> Demand {
        Demand {
            household_id: id.into(),
            association_id: association.into(),
            commune: "Lyon".into(),
            emergency: false,
            cold_storage: true,
            diet: Diet::default(),
            needs: [(FoodGroup::Starches, grams)].into(),
        }
    }

    fn offer(lot: &str, group: FoodGroup, units: u32, date: Option<&str>) -> Offer {
        Offer {
            lot_id: lot.into(),
            product_id: format!("p-{lot}"),
            food_group: group,
            storage: StorageClass::Ambient,
            date_kind: if date.is_some() { DateKind::Ddm } else { DateKind::None },
            date: date.map(|d| d.parse().unwrap()),
            units,
            unit_grams: 500,
            traits: Traits::default(),
            allergens: BTreeSet::new(),
        }
    }

    #[test]
    fn when_stock_is_short_every_household_gets_the_same_share_whoever_asked_first() {
        // 10 households of two associations need 2 kg each; there are 10 kg.
        let demands: Vec<Demand> =
            (0..10).map(|i| demand(&format!("h{i}"), if i < 7 { "a" } else { "b" }, 2000)).collect();
        let offers = [offer("l1", FoodGroup::Starches, 20, Some("2027-01-01"))];
        let wave = compose(&demands, &offers, day());
        assert!(wave.parcels.iter().all(|p| p.coverage[&FoodGroup::Starches].1 == 1000), "{:#?}", wave.parcels);
        let q = quality(&demands, &offers, &wave, day(), day());
        assert_eq!((q.coverage_pct, q.jain, q.min_max_ratio), (50.0, 1.0, 1.0));
        // First come: the first five are served, the others get nothing.
        let greedy = compose_first_come(&demands, &offers, day());
        let q = quality(&demands, &offers, &greedy, day(), day());
        assert_eq!(q.coverage_pct, 50.0);
        assert!(q.jain < 0.8 && q.min_max_ratio == 0.0, "{q:?}");
    }

    #[test]
    fn emergencies_come_first_and_lots_go_earliest_date_first() {
        let mut demands = vec![demand("h1", "a", 2000), demand("h2", "a", 2000)];
        demands[1].emergency = true;
        let offers = [
            offer("later", FoodGroup::Starches, 2, Some("2027-06-01")),
            offer("sooner", FoodGroup::Starches, 2, Some("2027-01-01")),
        ];
        let wave = compose(&demands, &offers, day());
        assert_eq!(wave.parcels[1].coverage[&FoodGroup::Starches], (2000, 2000), "the emergency is met");
        assert_eq!(wave.parcels[0].coverage[&FoodGroup::Starches], (2000, 0));
        assert_eq!(wave.parcels[1].lines[0].lot_id, "sooner");
        let line = &wave.parcels[1].lines[0];
        assert_eq!((line.need_g, line.date), (2000, Some("2027-01-01".parse().unwrap())), "the line says why");
        assert_eq!(wave.parcels[0].short, [FoodGroup::Starches]);
        assert!(wave.left.is_empty());
    }

    #[test]
    fn diets_allergies_kitchens_and_the_cold_chain_are_respected_strictly() {
        let mut ham = offer("ham", FoodGroup::MeatFishEggs, 10, None);
        ham.traits = Traits { meat: true, pork: true, ..Default::default() };
        let mut halal = offer("halal", FoodGroup::MeatFishEggs, 10, None);
        halal.traits = Traits { meat: true, halal: true, ready_to_eat: true, ..Default::default() };
        let mut nuts = offer("nuts", FoodGroup::MeatFishEggs, 10, None);
        nuts.traits = Traits { ready_to_eat: true, ..Default::default() };
        nuts.allergens = [Allergen::Nuts].into();
        let mut chilled = offer("chilled", FoodGroup::MeatFishEggs, 10, None);
        chilled.storage = StorageClass::Chilled;
        let d = Diet::default();
        assert!(!fits(&Diet { no_pork: true, ..d.clone() }, true, &ham, day()));
        assert!(!fits(&Diet { halal: true, ..d.clone() }, true, &ham, day()));
        assert!(fits(&Diet { halal: true, ..d.clone() }, true, &halal, day()));
        assert!(!fits(&Diet { vegetarian: true, ..d.clone() }, true, &halal, day()));
        assert!(!fits(&Diet { no_kitchen: true, ..d.clone() }, true, &ham, day()));
        assert!(fits(&Diet { no_kitchen: true, ..d.clone() }, true, &halal, day()));
        assert!(!fits(&Diet { allergies: [Allergen::Nuts].into(), ..d.clone() }, true, &nuts, day()));
        assert!(!fits(&d, false, &chilled, day()));
        assert!(fits(&d, true, &chilled, day()));
        let mut expired = offer("old", FoodGroup::Dairy, 1, Some("2026-11-24"));
        expired.date_kind = DateKind::Dlc;
        assert!(!fits(&d, true, &expired, day()));

        let mut muslim = demand("h1", "a", 0);
        muslim.diet = Diet { halal: true, ..Default::default() };
        muslim.needs = [(FoodGroup::MeatFishEggs, 2000)].into();
        let wave = compose(&[muslim], &[ham, halal], day());
        assert!(wave.parcels[0].lines.iter().all(|l| l.lot_id == "halal"), "{:?}", wave.parcels[0].lines);

        // Two lots alike but for an allergen: an allergic household gets only the safe one.
        let mut allergic = demand("h2", "a", 0);
        allergic.diet = Diet { allergies: [Allergen::Nuts].into(), ..Default::default() };
        allergic.needs = [(FoodGroup::MeatFishEggs, 5000)].into();
        let mut safe = nuts.clone();
        safe.lot_id = "safe".into();
        safe.allergens.clear();
        let wave = compose(&[allergic], &[nuts, safe], day());
        let lots: Vec<&str> = wave.parcels[0].lines.iter().map(|l| l.lot_id.as_str()).collect();
        assert_eq!(lots, ["safe"]);
    }

    #[test]
    fn a_parcel_whose_lot_was_taken_is_composed_again_up_to_its_share() {
        let demands = vec![demand("h1", "a", 2000), demand("h2", "b", 2000)];
        let offers = [offer("l1", FoodGroup::Starches, 4, Some("2027-01-01"))];
        let wave = compose(&demands, &offers, day());
        assert_eq!(wave.parcels[0].coverage[&FoodGroup::Starches], (2000, 1000));
        // Someone took lot l1 before h1's reservation: stock granted nothing.
        let lost = shortfall(&demands[0], &wave.parcels[0], &BTreeMap::new()).expect("it lost its share");
        assert_eq!(lost.needs, [(FoodGroup::Starches, 1000)].into(), "its share, not its whole need");
        let fresh = [offer("l2", FoodGroup::Starches, 10, Some("2027-02-01"))];
        let again = compose(std::slice::from_ref(&lost), &fresh, day());
        assert_eq!(again.parcels[0].lines[0].lot_id, "l2");
        assert_eq!(again.parcels[0].coverage[&FoodGroup::Starches], (1000, 1000));
        // A parcel that got everything lost nothing.
        let granted: BTreeMap<FoodGroup, u64> = [(FoodGroup::Starches, 1000)].into();
        assert_eq!(shortfall(&demands[1], &wave.parcels[1], &granted), None);
    }

    #[test]
    fn the_same_input_gives_the_same_parcels() {
        let demands: Vec<Demand> =
            (0..50).map(|i| demand(&format!("h{i}"), &format!("a{}", i % 3), 1500 + 100 * (i % 4))).collect();
        let offers: Vec<Offer> =
            (0..20).map(|i| offer(&format!("l{i}"), FoodGroup::Starches, 3 + i % 5, Some("2027-01-01"))).collect();
        assert_eq!(compose(&demands, &offers, day()), compose(&demands, &offers, day()));
    }
}
