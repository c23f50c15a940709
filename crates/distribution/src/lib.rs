//! The distribution service's domain: associations and their relay points, and the households
//! they follow (composition, diet, eligibility, consent; who they are is sealed, see
//! [`Sealed`]). Parcel requests and the parcel composer come next.
//!
//! Pure: commands are decided into events and events folded into state, with no I/O.

mod association;
mod household;

pub use association::{Association, AssociationCommand, AssociationEvent, EligibilityRule, RelayPoint};
pub use household::{Assessment, Composition, Diet, Household, HouseholdCommand, HouseholdEvent, Sealed};
