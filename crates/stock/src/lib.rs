//! The stock service's domain: warehouse sites and their zones (and, in later work, lots,
//! reservations and movements).
//!
//! Pure: commands are decided into events and events folded into state, with no I/O.

mod site;

pub use site::{Site, SiteCommand, SiteEvent, StorageClass, Zone, ZoneCode};
