//! The transport service's domain: the vehicles of the fleet, the volunteers who drive them,
//! and the day's jobs (pickups at donors, deliveries to relay points); route plans and stop
//! actions come next.
//!
//! Pure: commands are decided into events and events folded into state, with no I/O.

mod driver;
mod job;
mod vehicle;

pub use driver::{Driver, DriverCommand, DriverEvent, DriverSpec, Slot};
pub use job::{Job, JobCommand, JobEvent, JobKind, Stop};
pub use vehicle::{Vehicle, VehicleCommand, VehicleEvent, VehicleSpec};
