//! Transport through the HTTP API, against a real nats-server and a real `foodaid up`: shipped
//! parcels and scheduled pickups are planned into routes, drivers work them (a partial pickup,
//! a failed stop, an action sent an hour late), and what they did reaches the other services.

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{eligible_household, in_days_at, min_seq, morning_zone, token, wait_for, Api, Foodaid};
use testkit::TestNats;

/// A stop of `route` by job id.
fn stop<'a>(route: &'a Value, job: &str) -> Option<&'a Value> {
    route["stops"].as_array().unwrap().iter().find(|s| s["job_id"] == job)
}

/// The route of the plan (or routes list) that holds `job`.
fn route_of<'a>(routes: &'a Value, job: &str) -> &'a Value {
    routes.as_array().unwrap().iter().find(|r| stop(r, job).is_some()).unwrap_or_else(|| panic!("{job}: {routes}"))
}

/// The same action sent by a driver's phone, with the time it happened on the device.
async fn act_at(
    api: &Api,
    path: &str,
    key: &str,
    body: Value,
    at: chrono::DateTime<chrono::Utc>,
) -> (StatusCode, Value) {
    let res = api
        .http
        .post(format!("{}{path}", api.base))
        .bearer_auth(&api.token)
        .header("Idempotency-Key", key)
        .header("X-Occurred-At", at.to_rfc3339())
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Waits for the pickup job Lidl's weekly collection makes on `date`.
async fn lidl_pickup_on(admin: &Api, date: &str) -> Value {
    let jobs = wait_for(admin, &format!("/api/jobs?date={date}"), |v| {
        v.as_array().unwrap().iter().any(|j| j["party_id"] == "lidl" && j["grams"] == 60_000)
    })
    .await;
    jobs.as_array().unwrap().iter().find(|j| j["party_id"] == "lidl").unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_parcels_and_pickups_are_planned_driven_and_replanned() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    // Today's routes are planned and driven: the platform runs in a time zone where it is
    // mid-morning now, so the day's windows are ahead whatever the hour the test runs at.
    let (zone, calendar) = morning_zone();
    let foodaid = Foodaid::up_with(dir.path(), Some(&url), &[], &[("FOODAID__TIME_ZONE", zone.as_str())]);
    let in_days = |n: i64| in_days_at(&calendar, n);
    let api = |args: &[&str]| Api::new(&foodaid.http, &token(dir.path(), Some(&url), args));
    let (admin, wh) = (api(&["--role", "admin"]), api(&["--role", "warehouse"]));
    let a = api(&["--role", "association", "--scope", "asso-a"]);
    let day = in_days(0);

    // A warehouse with stock, two donors, an association with a relay point across town.
    let site = json!({"site_id": "gerland", "name": "Gerland", "position": {"lat": 45.7300, "lon": 4.8300},
        "zones": [{"code": "A1", "storage": "ambient"}, {"code": "F1", "storage": "chilled"}]});
    assert_eq!(admin.post("/api/sites", "site", site).await.0, StatusCode::CREATED);
    for (id, lat, lon) in [("lidl", 45.7600, 4.8600), ("ferme", 45.7000, 4.9000)] {
        let donor = json!({"donor_id": id, "kind": "retailer", "name": id, "address": format!("1 rue {id}"),
            "position": {"lat": lat, "lon": lon}});
        assert_eq!(wh.post("/api/donors", id, donor).await.0, StatusCode::CREATED);
    }
    for (id, group, storage, kind) in [("pasta", "starches", "ambient", "ddm"), ("yoghurt", "dairy", "chilled", "dlc")]
    {
        let body = json!({"product_id": id, "name": id, "food_group": group, "storage": storage, "date_kind": kind});
        assert_eq!(wh.post("/api/products", id, body).await.0, StatusCode::CREATED);
    }
    let lines = json!([
        {"product_id": "pasta", "quantity": 40, "weight_g": 20000, "date": in_days(200)},
        {"product_id": "yoghurt", "quantity": 60, "weight_g": 7200, "date": in_days(12), "temperature_c": 3.0}]);
    let donation = json!({"donation_id": "d1", "donor_id": "lidl", "site_id": "gerland", "lines": lines});
    assert_eq!(wh.post("/api/donations", "d1", donation).await.0, StatusCode::CREATED);
    wait_for(&wh, "/api/lots", |v| v.as_array().is_some_and(|a| a.len() == 2)).await;
    let body = json!({"association_id": "asso-a", "name": "Asso A", "commune": "Villeurbanne"});
    assert_eq!(admin.post("/api/associations", "asso-a", body).await.0, StatusCode::CREATED);
    let relay = json!({"relay_id": "rp-a", "name": "Salle des fêtes", "address": "3 place Grandclément",
        "commune": "Villeurbanne", "cold_storage": true, "position": {"lat": 45.7580, "lon": 4.8890}});
    assert_eq!(admin.post("/api/associations/asso-a/relay-points", "rp-a", relay).await.0, StatusCode::CREATED);

    // Two families' parcels are composed, picked and shipped: they join rp-a's delivery.
    for id in ["hh-1", "hh-2"] {
        let family = json!({"adults": 2, "teens": 0, "children": 1, "infants": 0});
        eligible_household(&a, id, family, json!({})).await;
        let (status, reply) =
            a.post("/api/parcels", &format!("p-{id}"), json!({"household_id": id, "date": day})).await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
    }
    let (status, wave) = admin.post("/api/waves", "w1", json!({"site_id": "gerland", "date": day})).await;
    assert_eq!(status, StatusCode::OK, "{wave}");
    for id in ["hh-1", "hh-2"] {
        for step in ["pick", "ship"] {
            let path = format!("/api/parcels/{id}-{day}/{step}");
            let (status, reply) = wh.post(&path, &format!("{step}-{id}"), json!({})).await;
            assert_eq!(status, StatusCode::OK, "{step}: {reply}");
        }
    }
    let jobs = wait_for(&admin, &format!("/api/jobs?date={day}"), |v| {
        v.as_array().is_some_and(|jobs| jobs.iter().any(|j| j["parcels"].as_array().is_some_and(|p| p.len() == 2)))
    })
    .await;
    let delivery = jobs.as_array().unwrap().iter().find(|j| j["kind"] == "delivery").unwrap().clone();
    assert_eq!((delivery["party_id"].as_str(), delivery["site_id"].as_str()), (Some("rp-a"), Some("gerland")));
    assert!(delivery["chilled_grams"].as_u64().unwrap() > 0, "the yoghurts travel chilled: {delivery}");
    let delivery = delivery["job_id"].as_str().unwrap().to_owned();

    // Scheduled pickups: at Lidl (at the donor's address, some of it chilled) and at the farm;
    // one more than any vehicle's cold box holds.
    let pickup = |id: &str, donor: &str, kg: u32, chilled: u32| {
        json!({"job_id": id, "date": day, "site_id": "gerland", "kind": "pickup", "party_id": donor,
            "kg": kg, "chilled_kg": chilled, "contact": "M. Petit 06 00 00 00 00",
            "opens": "09:00:00", "closes": "12:00:00", "service_minutes": 20})
    };
    for (id, donor, kg, chilled) in
        [("pk-lidl", "lidl", 120, 40), ("pk-ferme", "ferme", 80, 0), ("pk-glaces", "lidl", 400, 350)]
    {
        let (status, reply) = admin.post("/api/jobs", id, pickup(id, donor, kg, chilled)).await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
    }
    let (status, err) = admin
        .post(
            "/api/jobs",
            "bad",
            json!({"date": day, "site_id": "gerland", "kind": "visit",
        "party_id": "lidl", "opens": "09:00:00", "closes": "12:00:00"}),
        )
        .await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_kind")), "{err}");

    // Lidl also gives every week on the weekday after `day`: those days get their pickup as
    // soon as the schedule is set (for the week ahead), or when asked for a day further on.
    let weekday = chrono::NaiveDate::parse_from_str(&in_days(2), "%Y-%m-%d").unwrap().format("%a").to_string();
    let weekly = json!({"collections": [{"day": weekday, "opens": "10:00:00", "closes": "12:00:00",
        "kg": 60, "chilled_kg": 0, "site_id": "gerland"}]});
    let (status, reply) = wh.put("/api/donors/lidl/collections", "weekly", weekly).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let next = lidl_pickup_on(&admin, &in_days(2)).await;
    assert_eq!(next["address"], "1 rue lidl", "{next}");
    let (status, err) = wh
        .put(
            "/api/donors/lidl/collections",
            "bad",
            json!({"collections": [
        {"day": weekday, "opens": "12:00:00", "closes": "10:00:00", "kg": 60, "site_id": "gerland"}]}),
        )
        .await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_collections")));
    let (_, nothing) = admin.get(&format!("/api/jobs?date={}", in_days(9))).await;
    assert_eq!(nothing, json!([]), "beyond the week ahead until asked");
    let (status, reply) = admin.post("/api/pickups", "pickups-9", json!({"date": in_days(9)})).await;
    assert_eq!((status, reply["events"].as_array().map(Vec::len)), (StatusCode::OK, Some(1)), "{reply}");
    lidl_pickup_on(&admin, &in_days(9)).await;
    let (_, again) = admin.post("/api/pickups", "pickups-9-again", json!({"date": in_days(9)})).await;
    assert_eq!(again["duplicate"], true, "each pickup is made once: {again}");
    let (_, jobs) = admin.get(&format!("/api/jobs?date={}&min_seq={}", in_days(9), min_seq(&again))).await;
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");

    // What names something that is not there is refused, and nothing is stored.
    let js = async_nats::jetstream::new(nats.client().await);
    let before = support::settled(&js).await;
    let refused = [
        (
            wh.put(
                "/api/donors/lidl/collections",
                "to-star",
                json!({"collections": [{"day": "Mon", "opens": "10:00:00",
            "closes": "12:00:00", "kg": 60, "site_id": "*"}]}),
            )
            .await,
            "site_not_found",
        ),
        (
            admin
                .post(
                    "/api/jobs",
                    "at-a.b",
                    json!({"date": day, "site_id": "a.b", "kind": "pickup", "party_id": "lidl",
            "kg": 10, "opens": "09:00:00", "closes": "12:00:00"}),
                )
                .await,
            "site_not_found",
        ),
        (
            admin
                .post(
                    "/api/jobs",
                    "ghost-donor",
                    json!({"date": day, "site_id": "gerland", "kind": "pickup",
            "party_id": "ghost", "kg": 10, "address": "1 rue", "position": {"lat": 45.7, "lon": 4.8},
            "opens": "09:00:00", "closes": "12:00:00"}),
                )
                .await,
            "donor_not_found",
        ),
        (
            admin
                .post(
                    "/api/jobs",
                    "ghost-relay",
                    json!({"date": day, "site_id": "gerland", "kind": "delivery",
            "party_id": "rp-ghost", "opens": "09:00:00", "closes": "12:00:00"}),
                )
                .await,
            "relay_point_not_found",
        ),
        (
            admin
                .post(
                    "/api/vehicles",
                    "homeless",
                    json!({"vehicle_id": "homeless", "name": "Sans site",
            "capacity_kg": 500, "home_site": "nowhere"}),
                )
                .await,
            "site_not_found",
        ),
        (
            admin
                .post(
                    "/api/drivers",
                    "no-van",
                    json!({"driver_id": "no-van", "name": "Sans camion",
            "vehicles": ["ghost"], "max_shift_minutes": 300}),
                )
                .await,
            "vehicle_not_found",
        ),
    ];
    for ((status, err), code) in refused {
        assert_eq!((status, err["code"].as_str()), (StatusCode::NOT_FOUND, Some(code)), "{err}");
    }
    assert_eq!(support::settled(&js).await, before, "refused references stored nothing");

    // The fleet: a refrigerated van and a plain one, each with a driver free that day.
    for (id, kg, chilled) in [("frigo", 600, 200), ("camion", 900, 0)] {
        let body = json!({"vehicle_id": id, "name": id, "capacity_kg": kg, "chilled_capacity_kg": chilled,
            "home_site": "gerland"});
        assert_eq!(admin.post("/api/vehicles", id, body).await.0, StatusCode::CREATED);
    }
    for (id, vehicle) in [("monique", "frigo"), ("paul", "camion")] {
        let body = json!({"driver_id": id, "name": id, "vehicles": [vehicle], "max_shift_minutes": 480});
        assert_eq!(admin.post("/api/drivers", id, body).await.0, StatusCode::CREATED);
        let free = json!({"date": day, "slots": [{"from": "08:00:00", "to": "16:00:00"}]});
        let (status, reply) = admin.put(&format!("/api/drivers/{id}/availability"), &format!("free-{id}"), free).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }

    // The plan, made from everything acknowledged before it (no wait here): every job served
    // but the one too cold for the fleet, within windows.
    let (status, plan) =
        admin.post("/api/plans", "plan-1", json!({"site_id": "gerland", "date": day, "seconds": 0.5})).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    let (status, plan) = admin.get(&format!("/api/plans/gerland/{day}?min_seq={}", min_seq(&plan))).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["revision"], 1);
    assert_eq!(plan["unplanned"], json!([{"job_id": "pk-glaces", "reason": "no_refrigerated_vehicle"}]), "{plan}");
    let routes = plan["routes"].clone();
    for job in ["pk-lidl", "pk-ferme", delivery.as_str()] {
        let s = stop(route_of(&routes, job), job).unwrap();
        assert!(s["opens"].as_str() <= s["arrival"].as_str() && s["arrival"].as_str() <= s["closes"].as_str(), "{s}");
        assert!(s["geo"].as_str().unwrap().starts_with("geo:"), "{s}");
    }
    assert_eq!(route_of(&routes, &delivery)["vehicle_id"], "frigo", "chilled parcels ride the refrigerated van");
    assert_eq!(stop(route_of(&routes, "pk-lidl"), "pk-lidl").unwrap()["address"], "1 rue lidl");

    // Each driver sees their own routes only, and acts on their own only.
    let monique = api(&["--role", "driver", "--scope", "monique"]);
    let paul = api(&["--role", "driver", "--scope", "paul"]);
    let (_, mine) = monique.get(&format!("/api/routes?date={day}")).await;
    assert!(
        mine.as_array().unwrap().iter().all(|r| r["driver_id"] == "monique") && !mine.as_array().unwrap().is_empty()
    );
    let (status, _) = monique.get(&format!("/api/routes?date={day}&driver_id=paul")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let driver_of = |job: &str| if route_of(&routes, job)["driver_id"] == "monique" { &monique } else { &paul };
    let other_of = |job: &str| if route_of(&routes, job)["driver_id"] == "monique" { &paul } else { &monique };
    let path = |job: &str, action: &str| {
        format!("/api/routes/{}/stops/{job}/{action}", route_of(&routes, job)["route_id"].as_str().unwrap())
    };
    let (status, err) = other_of("pk-lidl").post(&path("pk-lidl", "arrive"), "steal", json!({})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{err}");
    let later = chrono::Utc::now() + chrono::Duration::hours(2);
    let (status, err) = act_at(driver_of("pk-lidl"), &path("pk-lidl", "arrive"), "ahead", json!({}), later).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("occurred_in_future")));
    // Nor before the route's day: a phone whose clock says yesterday (here, not in UTC).
    let route_day = chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d").unwrap();
    let yesterday = calendar.start_of(route_day) - chrono::Duration::minutes(1);
    let (status, err) = act_at(driver_of("pk-lidl"), &path("pk-lidl", "arrive"), "before", json!({}), yesterday).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("occurred_before_route_day")),
        "{err}"
    );

    // At Lidl, recorded offline an hour ago: arrived, and only 90 of the 120 kg were there.
    let earlier = chrono::Utc::now() - chrono::Duration::hours(1);
    let lidl = driver_of("pk-lidl");
    let (status, reply) = act_at(lidl, &path("pk-lidl", "arrive"), "arr-lidl", json!({}), earlier).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let done_at = earlier + chrono::Duration::minutes(10);
    let (status, reply) =
        act_at(lidl, &path("pk-lidl", "complete"), "done-lidl", json!({"kg": 90, "chilled_kg": 30}), done_at).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    // The farm was closed.
    let (status, err) = driver_of("pk-ferme").post(&path("pk-ferme", "fail"), "fail-x", json!({"reason": " "})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("reason_required")));
    let (status, reply) =
        driver_of("pk-ferme").post(&path("pk-ferme", "fail"), "fail-ferme", json!({"reason": "fermé"})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    // The relay point receives its parcels.
    let dropoff = driver_of(&delivery);
    // Unloading took 45 minutes: the yoghurts were out of the cold too long.
    let unloading = chrono::Utc::now() - chrono::Duration::minutes(45);
    let (status, reply) = act_at(dropoff, &path(&delivery, "arrive"), "arr-rp", json!({}), unloading).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, reply) = dropoff.post(&path(&delivery, "complete"), "done-rp", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");

    // Every stop done, the drivers end their routes.
    let mut last = Value::Null;
    for route in routes.as_array().unwrap() {
        let who = if route["driver_id"] == "monique" { &monique } else { &paul };
        let id = route["route_id"].as_str().unwrap();
        let (status, ended) = who.post(&format!("/api/routes/{id}/end"), &format!("end-{id}"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{ended}");
        last = ended;
    }

    // What the drivers did, as recorded: real times, actual kilograms, reasons.
    let (_, plan) = admin.get(&format!("/api/plans/gerland/{day}?min_seq={}", min_seq(&last))).await;
    let lidl_stop = stop(route_of(&plan["routes"], "pk-lidl"), "pk-lidl").unwrap().clone();
    assert_eq!((lidl_stop["status"].as_str(), lidl_stop["actual_kg"].as_f64()), (Some("completed"), Some(90.0)));
    assert_eq!(lidl_stop["partial"], true);
    let arrived = chrono::DateTime::parse_from_rfc3339(lidl_stop["arrived_at"].as_str().unwrap()).unwrap();
    assert!((arrived.timestamp() - earlier.timestamp()).abs() <= 1, "the device's time is kept: {lidl_stop}");
    let ferme_stop = stop(route_of(&plan["routes"], "pk-ferme"), "pk-ferme").unwrap().clone();
    assert_eq!((ferme_stop["status"].as_str(), ferme_stop["fail_reason"].as_str()), (Some("failed"), Some("fermé")));
    assert!(route_of(&plan["routes"], "pk-lidl")["started_at"].is_string(), "arriving started the route");

    let cold = stop(route_of(&plan["routes"], &delivery), &delivery).unwrap()["cold_chain_minutes"].as_u64();
    assert!(cold.is_some_and(|m| m >= 45), "{plan}");
    // The yoghurt lot (donation d1's line 2) is flagged for inspection, the pasta is not.
    let yoghurt = wait_for(&wh, "/api/lots/d1-l2", |l| !l["inspection"].as_array().unwrap().is_empty()).await;
    assert!(yoghurt["inspection"][0].as_str().unwrap().starts_with("cold chain"), "{yoghurt}");
    let (_, pasta) = wh.get("/api/lots/d1-l1").await;
    assert_eq!(pasta["inspection"], json!([]), "ambient goods are not flagged: {pasta}");

    // The parcels are at the relay point; the collection waits to be checked in at the warehouse.
    for id in ["hh-1", "hh-2"] {
        wait_for(&a, &format!("/api/parcels/{id}-{day}"), |p| p["status"] == "at_relay").await;
    }
    let incoming = wait_for(&wh, "/api/donations/incoming?site_id=gerland", |v| {
        v.as_array().is_some_and(|a| a.iter().any(|d| d["job_id"] == "pk-lidl"))
    })
    .await;
    let collected = incoming.as_array().unwrap().iter().find(|d| d["job_id"] == "pk-lidl").unwrap().clone();
    assert_eq!((collected["donor_id"].as_str(), collected["kg"].as_f64()), (Some("lidl"), Some(90.0)), "{collected}");
    assert!(incoming.as_array().unwrap().iter().all(|d| d["job_id"] != "pk-ferme"), "nothing came from the farm");
    // Checking it in records it as a donation like any other, and it no longer waits.
    let check_in = json!({"donation_id": collected["donation_id"], "donor_id": "lidl", "site_id": "gerland",
        "lines": [{"product_id": "pasta", "quantity": 100, "weight_g": 60000, "date": in_days(300)}]});
    let (status, reply) = wh.post("/api/donations", "check-in", check_in).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let (_, incoming) = wh.get(&format!("/api/donations/incoming?min_seq={}", min_seq(&reply))).await;
    assert_eq!(incoming, json!([]));

    // An urgent pickup comes in: the re-plan serves it and moves nothing done or on the road.
    let (status, reply) = admin.post("/api/jobs", "pk-urgent", pickup("pk-urgent", "ferme", 50, 0)).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let (status, replan) =
        admin.post("/api/plans", "plan-2", json!({"site_id": "gerland", "date": day, "seconds": 0.5})).await;
    assert_eq!(status, StatusCode::OK, "{replan}");
    let (_, after) = admin.get(&format!("/api/plans/gerland/{day}?min_seq={}", min_seq(&replan))).await;
    assert_eq!(after["revision"], 2, "{after}");
    for job in ["pk-lidl", "pk-ferme", delivery.as_str()] {
        let (before, now) = (route_of(&plan["routes"], job), route_of(&after["routes"], job));
        assert_eq!(before, now, "a route driven is kept as it was");
    }
    let urgent = route_of(&after["routes"], "pk-urgent");
    assert!(urgent["started_at"].is_null(), "{urgent}");
    assert_eq!(after["unplanned"], json!([{"job_id": "pk-glaces", "reason": "no_refrigerated_vehicle"}]));
    assert!(foodaid.terminate().success());
}
