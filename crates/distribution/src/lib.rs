//! The distribution service's domain: associations and their relay points, and the households
//! they follow (composition, diet, eligibility, consent; who they are is sealed, see
//! [`Sealed`]). The [`compose`] module is the parcel composer; [`NeedsReference`] says what
//! a person needs per food group. Parcel requests and waves come next.
//!
//! Pure: commands are decided into events and events folded into state, with no I/O.

mod association;
pub mod compose;
mod household;
mod needs;
mod parcel;

pub use association::{Association, AssociationCommand, AssociationEvent, EligibilityRule, OpeningSlot, RelayPoint};
pub use household::{
    Assessment, Composition, Diet, Household, HouseholdCommand, HouseholdEvent, Sealed, MAX_MONTHLY_CENTS,
};
pub use needs::NeedsReference;
pub use parcel::{Parcel, ParcelCommand, ParcelEvent, ParcelStatus};
