//! The distribution service's domain: associations and their relay points (and, in later work,
//! households, parcel requests and the parcel composer).
//!
//! Pure: commands are decided into events and events folded into state, with no I/O.

mod association;

pub use association::{Association, AssociationCommand, AssociationEvent, RelayPoint};
