//! Every command of the API sent twice with the same `Idempotency-Key`, as a phone whose answer
//! was lost would: the second answer is the first one (`duplicate: true`), and no stream grows.
//!
//! Generated from the gateway's operation table: each step names its operation, whose method
//! and path come from the table, and the test fails if any command of the table has no step.
//! The steps build a whole day of a collective (stock, transfers, a recall, households, parcels
//! from request to hand-over, routes driven), so each command is retried in a state where its
//! first sending is accepted.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use gateway::api::{operations, Op, OpKind};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{in_days_at, min_seq, morning_zone, settled, token, Api, Foodaid};
use testkit::TestNats;

struct Retries {
    ops: BTreeMap<&'static str, Op>,
    js: async_nats::jetstream::Context,
    tried: BTreeSet<&'static str>,
    keys: usize,
}

impl Retries {
    /// Sends `op` twice with one key; answers the first answer once the second matched it.
    async fn send(&mut self, who: &Api, op: &'static str, params: &[(&str, &str)], body: Value) -> Value {
        let found = self.ops.get(op).unwrap_or_else(|| panic!("no operation {op} in the table"));
        let mut path = found.path.to_owned();
        for (name, value) in params {
            path = path.replace(&format!("{{{name}}}"), value);
        }
        assert!(!path.contains('{'), "{op}: a path parameter is missing in {path}");
        self.keys += 1;
        let key = format!("retry-{}-{op}", self.keys);
        let method = reqwest::Method::from_bytes(found.method.as_str().as_bytes()).unwrap();
        let (status, first) = who.send(method.clone(), &path, Some(&key), Some(body.clone())).await.unwrap();
        assert!(status.is_success(), "{op} {path}: {status} {first}");
        assert_eq!(first["duplicate"], false, "{op}: a first sending is no duplicate: {first}");
        let before = settled(&self.js).await;
        let (again_status, again) = who.send(method, &path, Some(&key), Some(body)).await.unwrap();
        let mut expected = first.clone();
        expected["duplicate"] = json!(true);
        assert_eq!((again_status, &again), (status, &expected), "{op} {path}: a retry gets the first answer");
        assert_eq!(settled(&self.js).await, before, "{op} {path}: a retry writes nothing");
        self.tried.insert(op);
        first
    }
}

/// Route and stop ids from the plan of `date` at gerland.
async fn routes(admin: &Api, date: &str, after: &Value) -> Value {
    let (status, plan) = admin.get(&format!("/api/plans/gerland/{date}?min_seq={}", min_seq(after))).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    plan["routes"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_retried_with_its_key_gets_its_first_answer_and_writes_nothing() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    // Today's route is driven: a time zone where it is mid-morning, whatever the hour.
    let (zone, calendar) = morning_zone();
    let foodaid = Foodaid::up_with(dir.path(), Some(&url), &[], &[("FOODAID__TIME_ZONE", zone.as_str())]);
    let in_days = |n: i64| in_days_at(&calendar, n);
    let api = |args: &[&str]| Api::new(&foodaid.http, &token(dir.path(), Some(&url), args));
    let (admin, wh) = (api(&["--role", "admin"]), api(&["--role", "warehouse"]));
    let a = api(&["--role", "association", "--scope", "asso-a"]);
    let monique = api(&["--role", "driver", "--scope", "monique"]);
    let mut r = Retries {
        ops: operations().into_iter().filter(|o| o.kind == OpKind::Command).map(|o| (o.name, o)).collect(),
        js: async_nats::jetstream::new(nats.client().await),
        tried: BTreeSet::new(),
        keys: 0,
    };
    let today = in_days(0);
    let all_week: Vec<Value> = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        .iter()
        .map(|d| json!({"day": d, "opens": "00:00:00", "closes": "23:59:00"}))
        .collect();

    // Sites and zones.
    for (id, lat) in [("gerland", 45.73), ("givors", 45.59)] {
        let site = json!({"site_id": id, "name": id, "position": {"lat": lat, "lon": 4.83},
            "zones": [{"code": "A1", "storage": "ambient"}, {"code": "F1", "storage": "chilled"}]});
        r.send(&admin, "create_site", &[], site).await;
    }
    let zone = json!({"zone": {"code": "B2", "storage": "ambient"}});
    r.send(&admin, "add_zone", &[("site_id", "gerland")], zone).await;

    // Donors, their agreements and collections; products; a donation and what becomes of its lots.
    for (id, lat) in [("lidl", 45.76), ("ferme", 45.70)] {
        let donor = json!({"donor_id": id, "kind": "retailer", "name": id, "address": format!("1 rue {id}"),
            "position": {"lat": lat, "lon": 4.86}});
        r.send(&wh, "register_donor", &[], donor).await;
    }
    r.send(&wh, "update_donor", &[("donor_id", "lidl")], json!({"address": "2 rue Lidl"})).await;
    for donor in ["lidl", "ferme"] {
        let agreement = json!({"reference": format!("CONV-{donor}"), "dlc_min_hours": 24});
        r.send(&admin, "sign_agreement", &[("donor_id", donor)], agreement).await;
    }
    r.send(&admin, "end_agreement", &[("donor_id", "ferme")], json!({})).await;
    let weekday = chrono::NaiveDate::parse_from_str(&in_days(2), "%Y-%m-%d").unwrap().format("%a").to_string();
    let weekly = json!({"collections": [{"day": weekday, "opens": "10:00:00", "closes": "12:00:00",
        "kg": 60, "chilled_kg": 0, "site_id": "gerland"}]});
    r.send(&wh, "set_collections", &[("donor_id", "lidl")], weekly).await;
    for (id, group, storage, kind) in [("pasta", "starches", "ambient", "ddm"), ("yoghurt", "dairy", "chilled", "dlc")]
    {
        let body = json!({"product_id": id, "name": id, "food_group": group, "storage": storage, "date_kind": kind});
        r.send(&wh, "define_product", &[], body).await;
    }
    let pasta = json!({"name": "Pâtes", "food_group": "starches", "storage": "ambient", "date_kind": "ddm"});
    r.send(&wh, "update_product", &[("product_id", "pasta")], pasta).await;
    let lines = json!([
        {"product_id": "pasta", "quantity": 60, "weight_g": 30000, "date": in_days(200), "lot_number": "P1"},
        {"product_id": "yoghurt", "quantity": 60, "weight_g": 7200, "date": in_days(12), "temperature_c": 3.0}]);
    let donation = json!({"donation_id": "d1", "donor_id": "lidl", "site_id": "gerland", "lines": lines});
    r.send(&wh, "record_donation", &[], donation).await;
    let adjust = json!({"delta": -1, "reason": "damage", "note": "sac percé"});
    r.send(&wh, "adjust_lot", &[("lot_id", "d1-l1")], adjust).await;
    r.send(&wh, "move_lot", &[("lot_id", "d1-l1")], json!({"zone": "A1"})).await;
    r.send(&wh, "hold_lot", &[("lot_id", "d1-l2")], json!({"reason": "contrôle"})).await;
    r.send(&wh, "lift_hold", &[("lot_id", "d1-l2")], json!({})).await;
    r.send(&wh, "flag_lot", &[("lot_id", "d1-l1")], json!({"reason": "carton abîmé"})).await;
    let count = json!({"counts": [{"lot_id": "d1-l1", "counted": 58}], "note": "inventaire"});
    r.send(&wh, "count_zone", &[("site_id", "gerland"), ("zone", "A1")], count).await;

    // Reservations: picked, shipped and returned; shipped and redirected; released; a transfer.
    let reserve = |id: &str, quantity: u32, purpose: Value| {
        json!({"reservation_id": id, "site_id": "gerland", "purpose": purpose,
            "lines": [{"product_id": "pasta", "quantity": quantity}]})
    };
    let parcel = json!({"kind": "parcel"});
    let destination = |household: &str| {
        json!({"destination": {"kind": "parcel", "reference": format!("colis-{household}"),
            "association_id": "asso-a", "household": household}})
    };
    for id in ["r-1", "r-2", "r-3"] {
        r.send(&wh, "reserve_stock", &[], reserve(id, 2, parcel.clone())).await;
    }
    r.send(&wh, "pick_reservation", &[("reservation_id", "r-1")], json!({})).await;
    for id in ["r-1", "r-2"] {
        r.send(&wh, "ship_reservation", &[("reservation_id", id)], destination("x-1")).await;
    }
    r.send(&wh, "return_shipment", &[("reservation_id", "r-1")], json!({})).await;
    r.send(&wh, "redirect_shipment", &[("reservation_id", "r-2")], destination("x-2")).await;
    r.send(&wh, "release_reservation", &[("reservation_id", "r-3")], json!({})).await;
    r.send(&wh, "reserve_stock", &[], reserve("t-1", 3, json!({"kind": "transfer", "to_site": "givors"}))).await;
    r.send(&wh, "dispatch_transfer", &[("reservation_id", "t-1")], json!({})).await;
    r.send(&wh, "receive_transfer", &[("reservation_id", "t-1")], json!({})).await;

    // An association, its relay point open every day, its rules; households.
    for id in ["asso-a", "asso-b"] {
        let body = json!({"association_id": id, "name": format!("Association {id}"), "commune": "Saint-Étienne"});
        r.send(&admin, "register_association", &[], body).await;
    }
    let relay = json!({"relay_id": "rp-a", "name": "Salle des fêtes", "address": "3 place Jean Jaurès",
        "commune": "Saint-Étienne", "cold_storage": true, "position": {"lat": 45.7580, "lon": 4.8890}});
    r.send(&admin, "add_relay_point", &[("association_id", "asso-a")], relay).await;
    r.send(&a, "set_parcel_days", &[("association_id", "asso-a")], json!({"days": 14})).await;
    let opening = json!({"opening": all_week});
    r.send(&a, "set_relay_opening", &[("association_id", "asso-a"), ("relay_id", "rp-a")], opening).await;
    let rule = json!({"threshold_cents": 1000, "validity_days": 183});
    r.send(&admin, "set_eligibility_rule", &[("association_id", "asso-a")], rule).await;
    for id in ["hh-1", "hh-2", "hh-3", "hh-4", "hh-5", "hh-6"] {
        let body = json!({"household_id": id, "association_id": "asso-a", "relay_point_id": "rp-a",
            "composition": {"adults": 2, "teens": 0, "children": 1, "infants": 0}, "diet": {}, "consent": true,
            "personal": {"first_name": id, "last_name": "Famille", "birth_date": "1980-05-05"}});
        r.send(&a, "register_household", &[], body).await;
        let assess = json!({"resources_cents": 90000, "charges_cents": 70000});
        r.send(&a, "assess_household", &[("household_id", id)], assess).await;
    }
    let diet = json!({"diet": {"no_pork": true, "allergies": ["peanuts"]}});
    r.send(&a, "update_household", &[("household_id", "hh-1")], diet).await;
    r.send(&a, "change_consent", &[("household_id", "hh-6")], json!({"consent": false})).await;
    r.send(&a, "erase_household", &[("household_id", "hh-6")], json!({})).await;
    let csv = "Nom;Prénom;Date de naissance;Point relais;Adultes;Enfants;Consentement\n\
               Diallo;Awa;14/03/1985;rp-a;2;1;oui\n";
    r.send(&a, "import_households", &[], json!({"csv": csv})).await;

    // Today's parcels: requested one by one and as a list, one cancelled, composed, handed over.
    r.send(&a, "request_parcel", &[], json!({"household_id": "hh-1", "date": today})).await;
    let list = json!({"date": today, "household_ids": ["hh-2", "hh-3", "hh-4"]});
    r.send(&a, "request_parcels", &[], list).await;
    let parcel_of = |h: &str| format!("{h}-{today}");
    r.send(&a, "cancel_parcel", &[("parcel_id", &parcel_of("hh-4"))], json!({"reason": "déménagement"})).await;
    r.send(&admin, "compose_wave", &[], json!({"site_id": "gerland", "date": today})).await;
    for h in ["hh-1", "hh-2", "hh-3"] {
        r.send(&wh, "pick_parcel", &[("parcel_id", &parcel_of(h))], json!({})).await;
        r.send(&wh, "ship_parcel", &[("parcel_id", &parcel_of(h))], json!({})).await;
    }
    r.send(&a, "parcel_at_relay", &[("parcel_id", &parcel_of("hh-1"))], json!({})).await;
    r.send(&a, "collect_parcel", &[("parcel_id", &parcel_of("hh-1"))], json!({})).await;
    for h in ["hh-2", "hh-3"] {
        r.send(&a, "parcel_not_collected", &[("parcel_id", &parcel_of(h))], json!({})).await;
    }
    r.send(&wh, "return_parcel", &[("parcel_id", &parcel_of("hh-2"))], json!({})).await;
    let to = json!({"household_id": "hh-5"});
    r.send(&a, "redistribute_parcel", &[("parcel_id", &parcel_of("hh-3"))], to).await;
    r.send(&admin, "close_distribution_day", &[("date", &today)], json!({})).await;

    // The fleet, today's jobs and routes, driven.
    for (id, kg, chilled) in [("frigo", 600, 200), ("camion", 900, 0)] {
        let body = json!({"vehicle_id": id, "name": id, "capacity_kg": kg, "chilled_capacity_kg": chilled,
            "home_site": "gerland"});
        r.send(&admin, "register_vehicle", &[], body).await;
    }
    let off = json!({"date": in_days(3), "available": false});
    r.send(&admin, "set_vehicle_availability", &[("vehicle_id", "camion")], off).await;
    for (id, vehicle) in [("monique", "frigo"), ("paul", "camion")] {
        let body = json!({"driver_id": id, "name": id, "vehicles": [vehicle], "max_shift_minutes": 840});
        r.send(&admin, "register_driver", &[], body).await;
    }
    let free = json!({"date": today, "slots": [{"from": "00:00:00", "to": "23:59:00"}]});
    r.send(&admin, "set_driver_availability", &[("driver_id", "monique")], free).await;
    for id in ["pk-lidl", "pk-x"] {
        let job = json!({"job_id": id, "date": today, "site_id": "gerland", "kind": "pickup", "party_id": "lidl",
            "kg": 50, "chilled_kg": 0, "opens": "00:00:00", "closes": "23:59:00", "service_minutes": 10});
        r.send(&admin, "schedule_job", &[], job).await;
    }
    r.send(&admin, "cancel_job", &[("job_id", "pk-x")], json!({"reason": "en double"})).await;
    r.send(&admin, "schedule_pickups", &[], json!({"date": in_days(9)})).await;
    let planned =
        r.send(&admin, "plan_routes", &[], json!({"site_id": "gerland", "date": today, "seconds": 0.5})).await;
    let routes = routes(&admin, &today, &planned).await;
    let route = &routes[0];
    let route_id = route["route_id"].as_str().unwrap();
    let stops: Vec<&str> = route["stops"].as_array().unwrap().iter().map(|s| s["job_id"].as_str().unwrap()).collect();
    assert!(stops.contains(&"pk-lidl") && stops.len() >= 2, "the pickup and the relay point's delivery: {routes}");
    let delivery = stops.iter().find(|s| **s != "pk-lidl").unwrap();
    r.send(&monique, "start_route", &[("route_id", route_id)], json!({})).await;
    let (lidl, dropoff) =
        ([("route_id", route_id), ("job_id", "pk-lidl")], [("route_id", route_id), ("job_id", delivery)]);
    r.send(&monique, "arrive_stop", &lidl, json!({})).await;
    r.send(&monique, "complete_stop", &lidl, json!({"kg": 40})).await;
    r.send(&monique, "fail_stop", &dropoff, json!({"reason": "salle fermée"})).await;
    r.send(&monique, "end_route", &[("route_id", route_id)], json!({})).await;
    r.send(&admin, "retire_driver", &[("driver_id", "paul")], json!({})).await;
    r.send(&admin, "retire_vehicle", &[("vehicle_id", "camion")], json!({"reason": "vendu"})).await;

    // A recall, and the expiry run.
    let recall = json!({"recall_id": "rc-1", "product_id": "pasta", "lot_numbers": ["P1"], "reason": "corps étranger"});
    r.send(&admin, "issue_recall", &[], recall).await;
    r.send(&admin, "run_expiry", &[], json!({"today": today})).await;

    let untried: Vec<&str> = r.ops.keys().filter(|name| !r.tried.contains(*name)).copied().collect();
    assert!(untried.is_empty(), "commands of the API without a retry step here: {untried:?}");
    assert!(foodaid.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_its_callers_and_names_one_request() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let api = |args: &[&str]| Api::new(&foodaid.http, &token(dir.path(), Some(&url), args));
    let admin = api(&["--role", "admin"]);
    for id in ["asso-a", "asso-b"] {
        let body = json!({"association_id": id, "name": id, "commune": "Firminy"});
        assert_eq!(admin.post("/api/associations", id, body).await.0, StatusCode::CREATED);
        let relay = json!({"relay_id": format!("rp-{id}"), "name": "Salle", "commune": "Firminy"});
        let path = format!("/api/associations/{id}/relay-points");
        assert_eq!(admin.post(&path, &format!("rp-{id}"), relay).await.0, StatusCode::CREATED);
    }
    let (a, b) =
        (api(&["--role", "association", "--scope", "asso-a"]), api(&["--role", "association", "--scope", "asso-b"]));
    let household = |asso: &str, name: &str| {
        let allergy = if asso == "asso-a" { "sesame" } else { "gluten" };
        json!({"association_id": asso, "relay_point_id": format!("rp-{asso}"), "consent": true,
            "composition": {"adults": 1, "teens": 0, "children": 2, "infants": 0}, "diet": {"allergies": [allergy]},
            "personal": {"first_name": name, "last_name": "Martin", "birth_date": "1979-02-03"}})
    };

    // The same key from two associations: two households, and B learns nothing of A's.
    let (status, mine) = a.post("/api/households", "foyer-X", household("asso-a", "Awa")).await;
    assert_eq!(status, StatusCode::CREATED, "{mine}");
    let (status, theirs) = b.post("/api/households", "foyer-X", household("asso-b", "Binta")).await;
    assert_eq!(status, StatusCode::CREATED, "{theirs}");
    assert_eq!(theirs["duplicate"], false, "{theirs}");
    assert_ne!(theirs["aggregate_id"], mine["aggregate_id"]);
    assert!(!theirs.to_string().contains("sesame"), "nothing of A's answer reaches B: {theirs}");
    // B replaying A's request with A's key is B's own new request, refused for the scope.
    let (status, err) = b.post("/api/households", "foyer-X-2", household("asso-a", "Awa")).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{err}");

    // The same key for another request is refused, and writes nothing.
    let (status, err) = a.post("/api/households", "foyer-X", household("asso-a", "Chloé")).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused")));

    // A double tap: the same request twice at once is one command, and both get its answer.
    let body = household("asso-a", "Dana");
    let (x, y) = tokio::join!(a.post("/api/households", "tap", body.clone()), a.post("/api/households", "tap", body));
    assert_eq!((x.0, y.0), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(x.1["aggregate_id"], y.1["aggregate_id"]);
    assert_eq!(x.1["events"], y.1["events"]);
    assert!(x.1["duplicate"] != y.1["duplicate"], "one of them is the retry: {} {}", x.1, y.1);
    let (_, listed) = a.get(&format!("/api/households?min_seq={}", min_seq(&x.1))).await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert!(foodaid.terminate().success());
}
