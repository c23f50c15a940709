//! The donations service's domain: donors and their agreements, the product catalogue, and the
//! donations received (each line accepted into stock or refused, by the reception rules).
//!
//! Pure: commands are decided into events and events folded into state, with no I/O. The
//! runtime loads state, calls `decide` and stores what it returns. Whatever a decision depends
//! on beyond the aggregate (the clock, the rules, the donor's agreement, the product's details)
//! comes in the command.

mod donation;
mod donor;
mod product;

pub use donation::{
    Donation, DonationCommand, DonationEvent, Incoming, LineInput, ReceptionRules, RecordedLine, Refusal,
};
pub use donor::{Agreement, Collection, Donor, DonorCommand, DonorEvent, DonorKind};
pub use product::{Product, ProductCommand, ProductDetails, ProductEvent};
