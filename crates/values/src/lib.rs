//! Value types the domains share. Each can only hold a valid value: raw input becomes one at
//! the edge with `TryFrom`, and everything inside trusts it. Serde goes through the same checks,
//! so an invalid value cannot sneak in through JSON either.

use std::fmt;

mod calendar;
mod food;
pub mod limits;

pub use calendar::Calendar;
pub use food::{Allergen, DateKind, FoodGroup, Gtin, PerGroup, ProductFacts, StorageClass, Traits};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidValue {
    pub field: &'static str,
    pub problem: String,
}

impl InvalidValue {
    pub fn new(field: &'static str, problem: impl fmt::Display) -> Self {
        InvalidValue { field, problem: problem.to_string() }
    }
}

/// A person-readable name or label: trimmed, 1 to 200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = InvalidValue;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(InvalidValue::new("name", "must not be empty"));
        }
        if trimmed.chars().count() > 200 {
            return Err(InvalidValue::new("name", "must be at most 200 characters"));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(InvalidValue::new("name", "must not contain control characters"));
        }
        Ok(Name(trimmed.to_owned()))
    }
}

impl TryFrom<&str> for Name {
    type Error = InvalidValue;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Name::try_from(value.to_owned())
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A WGS84 position in decimal degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawPoint", into = "RawPoint")]
pub struct GeoPoint {
    lat: f64,
    lon: f64,
}

#[derive(Serialize, Deserialize)]
struct RawPoint {
    lat: f64,
    lon: f64,
}

impl GeoPoint {
    pub fn new(lat: f64, lon: f64) -> Result<GeoPoint, InvalidValue> {
        if !(-90.0..=90.0).contains(&lat) {
            return Err(InvalidValue::new("position.lat", format!("{lat} is not between -90 and 90")));
        }
        if !(-180.0..=180.0).contains(&lon) {
            return Err(InvalidValue::new("position.lon", format!("{lon} is not between -180 and 180")));
        }
        Ok(GeoPoint { lat, lon })
    }

    pub fn lat(&self) -> f64 {
        self.lat
    }

    pub fn lon(&self) -> f64 {
        self.lon
    }

    /// Great-circle distance in metres (haversine, mean Earth radius).
    pub fn distance_m(&self, other: &GeoPoint) -> f64 {
        const R: f64 = 6_371_008.8;
        let (p1, p2) = (self.lat.to_radians(), other.lat.to_radians());
        let dp = p2 - p1;
        let dl = (other.lon - self.lon).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * R * a.sqrt().asin()
    }
}

impl TryFrom<RawPoint> for GeoPoint {
    type Error = InvalidValue;

    fn try_from(p: RawPoint) -> Result<Self, Self::Error> {
        GeoPoint::new(p.lat, p.lon)
    }
}

impl From<GeoPoint> for RawPoint {
    fn from(p: GeoPoint) -> RawPoint {
        RawPoint { lat: p.lat, lon: p.lon }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(Name::try_from("  Épicerie du Lac ").unwrap().as_str(), "Épicerie du Lac");
        assert!(Name::try_from("   ").is_err());
        assert!(Name::try_from("a\nb").is_err());
        assert!(Name::try_from("x".repeat(201)).is_err());
        assert!(serde_json::from_str::<Name>("\"  \"").is_err(), "serde checks too");
    }

    #[test]
    fn positions_are_checked_and_measured() {
        assert!(GeoPoint::new(91.0, 0.0).is_err());
        assert!(GeoPoint::new(0.0, -181.0).is_err());
        let lyon = GeoPoint::new(45.7640, 4.8357).unwrap();
        let villeurbanne = GeoPoint::new(45.7719, 4.8902).unwrap();
        let d = lyon.distance_m(&villeurbanne);
        assert!((4_000.0..4_600.0).contains(&d), "{d}");
        assert!(serde_json::from_str::<GeoPoint>(r#"{"lat": 100, "lon": 0}"#).is_err());
    }
}
