use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An aggregate identifier that is safe to use as one NATS subject token.
///
/// Allowed: ASCII letters, digits, `-` and `_`, 1 to 64 characters. UUIDs and slugs such as
/// `site-main` fit; dots, wildcards and spaces, which would change the meaning of a subject,
/// cannot be represented.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AggregateId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid identifier {0:?}: use 1 to 64 letters, digits, '-' or '_'")]
pub struct InvalidId(pub String);

impl AggregateId {
    pub fn new_v7() -> Self {
        AggregateId(uuid::Uuid::now_v7().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AggregateId {
    type Error = InvalidId;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let ok = !value.is_empty()
            && value.len() <= 64
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(AggregateId(value))
        } else {
            Err(InvalidId(value))
        }
    }
}

impl FromStr for AggregateId {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AggregateId::try_from(s.to_owned())
    }
}

impl From<AggregateId> for String {
    fn from(id: AggregateId) -> String {
        id.0
    }
}

impl fmt::Display for AggregateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_breaking_characters_are_refused() {
        for bad in ["", "a.b", "a*", ">", "a b", "é", &"x".repeat(65)] {
            assert!(AggregateId::from_str(bad).is_err(), "{bad:?} was accepted");
        }
        for good in ["site-main", "0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b", "A_1"] {
            assert_eq!(AggregateId::from_str(good).unwrap().as_str(), good);
        }
    }
}
