//! The transport service's domain: the vehicles of the fleet (and, in later work, drivers,
//! jobs, route plans and stop actions).
//!
//! Pure: commands are decided into events and events folded into state, with no I/O.

mod vehicle;

pub use vehicle::{Vehicle, VehicleCommand, VehicleEvent, VehicleSpec};
