//! The HTTP API fuzzed from its own OpenAPI document: every operation gets malformed bodies,
//! query strings, path ids and headers, and must answer each with a 4xx and a stable
//! snake_case `code` — never a 5xx, never a hang — and write nothing.
//!
//! How a case is made: `foodaid up` serves `/api/openapi.json`; for each operation the test
//! builds a base request from the schemas (required fields always, optional ones by a coin
//! toss), filling ids, dates and the objects the schemas leave opaque from a small world it
//! set up first (sites, a donor, products, a donation and its lots, a reservation, a recall,
//! an association, an eligible household and its parcel, a vehicle, a driver, a job and
//! today's route), so that requests reach the rules behind the parsing. Queries get every
//! parameter the world knows a value for, by a coin toss (a day and a number of days always). Then it breaks exactly one thing, chosen with a seeded RNG, that no real
//! software may accept:
//! - the body: not an object, not JSON, invalid UTF-8, 10,000 nested arrays (whole or in a
//!   field), more than 1 MiB, almost 1 MiB in one text, 300,000 quotes in a field (an error
//!   quoting them is larger still), a field that is unknown or missing;
//! - a field, by what the schema says it is: a value of another JSON type; numbers beyond
//!   their type, negative where unsigned, fractional, or at their type's extremes (u32::MAX
//!   quantities, 10^17 cents: every number a user sends has a sane bound); 10,000-character
//!   strings; NUL, ESC, a right-to-left override or a lone surrogate in any text; ids with
//!   NATS subject characters (`.`, `*`, `>`), spaces or 65+ characters; impossible or absurd
//!   dates (2026-02-30, +262142-12-31, 0000-00-00) and times; values outside an enum;
//! - a path parameter: the same bad ids (and `%00`, `%2F`, invalid UTF-8), impossible dates,
//!   absurd years;
//! - the query string: unknown or repeated parameters, impossible dates or months, bad
//!   numbers, enums or `min_seq`, control characters;
//! - the headers: `X-Occurred-At` unreadable or out of range, `Idempotency-Key` empty, spaced,
//!   too long or not ASCII.
//!
//! Requests carry the administrator's token (most) or an association's, so they pass
//! authentication and reach the services. Each answer must come within 5 s, be 4xx, and hold
//! a JSON `code` in snake_case; and after the run, once the sagas are idle, every stream's last
//! sequence is what it was before (`settled`). Cases found failing once are kept in
//! [`regressions`] and run first, every time.
//!
//! What a case may not be: valid. A value the software could rightly accept (a 10,000-character
//! search, an id filter that matches nothing, `2026-1-1` which chrono reads as a date, a
//! struct given as an array, which serde reads field by field) is not generated.
//!
//! `FUZZ_SEED` (default 20261123) and `FUZZ_CASES` (default 4000, about 5 s after a few seconds
//! of set-up in a debug build) choose the run; a longer campaign:
//! `FUZZ_CASES=100000 FUZZ_SEED=7 cargo test -p foodaid --test fuzz -- --nocapture`.
//! A failure lists each case with the seed to replay it; `FUZZ_VERBOSE=1` prints every case
//! and its answer.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::StatusCode;
use serde_json::{json, Map, Value};
use support::{in_days_at, min_seq, morning_zone, settled, token, Api, Foodaid};
use testkit::TestNats;

const DEFAULT_SEED: u64 = 20261123;
const DEFAULT_CASES: usize = 4000;
/// Longer than any refusal takes, even on a loaded machine; shorter than the gateway's own
/// request timeout, so a handler that never answers shows as a hang here.
const PER_REQUEST: Duration = Duration::from_secs(5);
/// Requests in flight at once.
const IN_FLIGHT: usize = 4;
/// A placeholder the serialised body turns into a lone surrogate, which `Value` cannot hold.
const SURROGATE: &str = "\u{E000}lone-surrogate\u{E000}";

/// One operation of the document.
#[derive(Debug, Clone)]
struct Operation {
    method: reqwest::Method,
    /// The template: `/api/donors/{donor_id}`.
    path: String,
    command: bool,
    creates: bool,
    /// Query parameters the document declares (`min_seq` aside).
    params: Vec<String>,
    body: Option<Value>,
}

impl Operation {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    fn path_params(&self) -> Vec<String> {
        self.path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect()
    }
}

/// What a schema says a value is.
#[derive(Debug, Clone)]
enum Shape {
    Object {
        properties: Vec<(String, Value)>,
        required: Vec<String>,
    },
    Array(Value),
    Text {
        format: Option<String>,
        choices: Vec<String>,
    },
    Integer {
        unsigned: bool,
    },
    Number,
    Boolean,
    /// `Object` without properties, or no type at all: the schema does not say.
    Opaque,
}

struct Schemas<'a> {
    components: &'a Map<String, Value>,
}

impl Schemas<'_> {
    fn deref<'s>(&'s self, schema: &'s Value) -> &'s Value {
        let mut schema = schema;
        for _ in 0..16 {
            match schema.get("$ref").and_then(Value::as_str) {
                Some(r) => {
                    let name = r.rsplit('/').next().unwrap_or_default();
                    schema = self.components.get(name).unwrap_or(&Value::Null);
                }
                None => break,
            }
        }
        schema
    }

    fn shape(&self, schema: &Value) -> Shape {
        let schema = self.deref(schema);
        for key in ["oneOf", "anyOf"] {
            if let Some(options) = schema.get(key).and_then(Value::as_array) {
                let some = options.iter().find(|o| o.get("type").and_then(Value::as_str) != Some("null"));
                return some.map_or(Shape::Opaque, |o| self.shape(o));
            }
        }
        if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
            let (mut properties, mut required) = (Vec::new(), Vec::new());
            for part in parts {
                if let Shape::Object { properties: p, required: r } = self.shape(part) {
                    properties.extend(p);
                    required.extend(r);
                }
            }
            return Shape::Object { properties, required };
        }
        let kind = match schema.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(Value::Array(ts)) => {
                ts.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or_default().to_owned()
            }
            _ => String::new(),
        };
        let format = schema.get("format").and_then(Value::as_str).map(str::to_owned);
        match kind.as_str() {
            "object" => match schema.get("properties").and_then(Value::as_object) {
                Some(props) if !props.is_empty() => Shape::Object {
                    properties: props.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    required: schema
                        .get("required")
                        .and_then(Value::as_array)
                        .map(|r| r.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                        .unwrap_or_default(),
                },
                _ => Shape::Opaque,
            },
            "array" => Shape::Array(schema.get("items").cloned().unwrap_or(Value::Null)),
            "string" => Shape::Text {
                format,
                choices: schema
                    .get("enum")
                    .and_then(Value::as_array)
                    .map(|e| e.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                    .unwrap_or_default(),
            },
            "integer" => {
                Shape::Integer { unsigned: schema.get("minimum").and_then(Value::as_f64).is_some_and(|m| m >= 0.0) }
            }
            "number" => Shape::Number,
            "boolean" => Shape::Boolean,
            _ => Shape::Opaque,
        }
    }
}

/// The world the set-up made: what a valid request names.
struct World {
    calendar: values::Calendar,
    today: String,
    tomorrow: String,
    /// Valid values by field name, for ids, dates and what schemas leave opaque.
    known: BTreeMap<&'static str, Value>,
}

impl World {
    fn new(calendar: values::Calendar) -> World {
        let (today, tomorrow) = (in_days_at(&calendar, 0), in_days_at(&calendar, 1));
        let week: Vec<Value> = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
            .iter()
            .map(|d| json!({"day": d, "opens": "08:00:00", "closes": "20:00:00"}))
            .collect();
        let known: BTreeMap<&'static str, Value> = [
            ("donor_id", json!("lidl")),
            ("party_id", json!("lidl")),
            ("site_id", json!("gerland")),
            ("home_site", json!("gerland")),
            ("to_site", json!("givors")),
            ("product_id", json!("pasta")),
            ("donation_id", json!("d1")),
            ("lot_id", json!("d1-l1")),
            ("zone", json!("A1")),
            ("reservation_id", json!("r1")),
            ("recall_id", json!("rc1")),
            ("association_id", json!("asso-a")),
            ("relay_id", json!("rp-a")),
            ("relay_point_id", json!("rp-a")),
            ("household_id", json!("h1")),
            ("parcel_id", json!(format!("h1-{tomorrow}"))),
            ("vehicle_id", json!("v1")),
            ("driver_id", json!("monique")),
            ("job_id", json!("j1")),
            // Replaced by the route the set-up plans.
            ("route_id", json!("no-route")),
            ("gtin", json!("3760012345021")),
            ("date", json!(tomorrow)),
            ("today", json!(today)),
            ("assessed_on", json!(today)),
            ("date_from", json!(today)),
            ("date_to", json!(tomorrow)),
            ("year", json!(today[..4])),
            ("month", json!(today[..7])),
            ("received_at", json!(format!("{today}T08:00:00Z"))),
            ("name", json!("Fuzz")),
            ("commune", json!("Lyon")),
            ("address", json!("1 rue du Port")),
            ("reference", json!("CONV-1")),
            ("reason", json!("damage")),
            ("note", json!("vu")),
            ("lot_number", json!("P1")),
            // Donors' kinds are an enum the schema lists; a job's is text.
            ("kind", json!("pickup")),
            ("q", json!("li")),
            ("from", json!(today)),
            ("to", json!(tomorrow)),
            ("as_of", json!(today)),
            ("status", json!("available")),
            ("food_group", json!("starches")),
            ("storage", json!("ambient")),
            ("date_kind", json!("ddm")),
            ("quantity", json!(1)),
            ("weight_g", json!(1000)),
            ("unit_weight_g", json!(500)),
            ("kg", json!(10)),
            ("chilled_kg", json!(0)),
            ("capacity_kg", json!(500)),
            ("chilled_capacity_kg", json!(0)),
            ("days", json!(7)),
            ("delta", json!(-1)),
            ("counted", json!(1)),
            ("dlc_min_hours", json!(24)),
            ("threshold_cents", json!(1000)),
            ("validity_days", json!(183)),
            ("resources_cents", json!(90000)),
            ("charges_cents", json!(70000)),
            ("declared_value_cents", json!(100)),
            ("max_shift_minutes", json!(480)),
            ("service_minutes", json!(10)),
            ("seconds", json!(0.5)),
            ("temperature_c", json!(3.0)),
            ("opens", json!("09:00:00")),
            ("closes", json!("11:00:00")),
            ("composition", json!({"adults": 1, "teens": 0, "children": 1, "infants": 0})),
            ("diet", json!({"no_pork": true})),
            ("traits", json!({"meat": false})),
            ("allergens", json!(["gluten"])),
            ("purpose", json!({"kind": "parcel"})),
            ("destination", json!({"kind": "parcel", "reference": "colis-x", "association_id": "asso-a"})),
            ("collections", json!([{"day": "Tue", "opens": "09:00:00", "closes": "11:00:00", "kg": 50,
                "chilled_kg": 0, "site_id": "gerland"}])),
            ("opening", Value::Array(week)),
            ("slots", json!([{"from": "08:00:00", "to": "12:00:00"}])),
            ("vehicles", json!(["v1"])),
            ("household_ids", json!(["h1"])),
            ("lots", json!(["d1-l1"])),
            ("lot_numbers", json!(["P1"])),
            ("position", json!({"lat": 45.75, "lon": 4.85})),
            ("csv", json!("Nom;Prénom;Date de naissance;Point relais;Adultes;Enfants;Consentement\nDiallo;Awa;14/03/1985;rp-a;2;1;oui\n")),
        ]
        .into_iter()
        .collect();
        World { calendar, today, tomorrow, known }
    }
}

/// What one field is, for choosing how to break it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    Id,
    Date,
    DateTime,
    Time,
    Choice,
    Text,
    Unsigned,
    Signed,
    Number,
    Boolean,
    Object,
    List,
}

/// A leaf (or opaque object) of a base body: where it is and what it is.
#[derive(Debug, Clone)]
struct Field {
    path: Vec<PathStep>,
    name: String,
    kind: FieldKind,
    /// For a choice: its valid values.
    choices: Vec<String>,
    /// Top-level and required: leaving it out must be refused.
    required: bool,
}

#[derive(Debug, Clone)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn is_id(name: &str) -> bool {
    name.ends_with("_id") || name == "home_site" || name == "to_site" || name == "gtin"
}

fn kind_of_text(name: &str, format: Option<&str>, choices: &[String]) -> FieldKind {
    match (format, name) {
        (Some("date"), _) => FieldKind::Date,
        (Some("date-time"), _) => FieldKind::DateTime,
        _ if !choices.is_empty() => FieldKind::Choice,
        (_, "opens" | "closes") => FieldKind::Time,
        (_, n) if is_id(n) => FieldKind::Id,
        _ => FieldKind::Text,
    }
}

/// Builds valid-looking values from schemas and the world.
struct Builder<'a> {
    schemas: Schemas<'a>,
    world: &'a World,
    fresh: usize,
}

impl Builder<'_> {
    /// A base body for `op`, and its fields.
    fn body(&mut self, rng: &mut StdRng, op: &Operation) -> (Value, Vec<Field>) {
        let schema = op.body.clone().unwrap_or(Value::Null);
        let mut fields = Vec::new();
        let value = match self.schemas.shape(&schema) {
            Shape::Object { properties, required } => {
                let mut map = Map::new();
                let in_path = op.path_params();
                for (name, prop) in properties {
                    // The path fills these: a body value would be overwritten.
                    if in_path.contains(&name) {
                        continue;
                    }
                    let needed = required.contains(&name);
                    if !needed && rng.random_bool(0.5) {
                        continue;
                    }
                    let path = vec![PathStep::Key(name.clone())];
                    let v = self.value(rng, &name, &prop, op.creates && !needed, path, needed, &mut fields);
                    map.insert(name, v);
                }
                Value::Object(map)
            }
            _ => Value::Object(Map::new()),
        };
        (value, fields)
    }

    #[allow(clippy::too_many_arguments)]
    fn value(
        &mut self,
        rng: &mut StdRng,
        name: &str,
        schema: &Value,
        fresh_id: bool,
        path: Vec<PathStep>,
        required: bool,
        fields: &mut Vec<Field>,
    ) -> Value {
        let shape = self.schemas.shape(schema);
        let field =
            |kind, choices: Vec<String>| Field { path: path.clone(), name: name.to_owned(), kind, choices, required };
        match shape {
            Shape::Object { properties, required: inner } => {
                let mut map = Map::new();
                for (k, prop) in properties {
                    if !inner.contains(&k) && rng.random_bool(0.5) {
                        continue;
                    }
                    let mut p = path.clone();
                    p.push(PathStep::Key(k.clone()));
                    let v = self.value(rng, &k, &prop, false, p, false, fields);
                    map.insert(k, v);
                }
                fields.push(field(FieldKind::Object, vec![]));
                Value::Object(map)
            }
            Shape::Array(item) => {
                if let Some(known) = self.world.known.get(name) {
                    fields.push(field(FieldKind::List, vec![]));
                    self.opaque_fields(name, known, &path, fields);
                    return known.clone();
                }
                let mut p = path.clone();
                p.push(PathStep::Index(0));
                let singular = name.strip_suffix('s').unwrap_or(name);
                let v = self.value(rng, singular, &item, false, p, false, fields);
                fields.push(field(FieldKind::List, vec![]));
                Value::Array(vec![v])
            }
            Shape::Text { format, choices } => {
                let kind = kind_of_text(name, format.as_deref(), &choices);
                fields.push(field(kind, choices.clone()));
                if kind == FieldKind::Id && fresh_id && name != "gtin" {
                    self.fresh += 1;
                    return json!(format!("fz-{}", self.fresh));
                }
                if let Some(first) = choices.first() {
                    return json!(first);
                }
                match (kind, self.world.known.get(name)) {
                    (_, Some(v)) => v.clone(),
                    (FieldKind::Date, None) => json!(self.world.tomorrow),
                    (FieldKind::DateTime, None) => json!(format!("{}T08:00:00Z", self.world.today)),
                    (FieldKind::Id, None) => json!("x1"),
                    _ => json!("fuzz"),
                }
            }
            Shape::Integer { unsigned } => {
                fields.push(field(if unsigned { FieldKind::Unsigned } else { FieldKind::Signed }, vec![]));
                self.world.known.get(name).cloned().unwrap_or(json!(1))
            }
            Shape::Number => {
                fields.push(field(FieldKind::Number, vec![]));
                self.world.known.get(name).cloned().unwrap_or(json!(1.0))
            }
            Shape::Boolean => {
                fields.push(field(FieldKind::Boolean, vec![]));
                json!(rng.random_bool(0.5))
            }
            Shape::Opaque => {
                let v = self.world.known.get(name).cloned().unwrap_or(json!({}));
                fields.push(field(FieldKind::Object, vec![]));
                self.opaque_fields(name, &v, &path, fields);
                v
            }
        }
    }

    /// The fields inside a value the schema leaves opaque, typed by what the world put there.
    fn opaque_fields(&self, name: &str, value: &Value, path: &[PathStep], fields: &mut Vec<Field>) {
        let mut push = |p: Vec<PathStep>, n: &str, kind| {
            fields.push(Field { path: p, name: n.to_owned(), kind, choices: vec![], required: false })
        };
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let mut p = path.to_vec();
                    p.push(PathStep::Key(k.clone()));
                    self.opaque_fields(k, v, &p, fields);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate().take(1) {
                    let mut p = path.to_vec();
                    p.push(PathStep::Index(i));
                    let singular = name.strip_suffix('s').unwrap_or(name);
                    self.opaque_fields(singular, v, &p, fields);
                }
            }
            Value::String(s) => {
                let kind = if ["opens", "closes", "from", "to"].contains(&name) {
                    FieldKind::Time
                } else if is_id(name) || ["vehicle", "lot", "household_id"].contains(&name) {
                    FieldKind::Id
                } else if ["day", "food_group", "storage"].contains(&name)
                    || name.starts_with("allergen")
                    || (name == "kind" && !path.iter().any(|p| matches!(p, PathStep::Key(k) if k == "destination")))
                {
                    // Enums the schema does not list: an unknown value is refused all the same.
                    FieldKind::Choice
                } else if s.len() == 10 && s.as_bytes()[4] == b'-' {
                    FieldKind::Date
                } else {
                    FieldKind::Text
                };
                push(path.to_vec(), name, kind);
            }
            Value::Number(n) if n.is_f64() => push(path.to_vec(), name, FieldKind::Number),
            // Counts, kilograms and people in opaque objects are unsigned.
            Value::Number(_) => push(path.to_vec(), name, FieldKind::Unsigned),
            Value::Bool(_) => push(path.to_vec(), name, FieldKind::Boolean),
            Value::Null => {}
        }
    }
}

/// A request ready to send.
#[derive(Debug, Clone)]
struct Case {
    class: &'static str,
    /// What was broken, to read a failure.
    what: String,
    op: String,
    method: reqwest::Method,
    /// Path and query, already percent-encoded.
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Option<Vec<u8>>,
    /// 0: the administrator; 1: association asso-a.
    token: usize,
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn long_text() -> String {
    "Épicerie solidaire ".chars().cycle().take(10_000).collect()
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Values no field of `kind` may take.
fn bad_values(kind: FieldKind, choices: &[String]) -> Vec<Value> {
    let mut out = match kind {
        // Another JSON type (text digits would be read as a number by some parameters: none).
        FieldKind::Id
        | FieldKind::Text
        | FieldKind::Date
        | FieldKind::DateTime
        | FieldKind::Time
        | FieldKind::Choice => {
            vec![json!(12345), json!(true), json!({}), json!([])]
        }
        FieldKind::Unsigned | FieldKind::Signed | FieldKind::Number => {
            vec![json!("douze"), json!(true), json!({}), json!([1])]
        }
        FieldKind::Boolean => vec![json!("yes"), json!(1), json!({})],
        // Not an array: serde reads a struct from a sequence of its fields (`[]` is a diet of
        // no restrictions), a leniency of the parser, not a value anyone could mistake.
        FieldKind::Object => vec![json!("x"), json!(1), json!(true)],
        FieldKind::List => vec![json!("x"), json!(1), json!({}), serde_json::from_str(&nested(100)).unwrap()],
    };
    let text = [json!(long_text()), json!("a\u{0}b"), json!("txt\u{202E}gpj"), json!("\u{1b}[31m"), json!(SURROGATE)];
    match kind {
        FieldKind::Id => out
            .extend(["a.b", "*", ">", "a b", "", "a>b.*", "a/b", "é", "%00", &"x".repeat(65)].iter().map(|s| json!(s))),
        FieldKind::Text => {}
        FieldKind::Date => out.extend(
            ["2026-02-30", "+262142-12-31", "0000-00-00", "2026-13-01", "1899-12-31", "2201-01-01", "demain"]
                .iter()
                .map(|s| json!(s)),
        ),
        FieldKind::DateTime => out.extend(
            [
                "2026-02-30T10:00:00Z",
                "+262142-12-31T00:00:00Z",
                "0001-01-01T00:00:00Z",
                "9999-12-31T23:59:59Z",
                "2026-11-23 25:00",
                "hier",
            ]
            .iter()
            .map(|s| json!(s)),
        ),
        FieldKind::Time => {
            out.extend(["25:00:00", "12:60:00", "midi", "24:00:01", "-1:00:00"].iter().map(|s| json!(s)))
        }
        FieldKind::Choice => {
            out.push(json!("not_a_value"));
            if let Some(c) = choices.first() {
                out.push(json!(c.to_uppercase()));
            }
        }
        FieldKind::Unsigned => out.extend([
            json!(-1),
            json!(1.5),
            json!(1e30),
            serde_json::from_str::<Value>("18446744073709551616").unwrap(),
            json!(u32::MAX),
            json!(u64::MAX),
            json!(10u64.pow(17)),
        ]),
        FieldKind::Signed => out.extend([
            json!(1.5),
            json!(1e30),
            serde_json::from_str::<Value>("-9223372036854775809").unwrap(),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(10i64.pow(17)),
            json!(-(10i64.pow(17))),
        ]),
        FieldKind::Number => out.extend([json!(1e308), json!(-1e308), json!(1e30)]),
        FieldKind::Boolean | FieldKind::Object | FieldKind::List => {}
    }
    if matches!(
        kind,
        FieldKind::Id | FieldKind::Text | FieldKind::Date | FieldKind::DateTime | FieldKind::Time | FieldKind::Choice
    ) {
        out.extend(text);
    }
    out
}

fn set_at(body: &mut Value, path: &[PathStep], value: Option<Value>) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = body;
    for step in parents {
        at = match step {
            PathStep::Key(k) => &mut at[k.as_str()],
            PathStep::Index(i) => &mut at[*i],
        };
    }
    match (last, value) {
        (PathStep::Key(k), Some(v)) => at[k.as_str()] = v,
        (PathStep::Key(k), None) => {
            if let Some(map) = at.as_object_mut() {
                map.remove(k);
            }
        }
        (PathStep::Index(i), Some(v)) => at[*i] = v,
        (PathStep::Index(i), None) => {
            if let Some(items) = at.as_array_mut() {
                items.remove(*i);
            }
        }
    }
}

fn serialise(body: &Value) -> Vec<u8> {
    let text = serde_json::to_string(body).unwrap();
    text.replace(SURROGATE, "\\ud800").into_bytes()
}

/// Path parameters' values no path may take.
fn bad_segments(name: &str) -> Vec<String> {
    let mut out: Vec<String> = match name {
        "date" => ["2026-02-30", "%2B262142-12-31", "0000-00-00", "1899-12-31", "2201-01-01", "demain"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        "year" => {
            ["99999", "-5", "1899", "2201", "deux-mille", "2026.5", "%2B262142"].iter().map(|s| s.to_string()).collect()
        }
        _ => vec![],
    };
    out.extend(
        ["a.b", "*", ">", "a%20b", "%00", "a%2Fb", "%FF", "%E2%80%AE", "a.*.%3E", "%C3%A9"]
            .iter()
            .map(|s| s.to_string()),
    );
    out.push("x".repeat(65));
    out.push("y".repeat(10_000));
    out
}

/// Query values no parameter `name` may take.
fn bad_params(name: &str) -> Vec<String> {
    let mut out: Vec<String> = match name {
        "date" | "from" | "to" | "as_of" => {
            vec!["2026-02-30", "+262142-12-31", "0000-00-00", "1899-12-31", "2201-01-01", "demain"]
        }
        "month" => vec!["2026-13", "+262142-01", "0000-00", "1899-12", "mars"],
        "days" => vec!["-1", "douze", "1e99", "99999999999", "4294967295", "1.5", ""],
        "kind" | "food_group" | "storage" | "status" => vec!["not_a_value", "STARCHES", ""],
        _ => vec![],
    }
    .into_iter()
    .map(str::to_owned)
    .collect();
    out.extend(["a\u{0}b".to_owned(), "x\u{202E}y".to_owned(), "\u{1b}".to_owned()]);
    out
}

/// The base request's path, with the world's ids.
fn base_path(op: &Operation, world: &World) -> String {
    let mut path = op.path.clone();
    for name in op.path_params() {
        let value = world.known.get(name.as_str()).and_then(Value::as_str).unwrap_or("x1");
        path = path.replace(&format!("{{{name}}}"), &encode(value));
    }
    path
}

fn make_case(rng: &mut StdRng, builder: &mut Builder<'_>, op: &Operation, n: usize) -> Case {
    let world = builder.world;
    let (mut body, fields) = builder.body(rng, op);
    let mut path = base_path(op, world);
    // Every declared parameter the world knows a value for, by a coin toss; the required
    // ones (a day, a number of days) always.
    let mut query: Vec<(String, String)> = Vec::new();
    if !op.command {
        for p in &op.params {
            let Some(v) = world.known.get(p.as_str()).and_then(Value::as_str) else { continue };
            if matches!(p.as_str(), "date" | "days") || rng.random_bool(0.5) {
                query.push((p.clone(), v.to_owned()));
            }
        }
    }
    let mut headers: Vec<(String, Vec<u8>)> = vec![("content-type".into(), b"application/json".to_vec())];
    let key = format!("fuzz-{n}");
    let mut raw_body: Option<Vec<u8>> = None;
    let path_params = op.path_params();
    let token = if rng.random_bool(0.8) { 0 } else { 1 };

    // Which class of damage: commands have bodies and headers, queries parameters.
    let mut classes: Vec<&'static str> = vec!["path"];
    if path_params.is_empty() {
        classes.clear();
    }
    if op.command {
        classes.extend(["body", "field", "field", "field", "field", "header"]);
        if fields.iter().any(|f| f.required) {
            classes.push("missing");
        }
    } else {
        classes.extend(["query", "query"]);
    }
    let class = classes[rng.random_range(0..classes.len())];
    let what = match class {
        "path" => {
            let name = &path_params[rng.random_range(0..path_params.len())];
            let bad = bad_segments(name);
            let value = &bad[rng.random_range(0..bad.len())];
            let value_encoded = world.known.get(name.as_str()).and_then(Value::as_str).unwrap_or("x1");
            path = base_path(op, world).replacen(&encode(value_encoded), value, 1);
            format!("path {name} = {}", shorten(value))
        }
        "body" => {
            let choice = rng.random_range(0..10);
            let (bytes, what): (Vec<u8>, String) = match choice {
                0 => (b"[1, 2, 3]".to_vec(), "body is an array".into()),
                1 => (b"\"text\"".to_vec(), "body is a string".into()),
                2 => (b"null".to_vec(), "body is null".into()),
                3 => (b"{\"a\": ".to_vec(), "truncated JSON".into()),
                4 => (nested(10_000).into_bytes(), "10,000 nested arrays".into()),
                5 => {
                    let mut b = serialise(&body);
                    b.truncate(b.len().saturating_sub(1));
                    b.extend_from_slice(b", \"deep\": ");
                    b.extend_from_slice(nested(10_000).as_bytes());
                    b.push(b'}');
                    (b, "a field nesting 10,000 arrays".into())
                }
                6 => {
                    let mut b = serialise(&body);
                    b.truncate(b.len().saturating_sub(1));
                    let filler = "z".repeat(1024 * 1024 + 16);
                    b.extend_from_slice(format!(", \"filler\": \"{filler}\"}}").as_bytes());
                    (b, "a body over 1 MiB".into())
                }
                8 if !fields.is_empty() => {
                    // Under the limit, but an error message quoting it (escaped twice over)
                    // would not be: 300,000 quotes where the field's value goes.
                    let f = &fields[rng.random_range(0..fields.len())];
                    set_at(&mut body, &f.path, Some(json!("\"".repeat(300_000))));
                    (serialise(&body), format!("{} = 300,000 quotes", dotted(&f.path)))
                }
                7 => {
                    // Under the limit, but not once wrapped for NATS: one very long text.
                    let room = 1024 * 1024 - serialise(&body).len() - 64;
                    body["name"] = json!("n".repeat(room));
                    (serialise(&body), "a body of almost 1 MiB (one long text)".into())
                }
                _ => {
                    let mut b = b"{\"name\": \"a".to_vec();
                    b.extend_from_slice(&[0xff, 0xfe]);
                    b.extend_from_slice(b"\"}");
                    (b, "invalid UTF-8".into())
                }
            };
            raw_body = Some(bytes);
            what
        }
        "missing" => {
            let required: Vec<&Field> = fields.iter().filter(|f| f.required).collect();
            let f = required[rng.random_range(0..required.len())];
            set_at(&mut body, &f.path, None);
            format!("required {} left out", f.name)
        }
        "field" => {
            if fields.is_empty() || rng.random_bool(0.1) {
                body["fuzz_unknown"] = json!(1);
                "an unknown field".into()
            } else {
                let f = &fields[rng.random_range(0..fields.len())];
                let bad = bad_values(f.kind, &f.choices);
                let value = bad[rng.random_range(0..bad.len())].clone();
                let shown = shorten(&value.to_string());
                set_at(&mut body, &f.path, Some(value));
                format!("{} ({:?}) = {shown}", dotted(&f.path), f.kind)
            }
        }
        "header" => {
            let (name, value, what): (&str, Vec<u8>, &str) = match rng.random_range(0..10) {
                0 => ("x-occurred-at", b"hier".to_vec(), "X-Occurred-At unreadable"),
                1 => ("x-occurred-at", b"2026-02-30T10:00:00Z".to_vec(), "X-Occurred-At impossible"),
                2 => ("x-occurred-at", b"+262142-12-31T00:00:00Z".to_vec(), "X-Occurred-At year 262142"),
                3 => ("x-occurred-at", b"0001-01-01T00:00:00Z".to_vec(), "X-Occurred-At year 1"),
                4 => ("x-occurred-at", b"9999-12-31T23:59:59Z".to_vec(), "X-Occurred-At year 9999"),
                5 => ("x-occurred-at", b"2026-11-23T10:00:00".to_vec(), "X-Occurred-At without offset"),
                6 => ("idempotency-key", b"".to_vec(), "Idempotency-Key empty"),
                7 => ("idempotency-key", b"a key".to_vec(), "Idempotency-Key with a space"),
                8 => ("idempotency-key", "k".repeat(129).into_bytes(), "Idempotency-Key of 129 characters"),
                _ => ("idempotency-key", "clé-\u{e9}".as_bytes().to_vec(), "Idempotency-Key not ASCII"),
            };
            headers.push((name.to_owned(), value));
            what.to_owned()
        }
        _ => {
            // A query: one parameter broken.
            let declared = op.params.clone();
            let pick = rng.random_range(0..10);
            if pick == 0 || declared.is_empty() && pick < 5 {
                query.push(("fuzz_unknown".into(), "1".into()));
                "an unknown parameter".into()
            } else if pick == 1 && !declared.is_empty() {
                let p = declared[rng.random_range(0..declared.len())].clone();
                let v = world.known.get(p.as_str()).and_then(Value::as_str).unwrap_or("x1").to_owned();
                query.retain(|(k, _)| *k != p);
                query.push((p.clone(), v.clone()));
                query.push((p.clone(), v));
                format!("{p} given twice")
            } else if pick == 2 || declared.is_empty() {
                let v =
                    ["abc", "x:y", "-1", "donations:18446744073709551616", "99999999999", ":"][rng.random_range(0..6)];
                query.push(("min_seq".into(), v.into()));
                format!("min_seq = {v}")
            } else {
                let p = declared[rng.random_range(0..declared.len())].clone();
                let bad = bad_params(&p);
                let v = bad[rng.random_range(0..bad.len())].clone();
                query.retain(|(k, _)| *k != p);
                query.push((p.clone(), v.clone()));
                format!("{p} = {}", shorten(&v))
            }
        }
    };
    if op.command && !headers.iter().any(|(k, _)| k == "idempotency-key") {
        headers.push(("idempotency-key".into(), key.into_bytes()));
    }
    let target = match query.is_empty() {
        true => path,
        false => {
            let q: Vec<String> = query.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
            format!("{path}?{}", q.join("&"))
        }
    };
    let body = match op.command {
        true => Some(raw_body.unwrap_or_else(|| serialise(&body))),
        false => None,
    };
    Case { class, what, op: op.name(), method: op.method.clone(), target, headers, body, token }
}

fn dotted(path: &[PathStep]) -> String {
    path.iter()
        .map(|s| match s {
            PathStep::Key(k) => k.clone(),
            PathStep::Index(i) => i.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}… ({} chars)", s.chars().take(24).collect::<String>(), s.chars().count())
    } else {
        format!("{s:?}")
    }
}

/// Cases that once failed, kept as they were found: what the answer was then, and the case.
fn regressions(world: &World) -> Vec<Case> {
    use reqwest::Method;
    let route = world.known["route_id"].as_str().unwrap_or_default();
    let commands: Vec<(&str, Method, String, Value, &str)> = vec![
        (
            "assess_household",
            Method::POST,
            "/api/households/h1/assessments".into(),
            json!({"resources_cents": 10u64.pow(17), "charges_cents": 0}),
            "10^17 cents of resources (once a negative reste à vivre, and eligible)",
        ),
        (
            "assess_household",
            Method::POST,
            "/api/households/h1/assessments".into(),
            json!({"resources_cents": 90000, "charges_cents": 70000, "assessed_on": "+262142-12-31"}),
            "an assessment dated +262142-12-31 (once a panic, and 503 after 10 s)",
        ),
        (
            "record_donation",
            Method::POST,
            "/api/donations".into(),
            json!({"donor_id": "lidl", "site_id": "gerland", "lines": [{"product_id": "pasta",
                "quantity": u32::MAX, "weight_g": u64::MAX, "date": world.tomorrow}]}),
            "a donation line of u32::MAX units weighing u64::MAX grams (once accepted; the statements' sums \
             then panicked in the projection)",
        ),
        (
            "record_donation",
            Method::POST,
            "/api/donations".into(),
            json!({"donor_id": "lidl", "site_id": "gerland", "lines": [{"product_id": "pasta",
                "quantity": 1, "weight_g": 1000, "date": world.tomorrow, "declared_value_cents": 10u64.pow(17)}]}),
            "a declared value of 10^17 cents (once accepted)",
        ),
        (
            "reserve_stock",
            Method::POST,
            "/api/reservations".into(),
            json!({"site_id": "gerland", "partial": true, "lines": [{"product_id": "pasta", "quantity": u32::MAX}]}),
            "a partial reservation of u32::MAX units (once accepted)",
        ),
        (
            "adjust_lot",
            Method::POST,
            "/api/lots/d1-l1/adjustments".into(),
            json!({"delta": i64::MIN, "reason": "correction"}),
            "an adjustment of i64::MIN units (its absolute value overflows)",
        ),
        (
            "register_vehicle",
            Method::POST,
            "/api/vehicles".into(),
            json!({"name": "Camion", "capacity_kg": u32::MAX, "home_site": "gerland"}),
            "a vehicle carrying u32::MAX kg (once accepted)",
        ),
        (
            "register_vehicle",
            Method::POST,
            "/api/vehicles".into(),
            json!({"name": "Camion", "capacity_kg": 500, "home_site": "a.b"}),
            "a vehicle based at site a.b (once accepted)",
        ),
        (
            "register_driver",
            Method::POST,
            "/api/drivers".into(),
            json!({"name": "Paul", "vehicles": ["*"], "max_shift_minutes": 480}),
            "a driver of vehicle * (once accepted)",
        ),
        (
            "retire_vehicle",
            Method::POST,
            "/api/vehicles/v1/retire".into(),
            json!({"reason": long_text()}),
            "a reason of 10,000 characters (once accepted)",
        ),
        (
            "cancel_job",
            Method::POST,
            "/api/jobs/j1/cancel".into(),
            json!({"reason": long_text()}),
            "a reason of 10,000 characters (once accepted)",
        ),
        (
            "fail_stop",
            Method::POST,
            format!("/api/routes/{route}/stops/j1/fail"),
            json!({"reason": long_text()}),
            "a reason of 10,000 characters (once accepted)",
        ),
        (
            "add_relay_point",
            Method::POST,
            "/api/associations/asso-a/relay-points".into(),
            json!({"name": "Local", "commune": "Lyon", "address": long_text()}),
            "an address of 10,000 characters (once accepted)",
        ),
        (
            "ship_reservation",
            Method::POST,
            "/api/reservations/r1/ship".into(),
            json!({"destination": {"kind": "parcel", "reference": "x", "association_id": "*"}}),
            "a destination naming association * (once accepted)",
        ),
        (
            "set_collections",
            Method::PUT,
            "/api/donors/lidl/collections".into(),
            json!({"collections": [{"day": "Tue", "opens": "09:00:00", "closes": "11:00:00", "kg": 50,
                "site_id": "a.b"}]}),
            "a collection at site a.b (once accepted)",
        ),
        (
            "issue_recall",
            Method::POST,
            "/api/recalls".into(),
            json!({"product_id": "a/b", "date_from": world.today, "reason": "x"}),
            "a recall of product a/b (once accepted)",
        ),
        (
            "set_relay_opening",
            Method::PUT,
            "/api/associations/asso-a/relay-points/a.b/opening".into(),
            json!({"opening": []}),
            "a relay id a.b (once the code invalid_relay point_id, with a space)",
        ),
        (
            "move_lot",
            Method::POST,
            "/api/lots/d1-l1/move".into(),
            json!({"zone": "\"".repeat(300_000)}),
            "300,000 quotes (an error quoting them did not fit in a NATS message: a hang)",
        ),
    ];
    let queries: Vec<(&str, String, &str)> = vec![
        ("list_lots", "/api/lots?site_id=gerland&site_id=givors".into(), "a filter given twice (once: the last won)"),
        ("stock_summary", format!("/api/stock?as_of={}", encode("+262142-12-31")), "stock as of the year 262142"),
        ("fair_share", "/api/fair-share?month=mars".into(), "a month that is no month (once: 200 [])"),
        ("distribution_report", "/api/reports?month=2026-13".into(), "month 13 (once: 200 [])"),
        ("expiring_lots", "/api/stock/expiring?days=4294967295".into(), "u32::MAX days ahead (once: clamped, 200)"),
    ];
    let mut cases = Vec::new();
    for (i, (op, method, target, body, what)) in commands.into_iter().enumerate() {
        cases.push(Case {
            class: "regression",
            what: what.to_owned(),
            op: op.to_owned(),
            method,
            target,
            headers: vec![
                ("content-type".into(), b"application/json".to_vec()),
                ("idempotency-key".into(), format!("regression-{i}").into_bytes()),
            ],
            body: Some(serialise(&body)),
            token: 0,
        });
    }
    for (op, target, what) in queries {
        cases.push(Case {
            class: "regression",
            what: what.to_owned(),
            op: op.to_owned(),
            method: Method::GET,
            target,
            headers: vec![],
            body: None,
            token: 0,
        });
    }
    cases
}

struct Outcome {
    failures: Vec<String>,
    /// Cases by kind of operation and what was broken.
    tried: BTreeMap<String, usize>,
    /// Answers by status and code.
    codes: BTreeMap<String, usize>,
}

/// What came back: the code (if any), and what is wrong with the answer.
async fn send(http: &reqwest::Client, base: &str, bearer: &[String; 2], case: &Case) -> (String, Option<String>) {
    let (code, problem) = answer(http, base, bearer, case).await;
    if std::env::var_os("FUZZ_VERBOSE").is_some() {
        eprintln!(
            "{} {} [{}] → {code} {}",
            case.method,
            shorten_target(&case.target),
            case.what,
            problem.as_deref().unwrap_or("")
        );
    }
    (code, problem)
}

async fn answer(http: &reqwest::Client, base: &str, bearer: &[String; 2], case: &Case) -> (String, Option<String>) {
    let mut req = http
        .request(case.method.clone(), format!("{base}{}", case.target))
        .timeout(PER_REQUEST)
        .header("authorization", &bearer[case.token]);
    for (k, v) in &case.headers {
        let value = match HeaderValue::from_bytes(v) {
            Ok(v) => v,
            Err(_) => return (String::new(), Some(format!("header {k} cannot be sent: {v:?}"))),
        };
        req = req.header(HeaderName::from_bytes(k.as_bytes()).unwrap(), value);
    }
    if let Some(body) = &case.body {
        req = req.body(body.clone());
    }
    let res = match req.send().await {
        Ok(res) => res,
        Err(e) if e.is_timeout() => return ("hang".into(), Some(format!("no answer within {PER_REQUEST:?} (a hang)"))),
        Err(e) => return ("failed".into(), Some(format!("the request failed: {e}"))),
    };
    let status = res.status();
    let text = match tokio::time::timeout(PER_REQUEST, res.text()).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return (status.to_string(), Some(format!("{status}: the answer could not be read: {e}"))),
        Err(_) => return (status.to_string(), Some(format!("{status}: the answer's body never ended (a hang)"))),
    };
    let code = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_owned));
    let stable = code.as_deref().is_some_and(|c| {
        !c.is_empty()
            && c.len() <= 64
            && c.starts_with(|ch: char| ch.is_ascii_lowercase())
            && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    });
    let shown: String = text.chars().take(200).collect();
    let seen = format!("{} {}", status.as_u16(), code.as_deref().unwrap_or("-"));
    if !status.is_client_error() {
        (seen, Some(format!("answered {} {shown}", status.as_u16())))
    } else if !stable {
        (seen, Some(format!("answered {} without a stable snake_case code: {shown}", status.as_u16())))
    } else {
        (seen, None)
    }
}

async fn run(
    http: &reqwest::Client,
    base: &str,
    bearer: &[String; 2],
    cases: Vec<Case>,
    seed: u64,
    outcome: &mut Outcome,
) {
    let results: Vec<(Case, String, Option<String>)> = futures::stream::iter(cases)
        .map(|case| async move {
            let (code, problem) = send(http, base, bearer, &case).await;
            (case, code, problem)
        })
        .buffered(IN_FLIGHT)
        .collect()
        .await;
    for (case, code, problem) in results {
        let kind = if case.body.is_some() { "command" } else { "query" };
        *outcome.tried.entry(format!("{kind} / {}", case.class)).or_default() += 1;
        *outcome.codes.entry(code).or_default() += 1;
        if let Some(problem) = problem {
            outcome.failures.push(format!(
                "[seed {seed}] {} {} — {}: {} ({}){}",
                case.method,
                shorten_target(&case.target),
                case.op,
                problem,
                case.what,
                if case.token == 1 { " as association asso-a" } else { "" }
            ));
        }
    }
}

fn shorten_target(t: &str) -> String {
    if t.len() > 120 {
        format!("{}…", &t[..t.char_indices().take_while(|(i, _)| *i < 100).last().map_or(0, |(i, c)| i + c.len_utf8())])
    } else {
        t.to_owned()
    }
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut ops = Vec::new();
    for (path, methods) in doc["paths"].as_object().expect("paths") {
        if !path.starts_with("/api/") || path == "/api/openapi.json" || path == "/api/me" || path == "/api/replays" {
            continue;
        }
        for (method, op) in methods.as_object().unwrap() {
            let params: Vec<String> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "query" && p["name"] != "min_seq")
                        .filter_map(|p| p["name"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let body = op["requestBody"]["content"]["application/json"]["schema"].clone();
            ops.push(Operation {
                method: method.to_uppercase().parse().unwrap(),
                path: path.clone(),
                command: !body.is_null(),
                creates: op["responses"].get("201").is_some(),
                params,
                body: (!body.is_null()).then_some(body),
            });
        }
    }
    ops.sort_by_key(Operation::name);
    ops
}

/// The world the cases aim at: after it, `world` names the route it planned.
async fn set_up(api: &Api, world: &mut World) {
    let (today, tomorrow) = (world.today.clone(), world.tomorrow.clone());
    let in_days = |n: i64| in_days_at(&world.calendar, n);
    let ok = |(status, body): (StatusCode, Value), what: &str| {
        assert!(status.is_success(), "set-up {what}: {status} {body}");
        body
    };
    for (id, lat) in [("gerland", 45.73), ("givors", 45.59)] {
        let site = json!({"site_id": id, "name": id, "position": {"lat": lat, "lon": 4.83}, "zones": [
            {"code": "A1", "storage": "ambient"}, {"code": "F1", "storage": "chilled"}]});
        ok(api.post("/api/sites", &format!("site-{id}"), site).await, "site");
    }
    let donor = json!({"donor_id": "lidl", "kind": "retailer", "name": "Lidl", "address": "1 rue Lidl",
        "position": {"lat": 45.76, "lon": 4.86}});
    ok(api.post("/api/donors", "donor", donor).await, "donor");
    for (id, group, storage, kind) in [("pasta", "starches", "ambient", "ddm"), ("yoghurt", "dairy", "chilled", "dlc")]
    {
        let body = json!({"product_id": id, "name": id, "food_group": group, "storage": storage, "date_kind": kind});
        ok(api.post("/api/products", &format!("product-{id}"), body).await, "product");
    }
    let biscuits = json!({"gtin": "3760012345021", "name": "Biscuits", "food_group": "sugary_salty",
        "storage": "ambient", "date_kind": "ddm"});
    ok(api.post("/api/products", "product-biscuits", biscuits).await, "gtin product");
    let lines = json!([
        {"product_id": "pasta", "quantity": 400, "weight_g": 200000, "date": in_days(200), "lot_number": "P1"},
        {"product_id": "yoghurt", "quantity": 60, "weight_g": 7200, "date": in_days(12), "temperature_c": 3.0}]);
    let donation = json!({"donation_id": "d1", "donor_id": "lidl", "site_id": "gerland", "lines": lines});
    ok(api.post("/api/donations", "donation", donation).await, "donation");
    // The lots come from the donation through a saga.
    support::wait_for(api, "/api/lots/d1-l2", |lot| lot["on_hand"] == 60).await;
    ok(api.post("/api/lots/d1-l1/move", "move", json!({"zone": "A1"})).await, "put away");
    let reserve = json!({"reservation_id": "r1", "site_id": "gerland", "purpose": {"kind": "parcel"},
        "lines": [{"product_id": "pasta", "quantity": 1}]});
    ok(api.post("/api/reservations", "reservation", reserve).await, "reservation");
    let recall = json!({"recall_id": "rc1", "product_id": "yoghurt", "date_from": today, "date_to": in_days(30),
        "reason": "contrôle"});
    ok(api.post("/api/recalls", "recall", recall).await, "recall");

    let association = json!({"association_id": "asso-a", "name": "Association A", "commune": "Lyon"});
    ok(api.post("/api/associations", "association", association).await, "association");
    let relay = json!({"relay_id": "rp-a", "name": "Salle", "address": "3 place", "commune": "Lyon",
        "cold_storage": true, "position": {"lat": 45.75, "lon": 4.88}, "opening": world.known["opening"]});
    ok(api.post("/api/associations/asso-a/relay-points", "relay", relay).await, "relay point");
    let household = json!({"household_id": "h1", "association_id": "asso-a", "relay_point_id": "rp-a",
        "composition": {"adults": 2, "teens": 0, "children": 1, "infants": 0}, "diet": {}, "consent": true,
        "personal": {"first_name": "Awa", "last_name": "Diallo", "birth_date": "1980-05-05"}});
    ok(api.post("/api/households", "household", household).await, "household");
    let assessment = json!({"resources_cents": 90000, "charges_cents": 70000});
    ok(api.post("/api/households/h1/assessments", "assessment", assessment).await, "assessment");
    ok(api.post("/api/parcels", "parcel", json!({"household_id": "h1", "date": tomorrow})).await, "parcel");

    let vehicle = json!({"vehicle_id": "v1", "name": "Kangoo", "capacity_kg": 600, "chilled_capacity_kg": 200,
        "home_site": "gerland"});
    ok(api.post("/api/vehicles", "vehicle", vehicle).await, "vehicle");
    let driver = json!({"driver_id": "monique", "name": "Monique", "vehicles": ["v1"], "max_shift_minutes": 480});
    ok(api.post("/api/drivers", "driver", driver).await, "driver");
    let free = json!({"date": today, "slots": [{"from": "00:00:00", "to": "23:59:00"}]});
    ok(api.put("/api/drivers/monique/availability", "free", free).await, "availability");
    let job = json!({"job_id": "j1", "date": today, "site_id": "gerland", "kind": "pickup", "party_id": "lidl",
        "kg": 50, "chilled_kg": 0, "opens": "00:00:00", "closes": "23:59:00", "service_minutes": 10});
    ok(api.post("/api/jobs", "job", job).await, "job");
    let plan =
        ok(api.post("/api/plans", "plan", json!({"site_id": "gerland", "date": today, "seconds": 0.5})).await, "plan");
    let plan = support::wait_for(api, &format!("/api/plans/gerland/{today}?min_seq={}", min_seq(&plan)), |p| {
        p["routes"].as_array().is_some_and(|r| !r.is_empty())
    })
    .await;
    let route = plan["routes"][0]["route_id"].as_str().expect("a route").to_owned();
    world.known.insert("route_id", json!(route));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_4xx_with_a_stable_code_and_write_nothing() {
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SEED);
    let budget: usize = std::env::var("FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_CASES);
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    // Nothing but the cases may write while the streams are compared.
    let quiet = [
        ("FOODAID__JOBS__EXPIRY_INTERVAL_MINUTES", "0"),
        ("FOODAID__JOBS__COLLECTION_INTERVAL_MINUTES", "0"),
        ("FOODAID__JOBS__PICKUPS_INTERVAL_MINUTES", "0"),
        ("FOODAID__JOBS__RESERVATIONS_INTERVAL_SECS", "0"),
    ];
    // Today's route is driven: a time zone where it is mid-morning, whatever the hour.
    let (zone, calendar) = morning_zone();
    let quiet = [quiet.as_slice(), &[("FOODAID__TIME_ZONE", zone.as_str())]].concat();
    let foodaid = Foodaid::up_with(dir.path(), Some(&url), &[], &quiet);
    let admin = token(dir.path(), Some(&url), &["--role", "admin"]);
    let association = token(dir.path(), Some(&url), &["--role", "association", "--scope", "asso-a"]);
    let bearer = [format!("Bearer {admin}"), format!("Bearer {association}")];
    let api = Api::new(&foodaid.http, &admin);
    let mut world = World::new(calendar);
    set_up(&api, &mut world).await;
    let js = async_nats::jetstream::new(nats.client().await);
    let before = settled(&js).await;

    let (status, doc) = api.get("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let ops = operations(&doc);
    assert!(ops.len() > 50, "the document lists the operations: {}", ops.len());
    let components = doc["components"]["schemas"].as_object().expect("schemas").clone();
    let mut builder = Builder { schemas: Schemas { components: &components }, world: &world, fresh: 0 };
    let mut rng = StdRng::seed_from_u64(seed);
    // Every operation in turn, so that a short run still covers them all.
    let cases: Vec<Case> = (0..budget).map(|n| make_case(&mut rng, &mut builder, &ops[n % ops.len()], n)).collect();

    let http = reqwest::Client::new();
    let mut outcome = Outcome { failures: Vec::new(), tried: BTreeMap::new(), codes: BTreeMap::new() };
    run(&http, &foodaid.http, &bearer, regressions(&world), seed, &mut outcome).await;
    run(&http, &foodaid.http, &bearer, cases, seed, &mut outcome).await;

    let after = settled(&js).await;
    let grown: Vec<String> = after
        .iter()
        .filter(|(s, seq)| before.get(*s) != Some(seq))
        .map(|(s, seq)| format!("{s} {} → {seq}", before.get(s).copied().unwrap_or(0)))
        .collect();
    let total: usize = outcome.tried.values().sum();
    eprintln!("fuzz: seed {seed}, {} operations, {total} cases", ops.len());
    for (class, n) in &outcome.tried {
        eprintln!("  {class:<24} {n:>6}");
    }
    let codes: Vec<String> = outcome.codes.iter().map(|(c, n)| format!("{c} ×{n}")).collect();
    eprintln!("  answers: {}", codes.join(", "));
    let mut failures = outcome.failures;
    if !grown.is_empty() {
        failures.push(format!("streams grew: {}", grown.join(", ")));
    }
    assert!(failures.is_empty(), "{} failure(s) of {total} cases:\n{}", failures.len(), failures.join("\n"));
    assert!(foodaid.terminate().success());
}
