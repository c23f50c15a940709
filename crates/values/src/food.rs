//! What the collective knows about a food product, shared by donations, stock and distribution.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::InvalidValue;

/// The fixed taxonomy the collective reports in (and balances parcels by).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FoodGroup {
    /// Bread, pasta, rice, flour, potatoes, cereals.
    Starches,
    FruitVegetables,
    Dairy,
    MeatFishEggs,
    /// Oils, butter, margarine.
    Fats,
    /// Sweets, biscuits, crisps, condiments.
    SugarySalty,
    Drinks,
    /// Infant milk and baby food.
    BabyFood,
    /// Soap, nappies, sanitary products: not food, but distributed alongside it.
    Hygiene,
}

impl FoodGroup {
    pub const ALL: [FoodGroup; 9] = [
        FoodGroup::Starches,
        FoodGroup::FruitVegetables,
        FoodGroup::Dairy,
        FoodGroup::MeatFishEggs,
        FoodGroup::Fats,
        FoodGroup::SugarySalty,
        FoodGroup::Drinks,
        FoodGroup::BabyFood,
        FoodGroup::Hygiene,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FoodGroup::Starches => "starches",
            FoodGroup::FruitVegetables => "fruit_vegetables",
            FoodGroup::Dairy => "dairy",
            FoodGroup::MeatFishEggs => "meat_fish_eggs",
            FoodGroup::Fats => "fats",
            FoodGroup::SugarySalty => "sugary_salty",
            FoodGroup::Drinks => "drinks",
            FoodGroup::BabyFood => "baby_food",
            FoodGroup::Hygiene => "hygiene",
        }
    }
}

impl fmt::Display for FoodGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Cold-chain class of a zone or a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageClass {
    Ambient,
    /// 0 to +4 °C.
    Chilled,
    /// −18 °C or colder.
    Frozen,
}

impl StorageClass {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageClass::Ambient => "ambient",
            StorageClass::Chilled => "chilled",
            StorageClass::Frozen => "frozen",
        }
    }
}

impl fmt::Display for StorageClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which date a product carries, and so what passing it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DateKind {
    /// Date limite de consommation, use-by: never distributed after it.
    Dlc,
    /// Date de durabilité minimale, best-before: may still be given within a grace period.
    Ddm,
    /// No date (fresh produce, hygiene products).
    None,
}

/// The 14 allergens EU regulation 1169/2011 requires to be declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Allergen {
    Gluten,
    Crustaceans,
    Eggs,
    Fish,
    Peanuts,
    Soybeans,
    Milk,
    Nuts,
    Celery,
    Mustard,
    Sesame,
    Sulphites,
    Lupin,
    Molluscs,
}

/// What a product is, for diets: what the parcel composer checks against a household's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traits {
    /// Contains meat or fish of any kind.
    #[serde(default)]
    pub meat: bool,
    #[serde(default)]
    pub pork: bool,
    /// Halal certified.
    #[serde(default)]
    pub halal: bool,
    /// Edible without cooking or a kitchen.
    #[serde(default)]
    pub ready_to_eat: bool,
}

/// A value per food group, with a default for the groups not listed (configured rules).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerGroup<T> {
    pub default: T,
    #[serde(default)]
    pub groups: BTreeMap<FoodGroup, T>,
}

impl<T: Copy> PerGroup<T> {
    pub fn get(&self, group: FoodGroup) -> T {
        self.groups.get(&group).copied().unwrap_or(self.default)
    }
}

/// What the catalogue said of a product when goods of it came in: a donation line judged on it,
/// and the lot it became, carry this snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductFacts {
    pub product_id: String,
    pub name: String,
    pub gtin: Option<Gtin>,
    pub food_group: FoodGroup,
    pub storage: StorageClass,
    pub date_kind: DateKind,
    #[serde(default)]
    pub allergens: BTreeSet<Allergen>,
    #[serde(default)]
    pub traits: Traits,
}

/// A GS1 trade item number (EAN-8, UPC-A, EAN-13 or GTIN-14) with a valid check digit, held in
/// its 14-digit form so that the same item scanned as EAN-13 or GTIN-14 is one product.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Gtin(String);

impl Gtin {
    /// The 14-digit form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Gtin {
    type Error = InvalidValue;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let digits: String = value.trim().chars().filter(|c| *c != ' ' && *c != '-').collect();
        if !digits.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 13, 14].contains(&digits.len()) {
            return Err(InvalidValue::new("gtin", format!("{value:?} is not 8, 12, 13 or 14 digits")));
        }
        let bytes = digits.as_bytes();
        let (body, check) = bytes.split_at(bytes.len() - 1);
        // GS1: from the right, the digits before the check digit weigh 3, 1, 3, 1, ...
        let sum: u32 =
            body.iter().rev().enumerate().map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 }).sum();
        let expected = (10 - sum % 10) % 10;
        if u32::from(check[0] - b'0') != expected {
            return Err(InvalidValue::new("gtin", format!("{value:?} has a wrong check digit (expected {expected})")));
        }
        Ok(Gtin(format!("{digits:0>14}")))
    }
}

impl TryFrom<&str> for Gtin {
    type Error = InvalidValue;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Gtin::try_from(value.to_owned())
    }
}

impl From<Gtin> for String {
    fn from(g: Gtin) -> String {
        g.0
    }
}

impl fmt::Display for Gtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtins_are_checked_and_normalised() {
        // Real codes: a jar of spread (EAN-13), a packet of biscuits (EAN-8), a UPC-A.
        assert_eq!(Gtin::try_from("3017620422003").unwrap().as_str(), "03017620422003");
        assert_eq!(Gtin::try_from("03017620422003").unwrap(), Gtin::try_from("3017620422003").unwrap());
        assert_eq!(Gtin::try_from("96385074").unwrap().as_str(), "00000096385074");
        assert_eq!(Gtin::try_from("036000291452").unwrap().as_str(), "00036000291452");
        assert_eq!(Gtin::try_from(" 3017620 422003 ").unwrap().as_str(), "03017620422003");

        let wrong = Gtin::try_from("3017620422004").unwrap_err();
        assert!(wrong.problem.contains("check digit (expected 3)"), "{wrong}");
        assert!(Gtin::try_from("301762042200").is_err(), "12 digits, wrong check");
        assert!(Gtin::try_from("12345").is_err());
        assert!(Gtin::try_from("30176204220O3").is_err());
        assert!(serde_json::from_str::<Gtin>("\"3017620422004\"").is_err());
    }

    #[test]
    fn food_groups_name_themselves_as_serde_does() {
        for group in FoodGroup::ALL {
            assert_eq!(serde_json::to_value(group).unwrap(), group.as_str());
        }
    }
}
