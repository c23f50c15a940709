//! Distribution through HTTP: households kept by their own association, their personal data
//! sealed outside the event streams and erased for good, duplicates flagged across associations.

mod support;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{in_days, min_seq, run, token, wait_for, Api, Foodaid};
use testkit::TestNats;

/// Every message of the distribution stream, as text.
async fn stream_texts(nats: &TestNats) -> Vec<String> {
    let js = async_nats::jetstream::new(nats.client().await);
    let mut stream = js.get_stream("distribution").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut messages = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap()
        .messages()
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(m) = messages.next().await {
        let m = m.unwrap();
        out.push(String::from_utf8_lossy(&m.payload).into_owned());
        if m.info().unwrap().stream_sequence >= last {
            break;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn households_are_private_to_their_association_sealed_and_erased_for_good() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let admin = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "admin"]));
    for (id, commune) in [("asso-a", "Vaulx-en-Velin"), ("asso-b", "Vénissieux")] {
        let body = json!({"association_id": id, "name": format!("Association {id}"), "commune": commune});
        assert_eq!(admin.post("/api/associations", id, body).await.0, StatusCode::CREATED);
        let relay = json!({"relay_id": format!("rp-{id}"), "name": "Local", "commune": commune, "cold_storage": true});
        let (status, _) = admin.post(&format!("/api/associations/{id}/relay-points"), &format!("rp-{id}"), relay).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let a = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "association", "--scope", "asso-a"]));
    let b = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "association", "--scope", "asso-b"]));

    let household = |association: &str, first: &str, last: &str| {
        json!({"association_id": association, "relay_point_id": format!("rp-{association}"),
               "composition": {"adults": 1, "teens": 0, "children": 2, "infants": 1},
               "diet": {"no_pork": true, "allergies": ["peanuts"]}, "consent": true,
               "personal": {"first_name": first, "last_name": last, "birth_date": "1987-03-02",
                            "phone": "06 12 34 56 78", "address": "12 rue des Lilas, Vaulx-en-Velin"}})
    };
    let mut body = household("asso-a", "Aïcha", "Benali");
    body["household_id"] = json!("hh-1");
    let (status, reply) = a.post("/api/households", "hh-1", body).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    // An association registers only its own households.
    let (status, err) = a.post("/api/households", "hh-x", household("asso-b", "X", "Y")).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    let mut bad = household("asso-a", "X", "Y");
    bad["relay_point_id"] = json!("rp-asso-b");
    let (status, err) = a.post("/api/households", "hh-y", bad).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::NOT_FOUND, Some("relay_point_not_found")));
    // The same people registered by another association, spelt a little differently.
    let mut body = household("asso-b", " aïcha", "BENALI ");
    body["household_id"] = json!("hh-2");
    let (status, reply_b) = b.post("/api/households", "hh-2", body).await;
    assert_eq!(status, StatusCode::CREATED, "{reply_b}");

    let (status, seen) = a.get(&format!("/api/households/hh-1?min_seq={}", min_seq(&reply_b))).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["personal"]["last_name"], "Benali");
    assert_eq!(seen["possible_duplicates"], json!(["asso-b"]), "flagged, never merged, never shown");
    assert_eq!(seen["diet"]["allergies"], json!(["peanuts"]));
    let (status, err) = b.get("/api/households/hh-1").await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::NOT_FOUND, Some("household_not_found")));
    let (status, _) =
        b.send(reqwest::Method::PATCH, "/api/households/hh-1", Some("u1"), Some(json!({"diet": {}}))).await.unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, listed) = a.get("/api/households").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);

    // Eligibility by the association's own rule: 8 € a day, 90 days.
    let rule = json!({"threshold_cents": 800, "validity_days": 90});
    assert_eq!(
        admin
            .send(reqwest::Method::PUT, "/api/associations/asso-a/eligibility", Some("rule"), Some(rule))
            .await
            .unwrap()
            .0,
        StatusCode::OK
    );
    let (status, assessed) = a
        .post(
            "/api/households/hh-1/assessments",
            "as-1",
            json!({"resources_cents": 140000, "charges_cents": 110000, "assessed_on": "2026-11-23"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{assessed}");
    let assessment = &assessed["events"][0]["data"];
    assert_eq!(
        (
            assessment["per_person_per_day_cents"].as_i64(),
            assessment["threshold_cents"].as_i64(),
            assessment["eligible"].as_bool()
        ),
        (Some(246), Some(800), Some(true))
    );
    assert_eq!(assessment["valid_until"], "2027-02-21");

    // Nothing identifying is in the events.
    let texts = stream_texts(&nats).await;
    assert!(texts.iter().any(|t| t.contains("household_registered")));
    for needle in ["Benali", "BENALI", "06 12 34 56 78", "Lilas", "1987-03-02"] {
        assert!(!texts.iter().any(|t| t.contains(needle)), "{needle} is in the stream");
    }
    let commit: Value = texts
        .iter()
        .filter_map(|t| serde_json::from_str::<Value>(t).ok())
        .find(|c| c["aggregate_id"] == "hh-1")
        .unwrap();
    let personal = &commit["events"][0]["data"]["personal"];
    let sealed = vault::Sealed {
        nonce: personal["nonce"].as_str().unwrap().to_owned(),
        ciphertext: personal["ciphertext"].as_str().unwrap().to_owned(),
    };
    let keys = vault::Vault::open(async_nats::jetstream::new(nats.client().await), 1).await.unwrap();
    assert!(keys.unseal("hh-1", &sealed).await.unwrap().is_some(), "the key opens it before erasure");

    // Erasure: the key is destroyed; the history stays and can no longer say who it was.
    let (status, erased) = a.delete("/api/households/hh-1", "erase-1").await;
    assert_eq!(status, StatusCode::OK, "{erased}");
    let (_, seen) = a.get(&format!("/api/households/hh-1?min_seq={}", min_seq(&erased))).await;
    assert_eq!((seen["erased"].as_bool(), &seen["personal"]), (Some(true), &Value::Null), "{seen}");
    assert_eq!(keys.unseal("hh-1", &sealed).await.unwrap(), None, "the stored ciphertext no longer opens");
    let (_, other) = b.get("/api/households/hh-2").await;
    assert_eq!(other["possible_duplicates"], json!([]), "the erased identity is forgotten too");
    let (status, err) = a.post("/api/households/hh-1/consent", "c-1", json!({"consent": false})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("household_erased")));

    // A replay rebuilds from the same events, and still cannot read them.
    run(dir.path(), Some(&url), &["replay", "all"]);
    let (status, seen) = a.get("/api/households/hh-1").await;
    assert_eq!(
        (status, seen["erased"].as_bool(), &seen["personal"]),
        (StatusCode::OK, Some(true), &Value::Null),
        "{seen}"
    );
    let (_, other) = b.get("/api/households/hh-2").await;
    assert_eq!(other["personal"]["last_name"], "BENALI", "other households are untouched");
    assert!(foodaid.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parcels_are_requested_for_eligible_households_once_a_day() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let admin = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "admin"]));
    for id in ["asso-a", "asso-b"] {
        let body = json!({"association_id": id, "name": id, "commune": "Lyon"});
        assert_eq!(admin.post("/api/associations", id, body).await.0, StatusCode::CREATED);
        let relay = json!({"relay_id": format!("rp-{id}"), "name": "Local", "commune": "Lyon"});
        assert_eq!(
            admin.post(&format!("/api/associations/{id}/relay-points"), &format!("rp-{id}"), relay).await.0,
            StatusCode::CREATED
        );
    }
    let a = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "association", "--scope", "asso-a"]));
    let b = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "association", "--scope", "asso-b"]));
    let body = json!({"household_id": "hh-1", "association_id": "asso-a", "relay_point_id": "rp-asso-a",
        "composition": {"adults": 2, "teens": 0, "children": 1, "infants": 0}, "consent": true,
        "personal": {"first_name": "Jean", "last_name": "Martin", "birth_date": "1970-01-01"}});
    assert_eq!(a.post("/api/households", "hh-1", body).await.0, StatusCode::CREATED);
    let day = (chrono::Utc::now() + chrono::Duration::days(2)).date_naive();

    // Not assessed yet: not eligible.
    let (status, err) = a.post("/api/parcels", "p0", json!({"household_id": "hh-1", "date": day})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("household_not_eligible")), "{err}");
    assert!(err["message"].as_str().unwrap().contains("not been assessed"), "{err}");
    let (status, _) = a
        .post("/api/households/hh-1/assessments", "as", json!({"resources_cents": 90000, "charges_cents": 70000}))
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, reply) =
        a.post("/api/parcels", "p1", json!({"household_id": "hh-1", "date": day, "emergency": true})).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let parcel_id = format!("hh-1-{day}");
    assert_eq!(reply["aggregate_id"], parcel_id.as_str());
    let (status, err) = a.post("/api/parcels", "p2", json!({"household_id": "hh-1", "date": day})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("parcel_already_requested")));
    let (status, err) = b.post("/api/parcels", "p3", json!({"household_id": "hh-1", "date": day})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).date_naive();
    let (status, err) = a.post("/api/parcels", "p4", json!({"household_id": "hh-1", "date": yesterday})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("date_in_past")));

    let (_, listed) = a.get(&format!("/api/parcels?date={day}&min_seq={}", min_seq(&reply))).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(
        (listed[0]["emergency"].as_bool(), listed[0]["relay_point_id"].as_str()),
        (Some(true), Some("rp-asso-a"))
    );
    let (status, _) = b.get(&format!("/api/parcels/{parcel_id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another association's parcel is not shown");
    let (status, cancelled) =
        a.post(&format!("/api/parcels/{parcel_id}/cancel"), "c1", json!({"reason": "déménagement"})).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    let (_, row) = a.get(&format!("/api/parcels/{parcel_id}?min_seq={}", min_seq(&cancelled))).await;
    assert_eq!((row["status"].as_str(), row["cancel_reason"].as_str()), (Some("cancelled"), Some("déménagement")));
    assert!(foodaid.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_composes_requested_parcels_from_donated_stock_and_reserves_them() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let admin = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "admin"]));
    let wh = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "warehouse"]));
    let site = json!({"site_id": "gerland", "name": "Gerland", "zones": [{"code": "A1", "storage": "ambient"}]});
    assert_eq!(admin.post("/api/sites", "site", site).await.0, StatusCode::CREATED);
    assert_eq!(
        wh.post("/api/donors", "donor", json!({"donor_id": "lidl", "kind": "retailer", "name": "Lidl"})).await.0,
        StatusCode::CREATED
    );
    for (id, group, traits) in [
        ("pasta", "starches", json!({})),
        ("ham", "meat_fish_eggs", json!({"meat": true, "pork": true})),
        ("tuna", "meat_fish_eggs", json!({"meat": true, "ready_to_eat": true})),
    ] {
        let body = json!({"product_id": id, "name": id, "food_group": group, "storage": "ambient", "date_kind": "ddm", "traits": traits});
        assert_eq!(wh.post("/api/products", id, body).await.0, StatusCode::CREATED);
    }
    let donation = json!({"donation_id": "d1", "donor_id": "lidl", "site_id": "gerland", "lines": [
        {"product_id": "pasta", "quantity": 40, "weight_g": 20000, "date": in_days(200), "lot_number": "P1"},
        {"product_id": "ham", "quantity": 10, "weight_g": 2000, "date": in_days(100)},
        {"product_id": "tuna", "quantity": 10, "weight_g": 1400, "date": in_days(300)}]});
    assert_eq!(wh.post("/api/donations", "d1", donation).await.0, StatusCode::CREATED);
    wait_for(&wh, "/api/lots", |v| v.as_array().is_some_and(|a| a.len() == 3)).await;

    let body = json!({"association_id": "asso-a", "name": "Asso A", "commune": "Lyon"});
    assert_eq!(admin.post("/api/associations", "asso-a", body).await.0, StatusCode::CREATED);
    let relay = json!({"relay_id": "rp-a", "name": "Local", "commune": "Lyon", "cold_storage": false});
    assert_eq!(admin.post("/api/associations/asso-a/relay-points", "rp-a", relay).await.0, StatusCode::CREATED);
    let a = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "association", "--scope", "asso-a"]));
    let day = in_days(2);
    for (id, diet) in [("hh-1", json!({"no_pork": true})), ("hh-2", json!({}))] {
        let body = json!({"household_id": id, "association_id": "asso-a", "relay_point_id": "rp-a",
            "composition": {"adults": 2, "teens": 0, "children": 1, "infants": 0}, "diet": diet, "consent": true,
            "personal": {"first_name": id, "last_name": "Famille", "birth_date": "1980-05-05"}});
        assert_eq!(a.post("/api/households", id, body).await.0, StatusCode::CREATED);
        let assess = json!({"resources_cents": 90000, "charges_cents": 70000});
        assert_eq!(
            a.post(&format!("/api/households/{id}/assessments"), &format!("as-{id}"), assess).await.0,
            StatusCode::OK
        );
        let (status, reply) =
            a.post("/api/parcels", &format!("p-{id}"), json!({"household_id": id, "date": day})).await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
    }

    let (status, err) = a.post("/api/waves", "w0", json!({"site_id": "gerland", "date": day})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    let (status, wave) = admin.post("/api/waves", "w1", json!({"site_id": "gerland", "date": day})).await;
    assert_eq!(status, StatusCode::OK, "{wave}");
    assert_eq!(wave["events"].as_array().unwrap().len(), 2, "{wave}");
    for id in ["hh-1", "hh-2"] {
        let (_, parcel) = a.get(&format!("/api/parcels/{id}-{day}?min_seq={}", min_seq(&wave))).await;
        assert_eq!(parcel["status"], "composed", "{parcel}");
        let lines = parcel["lines"].as_array().unwrap();
        assert!(lines.iter().any(|l| l["product_id"] == "pasta"), "{parcel}");
        if id == "hh-1" {
            assert!(lines.iter().all(|l| l["product_id"] != "ham"), "no pork for a no-pork household: {parcel}");
        }
        // The stock holds exactly what the parcel says, under the parcel's id.
        let (status, reservation) = wh.get(&format!("/api/reservations/{id}-{day}")).await;
        assert_eq!((status, reservation["status"].as_str()), (StatusCode::OK, Some("confirmed")), "{reservation}");
        let reserved: u64 =
            reservation["allocations"].as_array().unwrap().iter().map(|x| x["quantity"].as_u64().unwrap()).sum();
        let composed: u64 = lines.iter().map(|l| l["units"].as_u64().unwrap()).sum();
        assert_eq!(reserved, composed, "{reservation} {parcel}");
    }
    // The fair-share ledger, visible to every member: need and given per food group.
    let month = &day[..7];
    let (status, ledger) = a.get(&format!("/api/fair-share?month={month}&min_seq={}", min_seq(&wave))).await;
    assert_eq!(status, StatusCode::OK, "{ledger}");
    let starches = ledger.as_array().unwrap().iter().find(|r| r["food_group"] == "starches").expect("starches");
    assert_eq!(
        (starches["association_id"].as_str(), starches["commune"].as_str(), starches["parcels"].as_u64()),
        (Some("asso-a"), Some("Lyon"), Some(2))
    );
    // Two families of 2 adults and a child need 2 × (2 × 1750 + 1200) g of starches a week.
    assert_eq!(starches["need_g"].as_u64(), Some(9400));
    assert!(
        starches["given_g"].as_u64().unwrap() > 0 && starches["coverage_pct"].as_f64().unwrap() <= 100.0,
        "{starches}"
    );
    // A second run composes nothing new.
    let (_, again) = admin.post("/api/waves", "w2", json!({"site_id": "gerland", "date": day})).await;
    assert_eq!(again["events"], json!([]), "{again}");
    // hh-1's parcel goes the whole way: picked, shipped, at the relay point, collected.
    let parcel = format!("hh-1-{day}");
    for (path, who) in [("pick", &wh), ("ship", &wh), ("at-relay", &a), ("collected", &a)] {
        let (status, reply) = who.post(&format!("/api/parcels/{parcel}/{path}"), &format!("{path}-1"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{path}: {reply}");
    }
    let (status, err) = a.post(&format!("/api/parcels/{parcel}/cancel"), "c1", json!({})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("parcel_state")));
    let (_, row) = a.get(&format!("/api/parcels/{parcel}")).await;
    assert_eq!(row["status"], "collected", "{row}");
    // A recall of the pasta lot reaches the household that received it.
    let recall = json!({"recall_id": "rc-1", "product_id": "pasta", "lot_numbers": ["P1"], "reason": "corps étranger"});
    let (status, reply) = admin.post("/api/recalls", "rc-1", recall).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let (_, trace) = admin.get(&format!("/api/recalls/rc-1/trace?min_seq={}", min_seq(&reply))).await;
    let shipments = trace["shipments"].as_array().unwrap();
    assert!(
        shipments
            .iter()
            .any(|s| s["household"] == "hh-1" && s["reference"] == parcel.as_str() && s["relay_point_id"] == "rp-a"),
        "{trace}"
    );
    // Cancelling a composed parcel gives its stock back.
    let (status, cancelled) =
        a.post(&format!("/api/parcels/hh-2-{day}/cancel"), "c2", json!({"reason": "absent"})).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    wait_for(&wh, &format!("/api/reservations/hh-2-{day}"), |r| r["status"] == "released").await;
    assert!(foodaid.terminate().success());
}
