//! The transport service's domain: the vehicles of the fleet, the volunteers who drive them,
//! the day's jobs (pickups at donors, deliveries to relay points), and each site's route plan
//! for a day with what drivers do on the road.
//!
//! Pure: commands are decided into events and events folded into state, with no I/O.

mod driver;
mod job;
mod plan;
mod vehicle;

pub use driver::{Driver, DriverCommand, DriverEvent, DriverSpec, Slot};
pub use job::{Job, JobCommand, JobEvent, JobKind, Stop};
pub use plan::{
    Plan, PlanCommand, PlanEvent, PlannedRoute, PlannedStop, RouteState, StopAction, StopState, StopStatus, Unplanned,
};
pub use vehicle::{Vehicle, VehicleCommand, VehicleEvent, VehicleSpec};
