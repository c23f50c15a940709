//! Sanity bounds on what people type, shared by every domain. Each is far beyond any real
//! value of a food-aid collective and well inside what the arithmetic done on it can hold:
//! past it, an input is a typing error (grams typed as tonnes, cents as euros twice over) or
//! an attack, and is refused with a stable code rather than stored, summed and wrapped.

/// Units in one donation line, lot, count or reservation line: a million tins.
pub const MAX_UNITS: u32 = 1_000_000;
/// Grams in one donation line, one lot or one collection: 100 tonnes (a lorry carries 25).
pub const MAX_GRAMS: u64 = 100_000_000;
/// Kilograms a vehicle carries or a pickup expects: 100 tonnes.
pub const MAX_KG: u32 = 100_000;
/// Litres of a vehicle's load space (a 40-tonne trailer holds about 90,000).
pub const MAX_LITRES: u32 = 200_000;
/// Euro cents of one declared value: 10 million euros.
pub const MAX_CENTS: u64 = 1_000_000_000;
/// Characters of a reference, a lot number or a short label.
pub const MAX_REFERENCE: usize = 100;
/// Characters of a free text: a reason, a note, an address, a contact.
pub const MAX_TEXT: usize = 500;

/// Whether `text` has more than `max` characters.
pub fn too_long(text: &str, max: usize) -> bool {
    text.chars().count() > max
}
