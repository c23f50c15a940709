//! The four foodaid services as they run: each module turns its pure domain crate into a
//! [`runtime::ServiceHost`] (commands and queries) plus the projections its queries read.
//!
//! What belongs here: payload parsing into domain newtypes, role checks, projections, queries.
//! What does not: business rules (the domain crates) and transport (runtime, gateway).

pub mod distribution;
pub mod donations;
pub mod stock;
pub mod transport;

mod common;

pub use common::{Policies, ServiceContext, TransportRules, CLOCK_SKEW_MINUTES, SERVICE_NAMES};
pub use values::FoodGroup;

use projections::{Engine, Projection};
use runtime::ServiceHost;

/// Builds the host of `service` and registers its projections with `engine`.
pub fn build(service: &str, ctx: &ServiceContext, engine: &mut Engine) -> Option<ServiceHost> {
    Some(match service {
        "donations" => donations::build(ctx, engine),
        "stock" => stock::build(ctx, engine),
        "distribution" => distribution::build(ctx, engine),
        "transport" => transport::build(ctx, engine),
        _ => return None,
    })
}

/// Names of every projection the services keep.
pub fn projection_names() -> Vec<&'static str> {
    vec![
        donations::DonorsProjection.name(),
        donations::ProductsProjection.name(),
        donations::DonationsProjection::NAME,
        stock::SitesProjection.name(),
        stock::LotsProjection::NAME,
        distribution::AssociationsProjection.name(),
        distribution::HouseholdsProjection.name(),
        distribution::ParcelsProjection.name(),
        transport::TransportProjection.name(),
    ]
}
