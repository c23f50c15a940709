use std::collections::BTreeMap;
use std::fmt;

use eventcore::{Aggregate, DomainEvent, Rejection};
use serde::{Deserialize, Serialize};
pub use values::StorageClass;
use values::{GeoPoint, InvalidValue, Name};

/// A zone code inside a site, such as `A1` or `COLD-2`: 1 to 16 of A–Z, 0–9, `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ZoneCode(String);

impl TryFrom<String> for ZoneCode {
    type Error = InvalidValue;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let v = value.trim().to_ascii_uppercase();
        if v.is_empty() || v.len() > 16 || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(InvalidValue::new("zone", format!("{value:?} is not 1 to 16 letters, digits or '-'")));
        }
        Ok(ZoneCode(v))
    }
}

impl From<ZoneCode> for String {
    fn from(z: ZoneCode) -> String {
        z.0
    }
}

impl fmt::Display for ZoneCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    pub code: ZoneCode,
    pub storage: StorageClass,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SiteCommand {
    Create { name: Name, address: String, position: Option<GeoPoint>, zones: Vec<Zone> },
    AddZone { zone: Zone },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum SiteEvent {
    SiteCreated { name: Name, address: String, position: Option<GeoPoint> },
    ZoneAdded { zone: Zone },
}

impl DomainEvent for SiteEvent {}

/// A warehouse or storage site of the collective.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Site {
    pub name: Option<Name>,
    pub zones: BTreeMap<ZoneCode, StorageClass>,
}

impl Aggregate for Site {
    const KIND: &'static str = "site";
    type Command = SiteCommand;
    type Event = SiteEvent;

    fn decide(&self, command: &SiteCommand) -> Result<Vec<SiteEvent>, Rejection> {
        match command {
            SiteCommand::Create { .. } if self.name.is_some() => {
                Err(Rejection::conflict("site_already_exists", "this site already exists"))
            }
            SiteCommand::Create { name, address, position, zones } => {
                if values::limits::too_long(address, values::limits::MAX_TEXT) {
                    return Err(Rejection::validation("invalid_address", "an address is at most 500 characters"));
                }
                let mut events = vec![SiteEvent::SiteCreated {
                    name: name.clone(),
                    address: address.trim().to_owned(),
                    position: *position,
                }];
                let mut seen = BTreeMap::new();
                for zone in zones {
                    if seen.insert(zone.code.clone(), ()).is_some() {
                        return Err(Rejection::validation(
                            "duplicate_zone",
                            format!("zone {} is listed twice", zone.code),
                        ));
                    }
                    events.push(SiteEvent::ZoneAdded { zone: zone.clone() });
                }
                Ok(events)
            }
            SiteCommand::AddZone { .. } if self.name.is_none() => {
                Err(Rejection::not_found("site_not_found", "no such site"))
            }
            SiteCommand::AddZone { zone } if self.zones.contains_key(&zone.code) => {
                Err(Rejection::conflict("zone_exists", format!("zone {} already exists", zone.code)))
            }
            SiteCommand::AddZone { zone } => Ok(vec![SiteEvent::ZoneAdded { zone: zone.clone() }]),
        }
    }

    fn apply(&mut self, event: &SiteEvent) {
        match event {
            SiteEvent::SiteCreated { name, .. } => self.name = Some(name.clone()),
            SiteEvent::ZoneAdded { zone } => {
                self.zones.insert(zone.code.clone(), zone.storage);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use eventcore::testing::given;

    use super::*;

    fn zone(code: &str, storage: StorageClass) -> Zone {
        Zone { code: ZoneCode::try_from(code.to_owned()).unwrap(), storage }
    }

    fn created() -> SiteEvent {
        SiteEvent::SiteCreated {
            name: Name::try_from("Entrepôt Gerland").unwrap(),
            address: "Lyon 7e".into(),
            position: None,
        }
    }

    #[test]
    fn a_site_is_created_with_its_zones() {
        let cmd = SiteCommand::Create {
            name: Name::try_from("Entrepôt Gerland").unwrap(),
            address: "Lyon 7e".into(),
            position: None,
            zones: vec![zone("a1", StorageClass::Ambient), zone("COLD", StorageClass::Chilled)],
        };
        given::<Site>([]).when(cmd.clone()).then([
            created(),
            SiteEvent::ZoneAdded { zone: zone("A1", StorageClass::Ambient) },
            SiteEvent::ZoneAdded { zone: zone("COLD", StorageClass::Chilled) },
        ]);
        given::<Site>([created()]).when(cmd).then_rejected("site_already_exists");
    }

    #[test]
    fn zones_are_unique() {
        let twice = SiteCommand::Create {
            name: Name::try_from("X").unwrap(),
            address: String::new(),
            position: None,
            zones: vec![zone("A", StorageClass::Ambient), zone("a", StorageClass::Frozen)],
        };
        given::<Site>([]).when(twice).then_rejected("duplicate_zone");
        let add = SiteCommand::AddZone { zone: zone("F1", StorageClass::Frozen) };
        let state = given::<Site>([created()])
            .when(add.clone())
            .then([SiteEvent::ZoneAdded { zone: zone("F1", StorageClass::Frozen) }]);
        assert_eq!(state.zones.len(), 1);
        given::<Site>([created(), SiteEvent::ZoneAdded { zone: zone("F1", StorageClass::Frozen) }])
            .when(add.clone())
            .then_rejected("zone_exists");
        given::<Site>([]).when(add).then_rejected("site_not_found");
    }

    #[test]
    fn zone_codes_are_checked() {
        assert!(ZoneCode::try_from("A 1".to_owned()).is_err());
        assert!(ZoneCode::try_from(String::new()).is_err());
        assert_eq!(ZoneCode::try_from(" cold-2 ".to_owned()).unwrap().to_string(), "COLD-2");
    }
}
