//! The transport service's domain: the vehicles of the fleet and the volunteers who drive
//! them (and, in later work, jobs, route plans and stop actions).
//!
//! Pure: commands are decided into events and events folded into state, with no I/O.

mod driver;
mod vehicle;

pub use driver::{Driver, DriverCommand, DriverEvent, DriverSpec, Slot};
pub use vehicle::{Vehicle, VehicleCommand, VehicleEvent, VehicleSpec};
