//! The stock service's domain: warehouse sites and their zones, lots (what is on the shelves,
//! with its dates, cold-chain class and origin) and reservations (stock set aside across lots,
//! in FEFO order, for a parcel or a transfer).
//!
//! Pure: commands are decided into events and events folded into state, with no I/O. The date
//! a rule depends on (`today`) comes in the command.

mod lot;
mod recall;
mod reservation;
mod site;

pub use lot::{AdjustReason, Destination, Lot, LotCommand, LotEvent, LotStatus, Origin, Receipt};
pub use recall::{Recall, RecallCommand, RecallCriteria, RecallEvent};
pub use reservation::{
    Allocation, PlanLine, Purpose, Reservation, ReservationCommand, ReservationEvent, ReservationStatus, Shortfall,
    MAX_CANDIDATES,
};
pub use site::{Site, SiteCommand, SiteEvent, StorageClass, Zone, ZoneCode};
