//! Vehicle routing for the collective's pickups and deliveries, and for the routing benchmark.
//!
//! A pure crate: a [`Problem`] (depots, clients with deliveries, pickups and time windows,
//! vehicle types with capacities in several dimensions, shifts and depots, travel matrices) is
//! solved by a hybrid genetic search ([`hgs::solve`]) into a [`Solution`], which
//! [`validate::validate`] checks independently. [`formats`] reads the CVRPLIB and Solomon
//! benchmark formats from text.

pub mod formats;
pub mod geo;
pub mod hgs;
pub mod ls;
pub mod plan;
pub mod problem;
pub mod segment;
pub mod solution;
pub mod validate;

pub use hgs::{solve, Limits, Outcome, Params};
pub use plan::{plan, plan_parallel, screen, Plan, Unserved};
pub use problem::{Client, Load, Problem, ProblemError, VehicleType, DIMS};
pub use solution::{Route, Solution, Totals};
pub use validate::{validate, Violation};
