//! The authorization matrix: every operation of the gateway's table × every kind of caller, each
//! answer compared with the one its `Access` declaration (next to the operation, in
//! `gateway::api`) calls for. All the cells that differ are listed at once.
//!
//! Callers: no token, a malformed one, an unknown one, a known id with a wrong secret, a revoked
//! administrator's; an administrator, the warehouse, association A (own scope) and association B
//! (another's), driver monique (own) and driver paul (another's). Every request aims at A's or
//! monique's things, so B and paul are the "another's scope" cells.
//!
//! What each cell must answer, from the declaration alone:
//! - no valid token: 401 `unauthenticated`;
//! - a role the operation does not grant: 403 `forbidden`;
//! - another's target (`Grant::Own`): the declared refusal (`not_yours`);
//! - granted: a command is carried out (2xx); a query answers 200. A granted association or
//!   driver (`Own`, `OwnRows`) reads only its own rows: every `association_id` (`driver_id`) in
//!   the answer is its own, and the other's id appears nowhere in it. A query that takes the
//!   scope as a parameter is asked again without it by both of that role's callers: each gets its
//!   own rows only.
//! - A refusal never names the other's scope (the owner of what was aimed at), and a command
//!   refused, whatever the reason, writes nothing: every stream's last sequence is the same
//!   before and after the refused cells of an operation (`settled`).
//!
//! How granted cells prove the gate let them through: they are real commands on real targets
//! and must succeed. The checks a scope needs read the target (a household's association, a
//! route's driver), so a half-built request would prove nothing about them. The steps run in
//! the order of a collective's day, as in `tests/retries.rs`, and the refused cells of each step
//! go first, on the very request the first granted caller then sends successfully — so a refusal
//! is about who asks, not about the request. Where a second success needs a fresh target (a
//! reservation released once, a lot's hold lifted once), the case gives the n-th granted caller
//! the n-th target; each request may depend on the caller's role, never on its scope (B sends
//! exactly what A sends). A step naming an operation the table lacks, an operation without a
//! declaration or without a step, or a request that cannot be built (a path parameter left, a
//! query parameter the table does not declare) fails the test.
//!
//! The background jobs (expiry, deadlines, pickups, stale reservations) are turned off, so that
//! nothing but the cells writes while the streams are compared.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use gateway::api::{operations, Access, Grant, Op, OpKind};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{in_days_at, min_seq, morning_zone, run, settled, token, Foodaid};
use testkit::TestNats;

/// Who sends a cell's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    NoToken,
    Malformed,
    Unknown,
    WrongSecret,
    Revoked,
    Admin,
    Warehouse,
    AssociationOwn,
    AssociationOther,
    DriverOwn,
    DriverOther,
}

const EVERYONE: [Who; 11] = [
    Who::NoToken,
    Who::Malformed,
    Who::Unknown,
    Who::WrongSecret,
    Who::Revoked,
    Who::Admin,
    Who::Warehouse,
    Who::AssociationOwn,
    Who::AssociationOther,
    Who::DriverOwn,
    Who::DriverOther,
];

/// The role a request is built for: B sends what A sends, paul what monique sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Admin,
    Warehouse,
    Association,
    Driver,
}

const A: &str = "asso-a";
const B: &str = "asso-b";
const MONIQUE: &str = "monique";
const PAUL: &str = "paul";

impl Who {
    fn role(self) -> Role {
        match self {
            Who::Warehouse => Role::Warehouse,
            Who::AssociationOwn | Who::AssociationOther => Role::Association,
            Who::DriverOwn | Who::DriverOther => Role::Driver,
            // A caller without a valid token sends an administrator's request.
            _ => Role::Admin,
        }
    }

    /// The field that carries a scope in answers, and this caller's own value of it.
    fn scope(self) -> Option<(&'static str, &'static str)> {
        match self {
            Who::AssociationOwn => Some(("association_id", A)),
            Who::AssociationOther => Some(("association_id", B)),
            Who::DriverOwn => Some(("driver_id", MONIQUE)),
            Who::DriverOther => Some(("driver_id", PAUL)),
            _ => None,
        }
    }

    /// The other caller of the same scoped role.
    fn peer(self) -> Who {
        match self {
            Who::AssociationOwn => Who::AssociationOther,
            Who::AssociationOther => Who::AssociationOwn,
            Who::DriverOwn => Who::DriverOther,
            Who::DriverOther => Who::DriverOwn,
            other => other,
        }
    }

    /// The scope of the other caller of the same role: it must never reach this one.
    fn rival(self) -> Option<&'static str> {
        match self {
            Who::AssociationOwn => Some(B),
            Who::AssociationOther => Some(A),
            Who::DriverOwn => Some(PAUL),
            Who::DriverOther => Some(MONIQUE),
            _ => None,
        }
    }

    fn grant(self, access: &Access) -> Option<Grant> {
        match self.role() {
            Role::Association => Some(access.association),
            Role::Driver => Some(access.driver),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Refused(StatusCode, &'static str),
    /// Carried out; `true`: it reads only the caller's own rows.
    Granted(bool),
}

/// The answer `access` calls for when `who` sends its request.
fn expected(access: &Access, who: Who) -> Expect {
    let forbidden = Expect::Refused(StatusCode::FORBIDDEN, "forbidden");
    let other = matches!(who, Who::AssociationOther | Who::DriverOther);
    match who {
        Who::NoToken | Who::Malformed | Who::Unknown | Who::WrongSecret | Who::Revoked => {
            Expect::Refused(StatusCode::UNAUTHORIZED, "unauthenticated")
        }
        Who::Admin => Expect::Granted(false),
        Who::Warehouse if access.warehouse => Expect::Granted(false),
        Who::Warehouse => forbidden,
        _ => match who.grant(access).expect("a scoped caller") {
            Grant::No => forbidden,
            Grant::All => Expect::Granted(false),
            Grant::OwnRows => Expect::Granted(true),
            Grant::Own if other => Expect::Refused(access.not_yours.status(), access.not_yours.code()),
            Grant::Own => Expect::Granted(true),
        },
    }
}

/// One request of a case: path parameters, query parameters, body.
#[derive(Debug, Clone, Default)]
struct Call {
    path: Vec<(&'static str, String)>,
    query: Vec<(&'static str, String)>,
    body: Option<Value>,
}

fn call() -> Call {
    Call::default()
}

impl Call {
    fn at(mut self, name: &'static str, value: impl Into<String>) -> Call {
        self.path.push((name, value.into()));
        self
    }

    fn q(mut self, name: &'static str, value: impl Into<String>) -> Call {
        self.query.push((name, value.into()));
        self
    }

    fn body(mut self, body: Value) -> Call {
        self.body = Some(body);
        self
    }
}

/// A request ready to send.
struct Request {
    method: reqwest::Method,
    path: String,
    query: Vec<(&'static str, String)>,
    body: Option<Value>,
}

/// The request `call` makes of `op`, or why it cannot be built.
fn request(op: &Op, call: &Call) -> Result<Request, String> {
    let mut path = op.path.to_owned();
    for (name, value) in &call.path {
        let slot = format!("{{{name}}}");
        if !path.contains(&slot) {
            return Err(format!("{} has no path parameter {name}", op.path));
        }
        path = path.replace(&slot, value);
    }
    if path.contains('{') {
        return Err(format!("a path parameter of {} has no value", op.path));
    }
    let declared = |name: &str| name == "min_seq" || op.params.iter().any(|(p, _)| *p == name);
    if let Some((name, _)) = call.query.iter().find(|(name, _)| !declared(name)) {
        return Err(format!("{name} is not a declared query parameter of {}", op.path));
    }
    let body = match op.kind {
        OpKind::Command => Some(call.body.clone().unwrap_or_else(|| json!({}))),
        OpKind::Query if call.body.is_some() => return Err("a query has no body".to_owned()),
        OpKind::Query => None,
    };
    let method = reqwest::Method::from_bytes(op.method.as_str().as_bytes()).expect("an HTTP method");
    Ok(Request { method, path, query: call.query.clone(), body })
}

struct Matrix {
    ops: Vec<Op>,
    base: String,
    http: reqwest::Client,
    /// The Authorization header of each caller (none for `NoToken`).
    bearer: BTreeMap<Who, String>,
    js: async_nats::jetstream::Context,
    /// Method and path of every operation checked.
    checked: BTreeSet<(String, &'static str)>,
    failures: Vec<String>,
    cells: usize,
    keys: usize,
}

impl Matrix {
    /// Sends `request` as `who`: status and the answer's text.
    async fn send(&mut self, who: Who, request: &Request) -> (StatusCode, String) {
        let query: Vec<String> = request.query.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
        let url = match query.is_empty() {
            true => format!("{}{}", self.base, request.path),
            false => format!("{}{}?{}", self.base, request.path, query.join("&")),
        };
        let mut req = self.http.request(request.method.clone(), url).timeout(Duration::from_secs(30));
        if let Some(bearer) = self.bearer.get(&who) {
            req = req.header("authorization", bearer);
        }
        if let Some(body) = &request.body {
            self.keys += 1;
            req = req.header("idempotency-key", format!("access-{}", self.keys)).json(body);
        }
        let res = req.send().await.expect("the gateway answers");
        let status = res.status();
        (status, res.text().await.unwrap_or_default())
    }

    /// Sends a step of the set-up (not a cell): it must succeed.
    async fn setup(&mut self, who: Who, op: &str, call: Call) -> Value {
        let found = self.ops.iter().find(|o| o.name == op).unwrap_or_else(|| panic!("no operation {op} in the table"));
        let req = request(found, &call).unwrap_or_else(|e| panic!("set-up {op}: {e}"));
        let (status, text) = self.send(who, &req).await;
        assert!(status.is_success(), "set-up {op} {}: {status} {text}", req.path);
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Every cell of the operations named `name` (a statement as JSON, CSV or HTML shares its
    /// name): the refused ones first (they write nothing), then the granted ones, the n-th
    /// granted caller with `case(role, n)`.
    async fn check(&mut self, name: &'static str, case: impl Fn(Role, usize) -> Call) {
        let found: Vec<Op> = self.ops.iter().filter(|o| o.name == name).cloned().collect();
        if found.is_empty() {
            self.failures.push(format!("{name}: no such operation in the table"));
        }
        for op in found {
            self.check_one(op, &case).await;
        }
    }

    async fn check_one(&mut self, found: Op, case: &impl Fn(Role, usize) -> Call) {
        let op = found.name;
        self.checked.insert((found.method.to_string(), found.path));
        let Some(access) = found.access else {
            self.failures.push(format!("{op} {}: no access declaration", found.path));
            return;
        };
        let (refused, granted): (Vec<Who>, Vec<Who>) =
            EVERYONE.into_iter().partition(|who| matches!(expected(&access, *who), Expect::Refused(..)));

        let before = match found.kind {
            OpKind::Command => Some(settled(&self.js).await),
            OpKind::Query => None,
        };
        for who in refused {
            self.cell(&found, &access, who, &case(who.role(), 0)).await;
        }
        if let Some(before) = before {
            let after = settled(&self.js).await;
            if after != before {
                let grown: Vec<String> = after
                    .iter()
                    .filter(|(s, seq)| before.get(*s) != Some(seq))
                    .map(|(s, seq)| format!("{s} {} → {seq}", before.get(s).copied().unwrap_or(0)))
                    .collect();
                self.failures.push(format!("{op}: refused cells wrote: {}", grown.join(", ")));
            }
        }
        for (n, who) in granted.into_iter().enumerate() {
            let call = case(who.role(), n);
            self.cell(&found, &access, who, &call).await;
            // A scope given as a parameter may be left out: each caller then reads its own.
            if let Some((key, _)) = who.scope() {
                let scoped = call.query.iter().any(|(name, _)| *name == key);
                if found.kind == OpKind::Query && who.grant(&access) == Some(Grant::Own) && scoped {
                    let implied =
                        Call { query: call.query.iter().filter(|(k, _)| *k != key).cloned().collect(), ..call };
                    for caller in [who, who.peer()] {
                        self.read_own(&found, caller, &implied).await;
                    }
                }
            }
        }
    }

    /// One cell: `who` sends `call` to `op`; a difference from `access` becomes a failure.
    async fn cell(&mut self, op: &Op, access: &Access, who: Who, call: &Call) {
        self.cells += 1;
        let req = match request(op, call) {
            Ok(req) => req,
            Err(e) => return self.failures.push(format!("{} × {who:?}: cannot build the request: {e}", op.name)),
        };
        let (status, text) = self.send(who, &req).await;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let code = answer["code"].as_str().unwrap_or_default();
        let wanted = expected(access, who);
        let problem = match wanted {
            Expect::Refused(s, c) if (status, code) != (s, c) => Some(format!("expected {} {c}", s.as_u16())),
            Expect::Refused(..) => who.rival().filter(|r| text.contains(r)).map(|r| format!("the refusal names {r}")),
            Expect::Granted(_) if op.kind == OpKind::Command && !status.is_success() => {
                Some("expected it carried out (2xx)".to_owned())
            }
            Expect::Granted(_) if op.kind == OpKind::Query && status != StatusCode::OK => {
                Some("expected an answer (200)".to_owned())
            }
            Expect::Granted(true) => not_own(who, &text, &answer),
            Expect::Granted(false) => None,
        };
        if let Some(problem) = problem {
            let shown: String = text.chars().take(300).collect();
            self.failures.push(format!(
                "{} {} × {who:?}: {problem}, got {} {shown}",
                op.name,
                req.path,
                status.as_u16()
            ));
        }
    }

    /// `who` reads `call` of `op`: 200, its own rows only.
    async fn read_own(&mut self, op: &Op, who: Who, call: &Call) {
        self.cells += 1;
        let req = request(op, call).expect("built once already");
        let (status, text) = self.send(who, &req).await;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let problem = if status != StatusCode::OK {
            Some("expected an answer (200)".to_owned())
        } else {
            not_own(who, &text, &answer)
        };
        if let Some(problem) = problem {
            let shown: String = text.chars().take(300).collect();
            self.failures.push(format!(
                "{} {} (scope implied) × {who:?}: {problem}, got {} {shown}",
                op.name,
                req.path,
                status.as_u16()
            ));
        }
    }
}

/// A query-string value, percent-encoded.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Why an answer to `who` is not only its own: a row of another scope, or the other's id.
fn not_own(who: Who, text: &str, answer: &Value) -> Option<String> {
    let (key, own) = who.scope()?;
    if let Some(rival) = who.rival().filter(|r| text.contains(r)) {
        return Some(format!("the answer names {rival}"));
    }
    let mut stack = vec![answer];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(s)) = map.get(key) {
                    if s != own {
                        return Some(format!("a row of {key} {s}"));
                    }
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    None
}

/// Route ids of `date` at gerland: monique's route and its stops.
async fn monique_route(m: &mut Matrix, date: &str, after: &Value) -> (String, Vec<String>) {
    let plan = m
        .setup(Who::Admin, "get_plan", call().at("site_id", "gerland").at("date", date).q("min_seq", min_seq(after)))
        .await;
    let route = plan["routes"]
        .as_array()
        .and_then(|routes| routes.iter().find(|r| r["driver_id"] == MONIQUE))
        .unwrap_or_else(|| panic!("monique has a route: {plan}"))
        .clone();
    let stops = route["stops"].as_array().unwrap().iter().map(|s| s["job_id"].as_str().unwrap().to_owned()).collect();
    (route["route_id"].as_str().unwrap().to_owned(), stops)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_every_caller_as_its_declaration_says() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    // Today's route is driven: a time zone where it is mid-morning, whatever the hour.
    let (zone, calendar) = morning_zone();
    let in_days = |n: i64| in_days_at(&calendar, n);
    let quiet = [
        ("FOODAID__TIME_ZONE", zone.as_str()),
        ("FOODAID__JOBS__EXPIRY_INTERVAL_MINUTES", "0"),
        ("FOODAID__JOBS__COLLECTION_INTERVAL_MINUTES", "0"),
        ("FOODAID__JOBS__PICKUPS_INTERVAL_MINUTES", "0"),
        ("FOODAID__JOBS__RESERVATIONS_INTERVAL_SECS", "0"),
    ];
    let foodaid = Foodaid::up_with(dir.path(), Some(&url), &[], &quiet);
    let tok = |args: &[&str]| token(dir.path(), Some(&url), args);
    let admin = tok(&["--role", "admin"]);
    let revoked = tok(&["--role", "admin", "--name", "gone"]);
    let revoked_id = revoked.split('_').nth(1).unwrap().to_owned();
    run(dir.path(), Some(&url), &["token", "revoke", &revoked_id]);
    let admin_id = admin.split('_').nth(1).unwrap().to_owned();
    let bearer: BTreeMap<Who, String> = [
        (Who::Malformed, "not-a-token".to_owned()),
        (Who::Unknown, "fa_000000000000_unknown".to_owned()),
        (Who::WrongSecret, format!("fa_{admin_id}_wrongsecret")),
        (Who::Revoked, revoked),
        (Who::Admin, admin),
        (Who::Warehouse, tok(&["--role", "warehouse"])),
        (Who::AssociationOwn, tok(&["--role", "association", "--scope", A])),
        (Who::AssociationOther, tok(&["--role", "association", "--scope", B])),
        (Who::DriverOwn, tok(&["--role", "driver", "--scope", MONIQUE])),
        (Who::DriverOther, tok(&["--role", "driver", "--scope", PAUL])),
    ]
    .into_iter()
    .map(|(who, t)| (who, format!("Bearer {t}")))
    .collect();
    let mut m = Matrix {
        ops: operations(),
        base: foodaid.http.clone(),
        http: reqwest::Client::new(),
        bearer,
        js: async_nats::jetstream::new(nats.client().await),
        checked: BTreeSet::new(),
        failures: Vec::new(),
        cells: 0,
        keys: 0,
    };
    let table = operations();
    let today = in_days(0);
    let (year, month) = (today[..4].to_owned(), today[..7].to_owned());
    let all_week: Vec<Value> = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        .iter()
        .map(|d| json!({"day": d, "opens": "00:00:00", "closes": "23:59:00"}))
        .collect();
    let admin = Who::Admin;

    // ---- Donations and stock: sites, donors, products, lots, reservations.
    for (id, lat) in [("gerland", 45.73), ("givors", 45.59)] {
        let site = json!({"site_id": id, "name": id, "position": {"lat": lat, "lon": 4.83}, "zones": [
            {"code": "A1", "storage": "ambient"}, {"code": "B2", "storage": "ambient"},
            {"code": "F1", "storage": "chilled"}]});
        m.setup(admin, "create_site", call().body(site)).await;
    }
    for (id, lat) in [("lidl", 45.76), ("ferme", 45.70)] {
        let donor = json!({"donor_id": id, "kind": "retailer", "name": id, "address": format!("1 rue {id}"),
            "position": {"lat": lat, "lon": 4.86}});
        m.setup(admin, "register_donor", call().body(donor)).await;
    }
    let agreement = json!({"reference": "CONV-ferme", "dlc_min_hours": 24});
    m.setup(admin, "sign_agreement", call().at("donor_id", "ferme").body(agreement)).await;
    for (id, group, storage, kind) in [("pasta", "starches", "ambient", "ddm"), ("yoghurt", "dairy", "chilled", "dlc")]
    {
        let body = json!({"product_id": id, "name": id, "food_group": group, "storage": storage, "date_kind": kind});
        m.setup(admin, "define_product", call().body(body)).await;
    }
    let biscuits = json!({"gtin": "3760012345021", "name": "Biscuits", "food_group": "sugary_salty",
        "storage": "ambient", "date_kind": "ddm"});
    let biscuits =
        m.setup(admin, "define_product", call().body(biscuits)).await["aggregate_id"].as_str().unwrap().to_owned();
    let lines = json!([
        {"product_id": "pasta", "quantity": 400, "weight_g": 200000, "date": in_days(200), "lot_number": "P1"},
        {"product_id": "yoghurt", "quantity": 60, "weight_g": 7200, "date": in_days(12), "temperature_c": 3.0},
        {"product_id": biscuits, "quantity": 20, "weight_g": 4000, "date": in_days(100), "lot_number": "B1"}]);
    m.setup(
        admin,
        "record_donation",
        call().body(json!({"donation_id": "d1", "donor_id": "lidl", "site_id": "gerland", "lines": lines})),
    )
    .await;
    let small = |n: &str| {
        json!({"product_id": "pasta", "quantity": 5, "weight_g": 2500, "date": in_days(150),
            "lot_number": n})
    };
    let lines = json!([small("H1"), small("H2"), small("H3")]);
    m.setup(
        admin,
        "record_donation",
        call().body(json!({"donation_id": "d2", "donor_id": "lidl", "site_id": "gerland", "lines": lines})),
    )
    .await;
    let reserve = |id: String, purpose: Value| {
        json!({"reservation_id": id, "site_id": "gerland", "purpose": purpose,
            "lines": [{"product_id": "pasta", "quantity": 1}]})
    };
    let destination =
        json!({"destination": {"kind": "parcel", "reference": "colis-x", "association_id": A, "household": "x-1"}});
    for n in 0..2 {
        for step in ["pk", "sh", "rt", "rd"] {
            m.setup(admin, "reserve_stock", call().body(reserve(format!("r-{step}-{n}"), json!({"kind": "parcel"}))))
                .await;
        }
        for step in ["rt", "rd"] {
            let shipped = call().at("reservation_id", format!("r-{step}-{n}")).body(destination.clone());
            m.setup(admin, "ship_reservation", shipped).await;
        }
        let transfer = json!({"kind": "transfer", "to_site": "givors"});
        m.setup(admin, "reserve_stock", call().body(reserve(format!("t-{n}"), transfer))).await;
    }

    m.check("register_donor", |_, n| {
        call().body(json!({"donor_id": format!("donor-m{n}"), "kind": "retailer", "name": format!("Donneur {n}"),
            "address": "3 rue du Port", "position": {"lat": 45.75, "lon": 4.85}}))
    })
    .await;
    m.check("update_donor", |_, _| call().at("donor_id", "lidl").body(json!({"address": "2 rue Lidl"}))).await;
    m.check("sign_agreement", |_, _| {
        call().at("donor_id", "lidl").body(json!({"reference": "CONV-lidl", "dlc_min_hours": 24}))
    })
    .await;
    m.check("end_agreement", |_, _| call().at("donor_id", "ferme")).await;
    let weekday = chrono::NaiveDate::parse_from_str(&in_days(2), "%Y-%m-%d").unwrap().format("%a").to_string();
    let weekly = json!({"collections": [{"day": weekday, "opens": "10:00:00", "closes": "12:00:00",
        "kg": 60, "chilled_kg": 0, "site_id": "gerland"}]});
    m.check("set_collections", |_, _| call().at("donor_id", "lidl").body(weekly.clone())).await;
    m.check("define_product", |_, n| {
        call().body(json!({"product_id": format!("prod-m{n}"), "name": format!("Riz {n}"), "food_group": "starches",
            "storage": "ambient", "date_kind": "ddm"}))
    })
    .await;
    let pasta = json!({"name": "Pâtes", "food_group": "starches", "storage": "ambient", "date_kind": "ddm"});
    m.check("update_product", |_, _| call().at("product_id", "pasta").body(pasta.clone())).await;
    m.check("record_donation", |_, n| {
        let lines = json!([{"product_id": "pasta", "quantity": 2, "weight_g": 1000, "date": in_days(180)}]);
        call().body(json!({"donation_id": format!("d-m{n}"), "donor_id": "lidl", "site_id": "gerland", "lines": lines}))
    })
    .await;
    m.check("list_donors", |_, _| call().q("q", "li")).await;
    m.check("get_donor", |_, _| call().at("donor_id", "lidl")).await;
    m.check("donor_statement", |_, _| call().at("donor_id", "lidl").at("year", year.clone())).await;
    m.check("list_products", |_, _| call()).await;
    m.check("get_product", |_, _| call().at("product_id", "pasta")).await;
    m.check("lookup_gtin", |_, _| call().at("gtin", "3760012345021")).await;
    m.check("list_donations", |_, _| call().q("donor_id", "lidl")).await;
    m.check("list_incoming", |_, _| call()).await;
    m.check("get_donation", |_, _| call().at("donation_id", "d1")).await;

    m.check("create_site", |_, n| {
        call().body(json!({"site_id": format!("site-m{n}"), "name": format!("Site {n}"),
            "position": {"lat": 45.7, "lon": 4.8}, "zones": [{"code": "A1", "storage": "ambient"}]}))
    })
    .await;
    m.check("add_zone", |_, n| {
        call().at("site_id", "gerland").body(json!({"zone": {"code": format!("M{n}"), "storage": "ambient"}}))
    })
    .await;
    m.check("list_sites", |_, _| call()).await;
    m.check("get_site", |_, _| call().at("site_id", "gerland")).await;
    m.check("list_lots", |_, _| call().q("site_id", "gerland")).await;
    m.check("get_lot", |_, _| call().at("lot_id", "d1-l1")).await;
    m.check("adjust_lot", |_, _| {
        call().at("lot_id", "d1-l1").body(json!({"delta": -1, "reason": "damage", "note": "sac percé"}))
    })
    .await;
    m.check("move_lot", |_, n| call().at("lot_id", "d1-l1").body(json!({"zone": (["A1", "B2"][n % 2])}))).await;
    let held = |n: usize| call().at("lot_id", format!("d2-l{}", n + 1));
    m.check("hold_lot", |_, n| held(n).body(json!({"reason": "contrôle"}))).await;
    m.check("lift_hold", |_, n| held(n)).await;
    m.check("flag_lot", |_, _| call().at("lot_id", "d2-l3").body(json!({"reason": "carton abîmé"}))).await;
    let lot = m.setup(admin, "get_lot", call().at("lot_id", "d1-l1")).await;
    let count = json!({"counts": [{"lot_id": "d1-l1", "counted": lot["on_hand"]}], "note": "inventaire"});
    m.check("count_zone", |_, _| call().at("site_id", "gerland").at("zone", "B2").body(count.clone())).await;
    m.check("stock_summary", |_, _| call().q("site_id", "gerland")).await;
    m.check("low_stock", |_, _| call()).await;
    m.check("expiring_lots", |_, _| call().q("days", "30")).await;
    m.check("run_expiry", |_, _| call().body(json!({"today": today}))).await;
    m.check("reserve_stock", |_, n| call().body(reserve(format!("r-m-{n}"), json!({"kind": "parcel"})))).await;
    let on = |step: &str, n: usize| call().at("reservation_id", format!("{step}-{n}"));
    m.check("release_reservation", |_, n| on("r-m", n)).await;
    m.check("pick_reservation", |_, n| on("r-pk", n)).await;
    m.check("ship_reservation", |_, n| on("r-sh", n).body(destination.clone())).await;
    m.check("return_shipment", |_, n| on("r-rt", n)).await;
    m.check("redirect_shipment", |_, n| on("r-rd", n).body(destination.clone())).await;
    m.check("dispatch_transfer", |_, n| on("t", n)).await;
    m.check("receive_transfer", |_, n| on("t", n)).await;
    m.check("list_transfers", |_, _| call().q("site_id", "gerland")).await;
    m.check("get_reservation", |_, _| call().at("reservation_id", "r-pk-0")).await;

    // ---- Distribution: associations A and B, their households and parcels.
    for (id, lat) in [(A, 45.758), (B, 45.74)] {
        let body =
            json!({"association_id": id, "name": format!("Association {}", &id[5..]), "commune": "Saint-Étienne"});
        m.setup(admin, "register_association", call().body(body)).await;
        let relay = json!({"relay_id": format!("rp-{}", &id[5..]), "name": "Salle des fêtes",
            "address": "3 place Jean Jaurès", "commune": "Saint-Étienne", "cold_storage": true,
            "position": {"lat": lat, "lon": 4.889}, "opening": all_week});
        m.setup(admin, "add_relay_point", call().at("association_id", id).body(relay)).await;
    }
    let household = |id: &str, association: &str| {
        json!({"household_id": id, "association_id": association, "relay_point_id": format!("rp-{}", &association[5..]),
            "composition": {"adults": 2, "teens": 0, "children": 1, "infants": 0}, "diet": {}, "consent": true,
            "personal": {"first_name": id, "last_name": "Famille", "birth_date": "1980-05-05"}})
    };
    let assessment = json!({"resources_cents": 90000, "charges_cents": 70000});
    let mut eligible: Vec<(String, &str)> =
        ["hh-1", "hh-2", "hh-x0", "hh-x1"].iter().map(|h| (h.to_string(), A)).collect();
    eligible.extend((0..14).map(|i| (format!("hh-p{i}"), A)));
    eligible.push(("hh-b1".to_owned(), B));
    for (id, association) in &eligible {
        m.setup(admin, "register_household", call().body(household(id, association))).await;
        m.setup(admin, "assess_household", call().at("household_id", id.as_str()).body(assessment.clone())).await;
    }
    let parcel = |i: usize| format!("hh-p{i}-{today}");
    for h in (0..14).map(|i| format!("hh-p{i}")).chain(["hh-b1".to_owned()]) {
        m.setup(admin, "request_parcel", call().body(json!({"household_id": h, "date": today}))).await;
    }

    m.check("register_association", |_, n| {
        call().body(
            json!({"association_id": format!("asso-m{n}"), "name": format!("Nouvelle {n}"), "commune": "Firminy"}),
        )
    })
    .await;
    m.check("add_relay_point", |_, n| {
        call().at("association_id", A).body(json!({"relay_id": format!("rp-m{n}"), "name": format!("Local {n}"),
            "commune": "Saint-Étienne", "opening": all_week}))
    })
    .await;
    m.check("set_parcel_days", |_, _| call().at("association_id", A).body(json!({"days": 14}))).await;
    m.check("set_relay_opening", |_, _| {
        call().at("association_id", A).at("relay_id", "rp-a").body(json!({"opening": all_week}))
    })
    .await;
    m.check("set_eligibility_rule", |_, _| {
        call().at("association_id", A).body(json!({"threshold_cents": 1000, "validity_days": 183}))
    })
    .await;
    m.check("list_associations", |_, _| call()).await;
    m.check("get_association", |_, _| call().at("association_id", A)).await;
    m.check("register_household", |_, n| call().body(household(&format!("hh-r{n}"), A))).await;
    m.check("import_households", |_, n| {
        let csv = format!(
            "Nom;Prénom;Date de naissance;Point relais;Adultes;Enfants;Consentement\n{};Awa;14/03/1985;rp-a;2;1;oui\n",
            ["Diallo", "Kone"][n % 2]
        );
        call().body(json!({"association_id": A, "csv": csv}))
    })
    .await;
    m.check("update_household", |_, _| {
        call().at("household_id", "hh-1").body(json!({"diet": {"no_pork": true, "allergies": ["peanuts"]}}))
    })
    .await;
    m.check("assess_household", |_, _| call().at("household_id", "hh-1").body(assessment.clone())).await;
    m.check("change_consent", |_, n| call().at("household_id", format!("hh-r{n}")).body(json!({"consent": false})))
        .await;
    m.check("erase_household", |_, n| call().at("household_id", format!("hh-r{n}"))).await;
    m.check("list_households", |_, _| call().q("association_id", A)).await;
    m.check("get_household", |_, _| call().at("household_id", "hh-1")).await;
    m.check("request_parcel", |_, n| call().body(json!({"household_id": "hh-1", "date": in_days(1 + n as i64)}))).await;
    m.check("request_parcels", |_, n| {
        call().body(json!({"date": in_days(3 + n as i64), "household_ids": ["hh-1", "hh-2"]}))
    })
    .await;
    m.check("cancel_parcel", |_, n| {
        call().at("parcel_id", format!("hh-1-{}", in_days(1 + n as i64))).body(json!({"reason": "déménagement"}))
    })
    .await;
    m.check("compose_wave", |_, _| call().body(json!({"site_id": "gerland", "date": today}))).await;
    // Parcels 0-1 stay composed, 2-3 are picked, 4-5 shipped, 6-7 at the relay point, 8-9
    // shipped, 10-13 not collected: each step then has a parcel for each granted caller.
    let step = |name: &'static str, i: usize| (name, call().at("parcel_id", parcel(i)));
    let mut steps: Vec<(&str, Call)> = (2..14).map(|i| step("pick_parcel", i)).collect();
    steps.extend((4..14).map(|i| step("ship_parcel", i)));
    steps.extend((6..8).map(|i| step("parcel_at_relay", i)));
    steps.extend((10..14).map(|i| step("parcel_not_collected", i)));
    for (name, c) in steps {
        m.setup(admin, name, c).await;
    }
    m.check("pick_parcel", |_, n| call().at("parcel_id", parcel(n))).await;
    m.check("ship_parcel", |_, n| call().at("parcel_id", parcel(2 + n))).await;
    m.check("parcel_at_relay", |_, n| call().at("parcel_id", parcel(4 + n))).await;
    m.check("collect_parcel", |_, n| call().at("parcel_id", parcel(6 + n))).await;
    m.check("parcel_not_collected", |_, n| call().at("parcel_id", parcel(8 + n))).await;
    m.check("return_parcel", |_, n| call().at("parcel_id", parcel(10 + n))).await;
    m.check("redistribute_parcel", |_, n| {
        call().at("parcel_id", parcel(12 + n)).body(json!({"household_id": format!("hh-x{n}")}))
    })
    .await;
    // The warehouse lists a whole day (the pick list); an association its own parcels.
    m.check("list_parcels", |role, _| match role {
        Role::Warehouse => call().q("date", today.clone()),
        _ => call().q("association_id", A).q("date", today.clone()),
    })
    .await;
    m.check("get_parcel", |_, _| call().at("parcel_id", parcel(0))).await;
    m.check("fair_share", |_, _| call().q("month", month.clone())).await;
    m.check("distribution_report", |_, _| call().q("month", month.clone()).q("association_id", A)).await;

    // ---- Transport: the fleet, today's jobs, monique's route.
    for (id, kg, chilled) in [("frigo", 600, 200), ("camion", 900, 0)] {
        let body = json!({"vehicle_id": id, "name": id, "capacity_kg": kg, "chilled_capacity_kg": chilled,
            "home_site": "gerland"});
        m.setup(admin, "register_vehicle", call().body(body)).await;
    }
    for (id, vehicle) in [(MONIQUE, "frigo"), (PAUL, "camion")] {
        let body = json!({"driver_id": id, "name": id, "vehicles": [vehicle], "max_shift_minutes": 840});
        m.setup(admin, "register_driver", call().body(body)).await;
    }
    let pickup = |id: &str, date: &str, donor: &str| {
        json!({"job_id": id, "date": date, "site_id": "gerland", "kind": "pickup", "party_id": donor,
            "kg": 50, "chilled_kg": 0, "opens": "00:00:00", "closes": "23:59:00", "service_minutes": 10})
    };
    for (id, donor) in [("pk-lidl", "lidl"), ("pk-ferme", "ferme")] {
        m.setup(admin, "schedule_job", call().body(pickup(id, &today, donor))).await;
    }

    m.check("register_vehicle", |_, n| {
        call().body(json!({"vehicle_id": format!("veh-m{n}"), "name": format!("Van {n}"), "capacity_kg": 500,
            "chilled_capacity_kg": 0, "home_site": "gerland"}))
    })
    .await;
    m.check("set_vehicle_availability", |_, _| {
        call().at("vehicle_id", "camion").body(json!({"date": in_days(20), "available": false}))
    })
    .await;
    m.check("retire_vehicle", |_, n| call().at("vehicle_id", format!("veh-m{n}")).body(json!({"reason": "vendu"})))
        .await;
    m.check("list_vehicles", |_, _| call()).await;
    m.check("register_driver", |_, n| {
        call().body(json!({"driver_id": format!("drv-m{n}"), "name": format!("Chauffeur {n}"), "vehicles": ["frigo"],
            "max_shift_minutes": 480}))
    })
    .await;
    m.check("set_driver_availability", |_, _| {
        call().at("driver_id", MONIQUE).body(json!({"date": today, "slots": [{"from": "00:00:00", "to": "23:59:00"}]}))
    })
    .await;
    m.check("retire_driver", |_, n| call().at("driver_id", format!("drv-m{n}"))).await;
    m.check("list_drivers", |_, _| call()).await;
    m.check("schedule_job", |_, n| call().body(pickup(&format!("job-m{n}"), &in_days(10), "lidl"))).await;
    m.check("schedule_pickups", |_, _| call().body(json!({"date": in_days(9)}))).await;
    m.check("cancel_job", |_, n| call().at("job_id", format!("job-m{n}")).body(json!({"reason": "en double"}))).await;
    m.check("list_jobs", |_, _| call().q("date", today.clone())).await;
    m.check("plan_routes", |_, _| call().body(json!({"site_id": "gerland", "date": today, "seconds": 0.5}))).await;
    let last = json!({"stream": "transport", "seq": last_seq(&m.js, "transport").await});
    let (route, stops) = monique_route(&mut m, &today, &last).await;
    let done = stops.iter().find(|s| *s == "pk-lidl").cloned().unwrap_or_else(|| panic!("pk-lidl planned: {stops:?}"));
    let failed = stops.iter().find(|s| **s != done).cloned().unwrap_or_else(|| panic!("two stops: {stops:?}"));
    let on_route = || call().at("route_id", route.clone());
    m.check("start_route", |_, _| on_route()).await;
    m.check("arrive_stop", |_, _| on_route().at("job_id", done.clone())).await;
    m.check("complete_stop", |_, _| on_route().at("job_id", done.clone()).body(json!({"kg": 40}))).await;
    m.check("fail_stop", |_, _| on_route().at("job_id", failed.clone()).body(json!({"reason": "salle fermée"}))).await;
    m.check("end_route", |_, _| on_route()).await;
    m.check("get_plan", |_, _| call().at("site_id", "gerland").at("date", today.clone())).await;
    m.check("list_routes", |_, _| call().q("date", today.clone()).q("driver_id", MONIQUE)).await;

    // ---- A recall, and the day closed.
    m.check("issue_recall", |_, n| {
        call().body(json!({"recall_id": format!("rc-m{n}"), "product_id": biscuits, "lot_numbers": ["B1"],
            "reason": "corps étranger"}))
    })
    .await;
    m.check("recall_trace", |_, _| call().at("recall_id", "rc-m0")).await;
    m.check("close_distribution_day", |_, _| call().at("date", today.clone())).await;

    for op in table.iter().filter(|o| !m.checked.contains(&(o.method.to_string(), o.path))) {
        m.failures.push(format!("{} {} ({}): no step here", op.method, op.path, op.name));
    }
    eprintln!("access matrix: {} operations, {} cells", table.len(), m.cells);
    assert!(
        m.failures.is_empty(),
        "{} cell(s) differ from their operation's access declaration:\n{}",
        m.failures.len(),
        m.failures.join("\n")
    );
    assert!(foodaid.terminate().success());
}

/// The last sequence of `stream`.
async fn last_seq(js: &async_nats::jetstream::Context, stream: &str) -> u64 {
    js.get_stream(stream).await.unwrap().info().await.unwrap().state.last_sequence
}
