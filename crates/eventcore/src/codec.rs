use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// An event type of one aggregate, stored as `{type, schema_version, data}`.
///
/// Implementors are enums serialised with `#[serde(tag = "type", content = "data")]`, one
/// struct variant per event type. Once published an event type is a contract: to change its
/// shape, raise its [`schema_version`](DomainEvent::schema_version) and teach
/// [`upcast`](DomainEvent::upcast) to turn the previous shape into the new one.
pub trait DomainEvent: Serialize + DeserializeOwned + Clone + fmt::Debug + PartialEq + Send + Sync + 'static {
    /// The version written for new events of this type.
    fn schema_version(event_type: &str) -> u32 {
        let _ = event_type;
        1
    }

    /// Turns the `data` of `event_type` at version `from` into version `from + 1`.
    /// `None` means no upcaster exists for that step.
    fn upcast(event_type: &str, from: u32, data: Value) -> Option<Result<Value, String>> {
        let _ = (event_type, from, data);
        None
    }
}

/// A pure JSON-to-JSON step from one schema version of an event type to the next.
pub type Upcaster = fn(Value) -> Result<Value, String>;

/// A table of upcasters keyed by event type and source version, for domains that prefer
/// registering functions to writing a `match` in [`DomainEvent::upcast`].
#[derive(Default, Clone)]
pub struct Upcasters {
    steps: Vec<(&'static str, u32, Upcaster)>,
}

impl Upcasters {
    pub fn with(mut self, event_type: &'static str, from: u32, step: Upcaster) -> Self {
        self.steps.push((event_type, from, step));
        self
    }

    pub fn upcast(&self, event_type: &str, from: u32, data: Value) -> Option<Result<Value, String>> {
        self.steps.iter().find(|(t, v, _)| *t == event_type && *v == from).map(|(_, _, step)| step(data))
    }
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.steps.iter().map(|(t, v, _)| (t, v))).finish()
    }
}

/// An event in its stored form.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedEvent {
    pub event_type: String,
    pub schema_version: u32,
    pub data: Value,
}

/// Why a stored event could not be turned back into a domain event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("event {event_type} has schema version {found}, newer than the {supported} this build understands")]
    NewerVersion { event_type: String, found: u32, supported: u32 },
    #[error("no upcaster from version {from} of event {event_type}")]
    MissingUpcaster { event_type: String, from: u32 },
    #[error("upcasting event {event_type} from version {from} failed: {reason}")]
    UpcastFailed { event_type: String, from: u32, reason: String },
    #[error("event {event_type} v{version} does not match its schema: {reason}")]
    Invalid { event_type: String, version: u32, reason: String },
}

pub fn encode_event<E: DomainEvent>(event: &E) -> EncodedEvent {
    let value = serde_json::to_value(event).expect("domain events serialise to JSON");
    let Value::Object(mut map) = value else { panic!("domain events must be serde-tagged enums with struct variants") };
    let event_type = match map.remove("type") {
        Some(Value::String(t)) => t,
        _ => panic!("domain events must use #[serde(tag = \"type\", content = \"data\")]"),
    };
    let data = map.remove("data").unwrap_or(Value::Object(Default::default()));
    let schema_version = E::schema_version(&event_type);
    EncodedEvent { event_type, schema_version, data }
}

pub fn decode_event<E: DomainEvent>(event_type: &str, schema_version: u32, data: Value) -> Result<E, DecodeError> {
    let supported = E::schema_version(event_type);
    if schema_version > supported {
        return Err(DecodeError::NewerVersion { event_type: event_type.to_owned(), found: schema_version, supported });
    }
    let mut version = schema_version;
    let mut data = data;
    while version < supported {
        data = match E::upcast(event_type, version, data) {
            None => return Err(DecodeError::MissingUpcaster { event_type: event_type.to_owned(), from: version }),
            Some(Err(reason)) => {
                return Err(DecodeError::UpcastFailed { event_type: event_type.to_owned(), from: version, reason })
            }
            Some(Ok(next)) => next,
        };
        version += 1;
    }
    serde_json::from_value(json!({ "type": event_type, "data": data })).map_err(|e| DecodeError::Invalid {
        event_type: event_type.to_owned(),
        version: schema_version,
        reason: e.to_string(),
    })
}

/// Decodes an event from its stored raw JSON. The current version is parsed straight into
/// `E`; older versions go through [`decode_event`] and its upcasters.
pub fn decode_event_raw<E: DomainEvent>(
    event_type: &str,
    schema_version: u32,
    data: &serde_json::value::RawValue,
) -> Result<E, DecodeError> {
    if schema_version != E::schema_version(event_type) {
        let value: Value = serde_json::from_str(data.get()).map_err(|e| DecodeError::Invalid {
            event_type: event_type.to_owned(),
            version: schema_version,
            reason: e.to_string(),
        })?;
        return decode_event(event_type, schema_version, value);
    }
    let mut text = String::with_capacity(data.get().len() + event_type.len() + 24);
    text.push_str("{\"type\":");
    text.push_str(&serde_json::to_string(event_type).expect("strings serialise"));
    text.push_str(",\"data\":");
    text.push_str(data.get());
    text.push('}');
    serde_json::from_str(&text).map_err(|e| DecodeError::Invalid {
        event_type: event_type.to_owned(),
        version: schema_version,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type", content = "data", rename_all = "snake_case")]
    enum Ev {
        Weighed { grams: u64 },
    }

    impl DomainEvent for Ev {
        fn schema_version(event_type: &str) -> u32 {
            match event_type {
                "weighed" => 2,
                _ => 1,
            }
        }

        fn upcast(event_type: &str, from: u32, data: Value) -> Option<Result<Value, String>> {
            Upcasters::default()
                .with("weighed", 1, |d| {
                    let kg = d["kg"].as_f64().ok_or("kg missing")?;
                    Ok(json!({ "grams": (kg * 1000.0).round() as u64 }))
                })
                .upcast(event_type, from, data)
        }
    }

    #[test]
    fn round_trip_writes_current_version() {
        let e = Ev::Weighed { grams: 1500 };
        let enc = encode_event(&e);
        assert_eq!((enc.event_type.as_str(), enc.schema_version), ("weighed", 2));
        assert_eq!(decode_event::<Ev>("weighed", 2, enc.data).unwrap(), e);
    }

    #[test]
    fn raw_decoding_matches_value_decoding() {
        let raw = serde_json::value::to_raw_value(&json!({ "grams": 12 })).unwrap();
        assert_eq!(decode_event_raw::<Ev>("weighed", 2, &raw).unwrap(), Ev::Weighed { grams: 12 });
        let old = serde_json::value::to_raw_value(&json!({ "kg": 0.5 })).unwrap();
        assert_eq!(decode_event_raw::<Ev>("weighed", 1, &old).unwrap(), Ev::Weighed { grams: 500 });
        assert!(matches!(decode_event_raw::<Ev>("weighed\"", 1, &raw), Err(DecodeError::Invalid { .. })));
        assert!(matches!(decode_event_raw::<Ev>("weighed", 3, &raw), Err(DecodeError::NewerVersion { .. })));
    }

    #[test]
    fn old_version_is_upcast() {
        let e: Ev = decode_event("weighed", 1, json!({ "kg": 1.25 })).unwrap();
        assert_eq!(e, Ev::Weighed { grams: 1250 });
    }

    #[test]
    fn newer_version_and_garbage_are_refused() {
        assert!(matches!(
            decode_event::<Ev>("weighed", 3, json!({})),
            Err(DecodeError::NewerVersion { found: 3, supported: 2, .. })
        ));
        assert!(matches!(decode_event::<Ev>("weighed", 2, json!({"grams": "x"})), Err(DecodeError::Invalid { .. })));
        assert!(matches!(decode_event::<Ev>("unknown", 1, json!({})), Err(DecodeError::Invalid { .. })));
        assert!(matches!(decode_event::<Ev>("weighed", 1, json!({})), Err(DecodeError::UpcastFailed { .. })));
    }
}
