use std::collections::BTreeSet;

use eventcore::{Aggregate, DomainEvent, Rejection};
use serde::{Deserialize, Serialize};
use values::{Allergen, DateKind, FoodGroup, Gtin, Name, StorageClass, Traits};

/// What reception needs to know of a product: how it is kept and what its date means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductDetails {
    pub gtin: Option<Gtin>,
    pub name: Name,
    pub food_group: FoodGroup,
    /// Weight of one unit in grams, when the product comes in units of a known weight.
    pub unit_weight_g: Option<u32>,
    pub storage: StorageClass,
    pub date_kind: DateKind,
    pub allergens: BTreeSet<Allergen>,
    /// Meat, pork, halal, ready to eat: what diets are checked against.
    #[serde(default)]
    pub traits: Traits,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProductCommand {
    Define(ProductDetails),
    /// Replaces the details; the GTIN, once set, cannot change (it is the product's identity).
    Update(ProductDetails),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ProductEvent {
    ProductDefined(ProductDetails),
    ProductUpdated(ProductDetails),
}

impl DomainEvent for ProductEvent {}

/// A product of the collective's catalogue. Products with a GTIN get the id `gtin-<14 digits>`,
/// so that the first scan defines the product and every later scan finds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Product {
    pub details: Option<ProductDetails>,
}

impl Product {
    /// The aggregate id of the product carrying `gtin`.
    pub fn id_for_gtin(gtin: &Gtin) -> String {
        format!("gtin-{gtin}")
    }
}

impl Aggregate for Product {
    const KIND: &'static str = "product";
    type Command = ProductCommand;
    type Event = ProductEvent;

    fn decide(&self, command: &ProductCommand) -> Result<Vec<ProductEvent>, Rejection> {
        check(match command {
            ProductCommand::Define(d) | ProductCommand::Update(d) => d,
        })?;
        match (command, &self.details) {
            (ProductCommand::Define(d), Some(current)) if d == current => Ok(vec![]),
            (ProductCommand::Define(_), Some(_)) => Err(Rejection::conflict(
                "product_already_defined",
                "this product is already defined with other details; update it instead",
            )),
            (ProductCommand::Define(d), None) => Ok(vec![ProductEvent::ProductDefined(d.clone())]),
            (ProductCommand::Update(_), None) => Err(Rejection::not_found("product_not_found", "no such product")),
            (ProductCommand::Update(d), Some(current)) => {
                if current.gtin.is_some() && d.gtin != current.gtin {
                    return Err(Rejection::validation("gtin_immutable", "a product's GTIN cannot change"));
                }
                if d == current {
                    return Ok(vec![]);
                }
                Ok(vec![ProductEvent::ProductUpdated(d.clone())])
            }
        }
    }

    fn apply(&mut self, event: &ProductEvent) {
        match event {
            ProductEvent::ProductDefined(d) | ProductEvent::ProductUpdated(d) => self.details = Some(d.clone()),
        }
    }
}

fn check(d: &ProductDetails) -> Result<(), Rejection> {
    if d.unit_weight_g == Some(0) {
        return Err(Rejection::validation("invalid_unit_weight", "a unit weight must be positive"));
    }
    if d.unit_weight_g.is_some_and(|w| w > 1_000_000) {
        return Err(Rejection::validation("invalid_unit_weight", "a unit weight is at most 1,000 kg"));
    }
    if (d.traits.pork || d.traits.halal) && !d.traits.meat {
        return Err(Rejection::validation("invalid_traits", "pork and halal describe meat: set meat too"));
    }
    if d.food_group == FoodGroup::Hygiene && d.storage != StorageClass::Ambient {
        return Err(Rejection::validation("invalid_storage", "hygiene products are stored ambient"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use eventcore::testing::given;

    use super::*;

    pub(crate) fn yoghurt() -> ProductDetails {
        ProductDetails {
            gtin: Some(Gtin::try_from("3033490004743").unwrap()),
            name: Name::try_from("Yaourt nature x4").unwrap(),
            food_group: FoodGroup::Dairy,
            unit_weight_g: Some(500),
            storage: StorageClass::Chilled,
            date_kind: DateKind::Dlc,
            allergens: [Allergen::Milk].into(),
            traits: Traits { ready_to_eat: true, ..Default::default() },
        }
    }

    #[test]
    fn a_product_is_defined_once_and_a_repeat_is_a_no_op() {
        given::<Product>([]).when(ProductCommand::Define(yoghurt())).then([ProductEvent::ProductDefined(yoghurt())]);
        given::<Product>([ProductEvent::ProductDefined(yoghurt())]).when(ProductCommand::Define(yoghurt())).then([]);
        let other = ProductDetails { unit_weight_g: Some(480), ..yoghurt() };
        given::<Product>([ProductEvent::ProductDefined(yoghurt())])
            .when(ProductCommand::Define(other))
            .then_rejected("product_already_defined");
    }

    #[test]
    fn updates_keep_the_gtin() {
        let heavier = ProductDetails { unit_weight_g: Some(520), ..yoghurt() };
        given::<Product>([ProductEvent::ProductDefined(yoghurt())])
            .when(ProductCommand::Update(heavier.clone()))
            .then([ProductEvent::ProductUpdated(heavier)]);
        let regtin = ProductDetails { gtin: Some(Gtin::try_from("3017620422003").unwrap()), ..yoghurt() };
        given::<Product>([ProductEvent::ProductDefined(yoghurt())])
            .when(ProductCommand::Update(regtin))
            .then_rejected("gtin_immutable");
        given::<Product>([]).when(ProductCommand::Update(yoghurt())).then_rejected("product_not_found");
    }

    #[test]
    fn details_are_checked() {
        let weightless = ProductDetails { unit_weight_g: Some(0), ..yoghurt() };
        given::<Product>([]).when(ProductCommand::Define(weightless)).then_rejected("invalid_unit_weight");
        let cold_soap = ProductDetails { food_group: FoodGroup::Hygiene, ..yoghurt() };
        given::<Product>([]).when(ProductCommand::Define(cold_soap)).then_rejected("invalid_storage");
        let pork_without_meat = ProductDetails { traits: Traits { pork: true, ..Default::default() }, ..yoghurt() };
        given::<Product>([]).when(ProductCommand::Define(pork_without_meat)).then_rejected("invalid_traits");
    }
}
