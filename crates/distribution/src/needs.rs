use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use values::FoodGroup;

use crate::Composition;

/// What one person needs from a parcel, grams per week per food group, by age band.
///
/// The defaults (also in `config/default.toml`, `[policies.needs]`) follow the French national
/// nutrition programme's portions (PNNS 4, Santé publique France 2019: five portions of fruit
/// and vegetables of 80 g a day, starches at every meal, two or three dairy portions, one of
/// meat, fish or eggs, little fat and sugar), converted to the weight of the goods handed out
/// (dry pasta, tins, cartons), and scaled for children by the energy references of ANSES (2016).
/// Infants get infant milk and baby food (about one 800 g tin a week) and nappies (hygiene).
/// A parcel covers `parcel_days` of these needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeedsReference {
    pub adult: BTreeMap<FoodGroup, u32>,
    pub teen: BTreeMap<FoodGroup, u32>,
    pub child: BTreeMap<FoodGroup, u32>,
    pub infant: BTreeMap<FoodGroup, u32>,
    /// Days a parcel is meant to cover (the association's distribution rhythm).
    pub parcel_days: u32,
}

impl Default for NeedsReference {
    fn default() -> Self {
        use FoodGroup::*;
        let table = |v: [(FoodGroup, u32); 9]| v.into_iter().filter(|(_, g)| *g > 0).collect();
        NeedsReference {
            adult: table([
                (Starches, 1750),
                (FruitVegetables, 2800),
                (Dairy, 1750),
                (MeatFishEggs, 700),
                (Fats, 140),
                (SugarySalty, 350),
                (Drinks, 700),
                (BabyFood, 0),
                (Hygiene, 200),
            ]),
            teen: table([
                (Starches, 2000),
                (FruitVegetables, 2800),
                (Dairy, 2450),
                (MeatFishEggs, 700),
                (Fats, 140),
                (SugarySalty, 350),
                (Drinks, 700),
                (BabyFood, 0),
                (Hygiene, 200),
            ]),
            child: table([
                (Starches, 1200),
                (FruitVegetables, 2000),
                (Dairy, 2100),
                (MeatFishEggs, 400),
                (Fats, 70),
                (SugarySalty, 250),
                (Drinks, 500),
                (BabyFood, 0),
                (Hygiene, 100),
            ]),
            infant: table([
                (Starches, 200),
                (FruitVegetables, 700),
                (Dairy, 350),
                (MeatFishEggs, 0),
                (Fats, 0),
                (SugarySalty, 0),
                (Drinks, 0),
                (BabyFood, 1200),
                (Hygiene, 1500),
            ]),
            parcel_days: 7,
        }
    }
}

impl NeedsReference {
    /// Grams of each food group a household's parcel should hold.
    pub fn parcel_needs(&self, c: &Composition) -> BTreeMap<FoodGroup, u64> {
        self.needs_over(c, self.parcel_days)
    }

    /// Grams of each food group a household needs over `days` (an association's own rhythm).
    pub fn needs_over(&self, c: &Composition, days: u32) -> BTreeMap<FoodGroup, u64> {
        let mut out = BTreeMap::new();
        for (table, n) in
            [(&self.adult, c.adults), (&self.teen, c.teens), (&self.child, c.children), (&self.infant, c.infants)]
        {
            for (group, grams) in table {
                *out.entry(*group).or_default() += u64::from(*grams) * u64::from(n) * u64::from(days) / 7;
            }
        }
        out.retain(|_, g| *g > 0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_needs_the_sum_of_its_members_for_the_parcel_period() {
        let needs = NeedsReference { parcel_days: 14, ..Default::default() };
        let family = Composition { adults: 2, teens: 0, children: 1, infants: 1 };
        let parcel = needs.parcel_needs(&family);
        assert_eq!(parcel[&FoodGroup::Starches], (2 * 1750 + 1200 + 200) * 2);
        assert_eq!(parcel[&FoodGroup::BabyFood], 1200 * 2);
        assert_eq!(parcel[&FoodGroup::Fats], (2 * 140 + 70) * 2);
        assert!(parcel.values().all(|g| *g > 0), "no empty entries: {parcel:?}");
        let adult = needs.parcel_needs(&Composition { adults: 1, ..Default::default() });
        assert!(!adult.contains_key(&FoodGroup::BabyFood), "no baby food without an infant");
        // An association that distributes every fortnight asks for two weeks whatever the default.
        let weekly = NeedsReference::default();
        assert_eq!(weekly.needs_over(&family, 14), parcel);
    }
}
