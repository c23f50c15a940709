//! The donations service's domain: donors and (in later work) the donations they make.
//!
//! Pure: commands are decided into events and events folded into state, with no I/O. The
//! runtime loads state, calls [`Donor::decide`] and stores what it returns.

mod donor;

pub use donor::{Donor, DonorCommand, DonorEvent, DonorKind};
