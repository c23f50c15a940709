//! Distribution through HTTP: households kept by their own association, their personal data
//! sealed outside the event streams and erased for good, duplicates flagged across associations.

mod support;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{eligible_household, in_days, min_seq, run, token, wait_for, Api, Foodaid};
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

    // Refused registrations and changes write nothing anywhere: no key nor identity in the
    // vault, and another association's household keeps its duplicate index as it was.
    let js = async_nats::jetstream::new(nats.client().await);
    let before = support::settled(&js).await;
    let mut nobody = household("asso-a", "Nobody", "Home");
    nobody["composition"] = json!({"adults": 0, "teens": 0, "children": 0, "infants": 0});
    let (status, err) = a.post("/api/households", "hh-empty", nobody).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_composition")));
    let mut taken = household("asso-b", "Someone", "Else");
    taken["household_id"] = json!("hh-1");
    let (status, err) = b.post("/api/households", "hh-1-again", taken).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("household_already_registered")));
    let change = json!({"composition": {"adults": 0, "teens": 0, "children": 1, "infants": 0},
        "personal": {"first_name": "Autre", "last_name": "Nom", "birth_date": "1990-01-01"}});
    let (status, err) = a.send(reqwest::Method::PATCH, "/api/households/hh-1", Some("u0"), Some(change)).await.unwrap();
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_composition")));
    assert_eq!(support::settled(&js).await, before, "refused commands wrote something");
    let (_, seen) = a.get("/api/households/hh-1").await;
    assert_eq!((&seen["possible_duplicates"], &seen["personal"]["first_name"]), (&json!(["asso-b"]), &json!("Aïcha")));

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
async fn a_spreadsheet_of_households_is_imported_whole_or_not_at_all() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let admin = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "admin"]));
    let body = json!({"association_id": "asso-a", "name": "Association A", "commune": "Vaulx-en-Velin"});
    assert_eq!(admin.post("/api/associations", "asso-a", body).await.0, StatusCode::CREATED);
    for (id, name) in [("rp-centre", "Centre social Peyri"), ("rp-mas", "Mas du Taureau")] {
        let relay = json!({"relay_id": id, "name": name, "commune": "Vaulx-en-Velin", "cold_storage": true});
        assert_eq!(admin.post("/api/associations/asso-a/relay-points", id, relay).await.0, StatusCode::CREATED);
    }
    let a = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "association", "--scope", "asso-a"]));
    let header =
        "Nom;Prénom;Date de naissance;Point relais;Adultes;Enfants;Sans porc;Allergies;Ressources;Charges;Consentement";
    let good = [
        "Diallo;Awa;14/03/1985;Centre social Peyri;2;1;oui;arachides;900;700;oui",
        "Martin;Luc;1970-01-02;rp-mas;1;0;non;;;;oui",
    ];

    // One bad line among good ones: every error listed with its line, nothing written.
    let csv = format!("{header}\n{}\nNguyen;;31/02/1990;Ailleurs;1;0;non;;;;oui\n{}\n", good[0], good[1]);
    let (status, err) = a.post("/api/households/import", "import-1", json!({"csv": csv})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_import")), "{err}");
    let found: Vec<(u64, &str)> = err["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(found, [(3, "invalid_date"), (3, "invalid_personal_data"), (3, "relay_point_not_found")], "{err}");
    let (_, listed) = a.get("/api/households").await;
    assert_eq!(listed, json!([]), "nothing half imported");

    // The corrected file: every household registered, and assessed where the file says how.
    let csv = format!("{header}\n{}\n{}\n", good[0], good[1]);
    let (status, reply) = a.post("/api/households/import", "import-2", json!({"csv": csv.clone()})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let types: Vec<&str> = reply["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["household_registered", "eligibility_assessed", "household_registered"], "{reply}");
    let (_, listed) = a.get(&format!("/api/households?min_seq={}", min_seq(&reply))).await;
    let mut people: Vec<(String, String, bool)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let name = h["personal"]["first_name"].as_str().unwrap().to_owned();
            (name, h["relay_point_id"].as_str().unwrap().to_owned(), h["assessment"]["eligible"] == true)
        })
        .collect();
    people.sort();
    assert_eq!(
        people,
        [("Awa".to_owned(), "rp-centre".to_owned(), true), ("Luc".to_owned(), "rp-mas".to_owned(), false)]
    );
    let awa = listed.as_array().unwrap().iter().find(|h| h["personal"]["first_name"] == "Awa").unwrap();
    assert_eq!(awa["diet"]["allergies"], json!(["peanuts"]));
    assert_eq!(awa["composition"]["children"], 1);

    // The same import retried (its answer was lost): the first answer again.
    let (status, retried) = a.post("/api/households/import", "import-2", json!({"csv": csv.clone()})).await;
    assert_eq!((status, retried["duplicate"].as_bool()), (StatusCode::OK, Some(true)), "{retried}");
    assert_eq!(retried["events"], reply["events"]);
    // Luc asks to be forgotten; then the same file is sent again by mistake: nobody is
    // registered twice, and Luc stays erased.
    let luc = listed.as_array().unwrap().iter().find(|h| h["personal"]["first_name"] == "Luc").unwrap();
    let path = format!("/api/households/{}", luc["household_id"].as_str().unwrap());
    let (status, erased) = a.send(reqwest::Method::DELETE, &path, Some("forget-luc"), None).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{erased}");
    let (status, again) = a.post("/api/households/import", "import-3", json!({"csv": csv})).await;
    assert_eq!((status, again["events"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "{again}");
    let (_, listed) = a.get(&format!("/api/households?min_seq={}", min_seq(&erased))).await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let luc = listed.as_array().unwrap().iter().find(|h| h["household_id"] == luc["household_id"]).unwrap();
    assert_eq!((luc["erased"].as_bool(), &luc["personal"]), (Some(true), &Value::Null), "{luc}");
    // An association imports into its own records only.
    let (status, _) =
        a.post("/api/households/import", "import-4", json!({"association_id": "asso-b", "csv": "x"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
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
    let day = in_days(2);

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
    let yesterday = in_days(-1);
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
    // A day's list at once: checked whole first, so one household not eligible stops them all.
    for (id, assessed) in [("hh-2", true), ("hh-3", false)] {
        let body = json!({"household_id": id, "association_id": "asso-a", "relay_point_id": "rp-asso-a",
            "composition": {"adults": 1, "teens": 0, "children": 0, "infants": 0}, "consent": true,
            "personal": {"first_name": id, "last_name": "Martin", "birth_date": "1971-01-01"}});
        assert_eq!(a.post("/api/households", id, body).await.0, StatusCode::CREATED);
        if assessed {
            let assess = json!({"resources_cents": 90000, "charges_cents": 70000});
            assert_eq!(
                a.post(&format!("/api/households/{id}/assessments"), &format!("as-{id}"), assess).await.0,
                StatusCode::OK
            );
        }
    }
    let later = in_days(9);
    let list = json!({"date": later, "household_ids": ["hh-1", "hh-2", "hh-3"]});
    let (status, err) = a.post("/api/parcel-requests", "list-1", list).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("parcel_requests_rejected")));
    assert!(err["message"].as_str().unwrap().contains("line 3 (hh-3): household_not_eligible"), "{err}");
    let (status, _) = a.get(&format!("/api/parcels/hh-1-{later}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing half requested");
    let list = json!({"date": later, "household_ids": ["hh-1", "hh-2"], "relay_point_id": "rp-asso-b"});
    let (status, err) = a.post("/api/parcel-requests", "list-2", list).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "another association's relay point: {err}");
    let list = json!({"date": later, "household_ids": ["hh-1", "hh-2"]});
    let (status, requested) = a.post("/api/parcel-requests", "list-3", list).await;
    assert_eq!((status, requested["events"].as_array().map(Vec::len)), (StatusCode::OK, Some(2)), "{requested}");
    let (_, listed) = a.get(&format!("/api/parcels?date={later}&min_seq={}", min_seq(&requested))).await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    let (status, cancelled) =
        a.post(&format!("/api/parcels/{parcel_id}/cancel"), "c1", json!({"reason": "déménagement"})).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    let (_, row) = a.get(&format!("/api/parcels/{parcel_id}?min_seq={}", min_seq(&cancelled))).await;
    assert_eq!((row["status"].as_str(), row["cancel_reason"].as_str()), (Some("cancelled"), Some("déménagement")));
    assert!(foodaid.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_composes_requested_parcels_from_donated_stock_and_reserves_them() {
    let meat = |id: &str, traits: Value| {
        let mut p = product(id, "meat_fish_eggs", "ambient", "ddm");
        p["traits"] = traits;
        p
    };
    let products = [
        product("pasta", "starches", "ambient", "ddm"),
        meat("ham", json!({"meat": true, "pork": true})),
        meat("tuna", json!({"meat": true, "ready_to_eat": true})),
    ];
    let lines = json!([
        {"product_id": "pasta", "quantity": 40, "weight_g": 20000, "date": in_days(200), "lot_number": "P1"},
        {"product_id": "ham", "quantity": 10, "weight_g": 2000, "date": in_days(100)},
        {"product_id": "tuna", "quantity": 10, "weight_g": 1400, "date": in_days(300)}]);
    let c = collective(&products, lines, "Lyon").await;
    let (admin, wh, a) = (&c.admin, &c.wh, &c.a);
    let day = in_days(2);
    let family = json!({"adults": 2, "teens": 0, "children": 1, "infants": 0});
    for (id, diet) in [("hh-1", json!({"no_pork": true})), ("hh-2", json!({}))] {
        eligible_household(a, id, family.clone(), diet).await;
        let (status, reply) =
            a.post("/api/parcels", &format!("p-{id}"), json!({"household_id": id, "date": day})).await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
    }

    let (status, err) = a.post("/api/waves", "w0", json!({"site_id": "gerland", "date": day})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    // This association distributes every fortnight: its parcels cover 14 days of needs.
    let (status, reply) = a.put("/api/associations/asso-a/parcel-days", "fortnight", json!({"days": 14})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, err) = a.put("/api/associations/asso-a/parcel-days", "bad", json!({"days": 40})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_parcel_days")));
    // No wait here: the wave itself waits until its read models hold every acknowledged change
    // (the fortnight just set among them).
    let (status, wave) = admin.post("/api/waves", "w1", json!({"site_id": "gerland", "date": day})).await;
    assert_eq!(status, StatusCode::OK, "{wave}");
    assert_eq!(wave["events"].as_array().unwrap().len(), 2, "{wave}");
    // The warehouse's pick list: the whole day's parcels, every association's; a day is needed.
    let (status, day_list) = wh.get(&format!("/api/parcels?date={day}&min_seq={}", min_seq(&wave))).await;
    assert_eq!(status, StatusCode::OK, "{day_list}");
    let ids: Vec<&str> = day_list.as_array().unwrap().iter().map(|p| p["parcel_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{day_list}");
    assert!(day_list.as_array().unwrap().iter().all(|p| p["status"] == "composed"), "{day_list}");
    let (status, err) = wh.get("/api/parcels").await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("date_required")));
    let (status, _) = wh.get("/api/parcels?association_id=asso-a").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the warehouse lists days, not an association's records");
    let (_, association) = a.get(&format!("/api/associations/asso-a?min_seq={}", min_seq(&reply))).await;
    assert_eq!(association["parcel_days"], 14);
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
    // Two families of 2 adults and a child need 2 × (2 × 1750 + 1200) g of starches a week, and
    // a parcel here covers two weeks.
    assert_eq!(starches["need_g"].as_u64(), Some(2 * 9400));
    assert!(
        starches["given_g"].as_u64().unwrap() > 0 && starches["coverage_pct"].as_f64().unwrap() <= 100.0,
        "{starches}"
    );
    // A second run composes nothing new.
    let (_, again) = admin.post("/api/waves", "w2", json!({"site_id": "gerland", "date": day})).await;
    assert_eq!(again["events"], json!([]), "{again}");
    // hh-1's parcel goes the whole way: picked, shipped, at the relay point, collected.
    let parcel = format!("hh-1-{day}");
    let mut last = Value::Null;
    for (path, who) in [("pick", &wh), ("ship", &wh), ("at-relay", &a), ("collected", &a)] {
        let (status, reply) = who.post(&format!("/api/parcels/{parcel}/{path}"), &format!("{path}-1"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{path}: {reply}");
        last = reply;
    }
    let (status, err) = a.post(&format!("/api/parcels/{parcel}/cancel"), "c1", json!({})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("parcel_state")));
    let (_, row) = a.get(&format!("/api/parcels/{parcel}?min_seq={}", min_seq(&last))).await;
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
    wait_for(wh, &format!("/api/reservations/hh-2-{day}"), |r| r["status"] == "released").await;
    assert!(c.foodaid.terminate().success());
}

/// What the test computes from a parcel's lines: grams per food group and fresh grams.
fn tally(parcel: &Value, grams: &mut std::collections::BTreeMap<String, u64>, fresh: &mut u64) {
    for l in parcel["lines"].as_array().unwrap() {
        let g = l["grams"].as_u64().unwrap();
        *grams.entry(l["food_group"].as_str().unwrap().to_owned()).or_default() += g;
        if l["food_group"] == "fruit_vegetables" || l["date_kind"] == "dlc" {
            *fresh += g;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parcels_nobody_collected_come_back_or_go_to_another_household_and_reports_count_what_was_handed_over() {
    let products = [
        product("pasta", "starches", "ambient", "ddm"),
        product("yoghurt", "dairy", "chilled", "dlc"),
        product("apples", "fruit_vegetables", "ambient", "none"),
    ];
    let lines = json!([
        {"product_id": "pasta", "quantity": 40, "weight_g": 20000, "date": in_days(200), "lot_number": "P1"},
        {"product_id": "yoghurt", "quantity": 20, "weight_g": 10000, "date": in_days(10), "lot_number": "Y1",
         "temperature_c": 3.0},
        {"product_id": "apples", "quantity": 30, "weight_g": 30000}]);
    let c = collective(&products, lines, "Vaulx-en-Velin").await;
    let (admin, wh, a) = (&c.admin, &c.wh, &c.a);
    let body = json!({"association_id": "asso-b", "name": "B", "commune": "Bron"});
    assert_eq!(admin.post("/api/associations", "asso-b", body).await.0, StatusCode::CREATED);
    let b = c.api(&["--role", "association", "--scope", "asso-b"]);
    // The relay point opens on the distribution day's weekday only.
    let day = in_days(2);
    let weekday = chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d").unwrap().format("%a").to_string();
    let opening = json!({"opening": [{"day": weekday, "opens": "14:00:00", "closes": "17:30:00"}]});
    let (status, reply) = a.put("/api/associations/asso-a/relay-points/rp-a/opening", "open", opening).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (_, association) = a.get(&format!("/api/associations/asso-a?min_seq={}", min_seq(&reply))).await;
    assert_eq!(association["relay_points"][0]["opening"][0]["closes"], "17:30:00", "{association}");

    let people = [
        ("hh-1", json!({"adults": 2, "teens": 0, "children": 1, "infants": 0})),
        ("hh-2", json!({"adults": 1, "teens": 0, "children": 0, "infants": 1})),
        ("hh-3", json!({"adults": 1, "teens": 1, "children": 0, "infants": 0})),
        ("hh-4", json!({"adults": 1, "teens": 0, "children": 2, "infants": 0})),
    ];
    for (id, composition) in people {
        eligible_household(a, id, composition, json!({})).await;
    }
    let (status, err) = a.post("/api/parcels", "closed", json!({"household_id": "hh-1", "date": in_days(3)})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("relay_point_closed")), "{err}");
    for id in ["hh-1", "hh-2", "hh-3"] {
        let (status, reply) =
            a.post("/api/parcels", &format!("p-{id}"), json!({"household_id": id, "date": day})).await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
    }
    let (status, wave) = admin.post("/api/waves", "w1", json!({"site_id": "gerland", "date": day})).await;
    assert_eq!(status, StatusCode::OK, "{wave}");
    let parcel = |id: &str| format!("{id}-{day}");
    let mut rows = std::collections::BTreeMap::new();
    for id in ["hh-1", "hh-2", "hh-3"] {
        let (_, row) = a.get(&format!("/api/parcels/{}?min_seq={}", parcel(id), min_seq(&wave))).await;
        assert_eq!(row["reservations"], json!([parcel(id)]), "{row}");
        assert!(row["lines"].as_array().unwrap().iter().any(|l| l["product_id"] == "yoghurt"), "{row}");
        rows.insert(id, row);
    }
    let units = |id: &str, product: &str| -> u64 {
        rows[id]["lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["product_id"] == product)
            .map(|l| l["units"].as_u64().unwrap())
            .sum()
    };
    // hh-1 collects; hh-2 and hh-3 do not come.
    for (id, steps) in [
        ("hh-1", ["pick", "ship", "at-relay", "collected"]),
        ("hh-2", ["pick", "ship", "at-relay", "not-collected"]),
        ("hh-3", ["pick", "ship", "at-relay", "not-collected"]),
    ] {
        for step in steps {
            let who = if matches!(step, "pick" | "ship") { &wh } else { &a };
            let (status, reply) =
                who.post(&format!("/api/parcels/{}/{step}", parcel(id)), &format!("{step}-{id}"), json!({})).await;
            assert_eq!(status, StatusCode::OK, "{id} {step}: {reply}");
        }
    }
    // hh-2's parcel comes back: pasta and apples go back on the shelf, yoghurts are thrown away.
    let (status, err) = a.post(&format!("/api/parcels/{}/return", parcel("hh-2")), "r0", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the warehouse takes it back: {err}");
    let (status, returned) = wh.post(&format!("/api/parcels/{}/return", parcel("hh-2")), "r1", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{returned}");
    let (status, err) = wh.post(&format!("/api/parcels/{}/return", parcel("hh-1")), "r2", json!({})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("parcel_state")), "{err}");
    // hh-3's parcel goes to hh-4 instead, by its own association only.
    let (status, err) =
        b.post(&format!("/api/parcels/{}/redistribute", parcel("hh-3")), "x", json!({"household_id": "hh-4"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    let (status, redistributed) =
        a.post(&format!("/api/parcels/{}/redistribute", parcel("hh-3")), "rd", json!({"household_id": "hh-4"})).await;
    assert_eq!(status, StatusCode::OK, "{redistributed}");

    let (_, pasta) = wh.get(&format!("/api/lots/d1-l1?min_seq={}", min_seq(&returned))).await;
    let gone = units("hh-1", "pasta") + units("hh-3", "pasta");
    assert_eq!((pasta["on_hand"].as_u64(), pasta["shipped"].as_u64()), (Some(40 - gone), Some(gone)), "{pasta}");
    assert_eq!(pasta["available"].as_u64(), Some(40 - gone));
    let (_, yoghurt) = wh.get("/api/lots/d1-l2").await;
    assert_eq!(yoghurt["written_off"].as_u64(), Some(units("hh-2", "yoghurt")), "{yoghurt}");
    // A recall of the yoghurts finds who ate them: hh-1, and hh-4 rather than hh-3.
    let recall = json!({"recall_id": "rc-y", "product_id": "yoghurt", "lot_numbers": ["Y1"], "reason": "Listeria"});
    let (status, reply) = admin.post("/api/recalls", "rc-y", recall).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    // The redirect reaches stock through a saga: wait for the trace to show it.
    let trace = wait_for(admin, &format!("/api/recalls/rc-y/trace?min_seq=stock:{}", reply["seq"]), |t| {
        t["shipments"].as_array().is_some_and(|s| s.iter().any(|x| x["redirected_from"] == "hh-3"))
    })
    .await;
    let by_reference = |id: &str| {
        trace["shipments"].as_array().unwrap().iter().find(|s| s["reference"] == parcel(id)).cloned().unwrap()
    };
    assert_eq!(by_reference("hh-1")["household"], "hh-1");
    assert!(by_reference("hh-2")["returned_at"].is_string(), "{trace}");
    let hh3 = by_reference("hh-3");
    assert_eq!((hh3["household"].as_str(), hh3["redirected_from"].as_str()), (Some("hh-4"), Some("hh-3")), "{trace}");
    assert_eq!(trace["units_shipped"].as_u64(), Some(units("hh-1", "yoghurt") + units("hh-3", "yoghurt")));

    // The month's report: what reached households (hh-1, and hh-3's parcel through hh-4).
    let month = &day[..7];
    let (status, report) = a.get(&format!("/api/reports?month={month}&min_seq={}", min_seq(&redistributed))).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let rows_out = report.as_array().unwrap();
    assert_eq!(rows_out.len(), 1, "{report}");
    let r = &rows_out[0];
    assert_eq!(
        (r["association_id"].as_str(), r["commune"].as_str(), r["parcels"].as_u64(), r["not_collected"].as_u64()),
        (Some("asso-a"), Some("Vaulx-en-Velin"), Some(2), Some(2))
    );
    assert_eq!(r["households"].as_u64(), Some(2));
    assert_eq!(r["people"], json!({"adults": 3, "teens": 0, "children": 3, "infants": 0, "total": 6}), "{r}");
    let (mut grams, mut fresh) = (std::collections::BTreeMap::new(), 0);
    tally(&rows["hh-1"], &mut grams, &mut fresh);
    tally(&rows["hh-3"], &mut grams, &mut fresh);
    let total: u64 = grams.values().sum();
    for (group, g) in &grams {
        assert_eq!(r["kg_by_group"][group].as_f64(), Some(*g as f64 / 1000.0), "{group}: {r}");
    }
    assert_eq!(r["kg_total"].as_f64(), Some(total as f64 / 1000.0));
    assert_eq!(r["meals"].as_u64(), Some(total / 500), "500 g a meal (config)");
    assert_eq!(r["fresh_pct"].as_f64(), Some((1000.0 * fresh as f64 / total as f64).round() / 10.0));
    let coverage = r["need_coverage_pct"].as_f64().unwrap();
    assert!(coverage > 0.0 && coverage < 100.0, "baby food and more were short: {r}");
    // As CSV, for the funder's spreadsheet.
    let (status, content_type, csv) = a.get_text(&format!("/api/reports/csv?month={month}")).await;
    assert_eq!((status, content_type.as_str()), (StatusCode::OK, "text/csv; charset=utf-8"));
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("month,association_id,commune,parcels,not_collected,households,adults,teens,children,infants,people,kg_starches,"), "{csv}");
    assert!(lines[1].starts_with(&format!("{month},asso-a,Vaulx-en-Velin,2,2,2,3,0,3,0,6,")), "{csv}");
    assert!(!csv.contains("hh-"), "no household in a report");
    // Another association sees nothing of it; the coordinator sees everything.
    let (_, theirs) = b.get(&format!("/api/reports?month={month}")).await;
    assert_eq!(theirs, json!([]));
    let (status, _) = b.get(&format!("/api/reports?month={month}&association_id=asso-a")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, all) = admin.get(&format!("/api/reports?month={month}")).await;
    assert_eq!(all, report);
    assert!(c.foodaid.terminate().success());
}

/// A collective ready to distribute: site `gerland` (an ambient and a chilled zone) with donor
/// `lidl`'s donation `d1` of `lines` received and made into lots; association `asso-a` in
/// `commune`, with relay point `rp-a` (cold storage, open every day).
struct Collective {
    admin: Api,
    wh: Api,
    a: Api,
    foodaid: Foodaid,
    dir: tempfile::TempDir,
    url: String,
    _nats: TestNats,
}

impl Collective {
    /// A caller with a token made by the platform's own command.
    fn api(&self, args: &[&str]) -> Api {
        Api::new(&self.foodaid.http, &token(self.dir.path(), Some(&self.url), args))
    }
}

/// A product definition: ambient or chilled, with a use-by, best-before or no date.
fn product(id: &str, group: &str, storage: &str, date_kind: &str) -> Value {
    json!({"product_id": id, "name": id, "food_group": group, "storage": storage, "date_kind": date_kind})
}

async fn collective(products: &[Value], lines: Value, commune: &str) -> Collective {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let admin = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "admin"]));
    let wh = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "warehouse"]));
    let a = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "association", "--scope", "asso-a"]));
    let site = json!({"site_id": "gerland", "name": "Gerland",
        "zones": [{"code": "A1", "storage": "ambient"}, {"code": "F1", "storage": "chilled"}]});
    assert_eq!(admin.post("/api/sites", "site", site).await.0, StatusCode::CREATED);
    let donor = json!({"donor_id": "lidl", "kind": "retailer", "name": "Lidl"});
    assert_eq!(wh.post("/api/donors", "donor", donor).await.0, StatusCode::CREATED);
    for body in products {
        let id = body["product_id"].as_str().unwrap();
        assert_eq!(wh.post("/api/products", id, body.clone()).await.0, StatusCode::CREATED);
    }
    let count = lines.as_array().unwrap().len();
    let donation = json!({"donation_id": "d1", "donor_id": "lidl", "site_id": "gerland", "lines": lines});
    let (status, reply) = wh.post("/api/donations", "d1", donation).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    // Lots are made by a reactor: no sequence to wait on.
    wait_for(&wh, "/api/lots", |v| v.as_array().is_some_and(|a| a.len() == count)).await;
    let body = json!({"association_id": "asso-a", "name": "Asso A", "commune": commune});
    assert_eq!(admin.post("/api/associations", "asso-a", body).await.0, StatusCode::CREATED);
    let relay = json!({"relay_id": "rp-a", "name": "Local", "commune": commune, "cold_storage": true});
    assert_eq!(admin.post("/api/associations/asso-a/relay-points", "rp-a", relay).await.0, StatusCode::CREATED);
    Collective { admin, wh, a, foodaid, dir, url, _nats: nats }
}

/// One adult and one child.
fn small_family() -> Value {
    json!({"adults": 1, "teens": 0, "children": 1, "infants": 0})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_distribution_day_leaves_uncollected_parcels_not_collected() {
    let lines = json!([{"product_id": "pasta", "quantity": 20, "weight_g": 10000, "date": in_days(200)}]);
    let households = ["hh-1".to_owned(), "hh-2".to_owned()];
    let c = collective(&[product("pasta", "starches", "ambient", "ddm")], lines, "Lyon").await;
    for id in &households {
        eligible_household(&c.a, id, small_family(), json!({})).await;
    }
    let today = in_days(0);
    for id in &households {
        let (status, reply) =
            c.a.post("/api/parcels", &format!("p-{id}"), json!({"household_id": id, "date": today})).await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
    }
    let (status, wave) = c.admin.post("/api/waves", "w", json!({"site_id": "gerland", "date": today})).await;
    assert_eq!(status, StatusCode::OK, "{wave}");
    for id in &households {
        for (step, who) in [("ship", &c.wh), ("at-relay", &c.a)] {
            let (status, reply) =
                who.post(&format!("/api/parcels/{id}-{today}/{step}"), &format!("{step}-{id}"), json!({})).await;
            assert_eq!(status, StatusCode::OK, "{reply}");
        }
    }
    let (status, reply) = c.a.post(&format!("/api/parcels/hh-1-{today}/collected"), "got", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, err) = c.admin.post(&format!("/api/distribution-days/{}/close", in_days(1)), "early", json!({})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("date_in_future")));
    let (status, err) = c.a.post(&format!("/api/distribution-days/{today}/close"), "a", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    // Closing reads the parcels' read model: let it catch up with the last step first.
    let (_, row) = c.a.get(&format!("/api/parcels/hh-1-{today}?min_seq={}", min_seq(&reply))).await;
    assert_eq!(row["status"], "collected");
    let (status, closed) = c.admin.post(&format!("/api/distribution-days/{today}/close"), "close", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    assert_eq!(closed["events"].as_array().unwrap().len(), 1, "only hh-2's parcel: {closed}");
    let (_, row) = c.a.get(&format!("/api/parcels/hh-2-{today}?min_seq={}", min_seq(&closed))).await;
    assert_eq!(row["status"], "not_collected");
    let (_, row) = c.a.get(&format!("/api/parcels/hh-1-{today}")).await;
    assert_eq!(row["status"], "collected");
    let (_, again) = c.admin.post(&format!("/api/distribution-days/{today}/close"), "close-2", json!({})).await;
    assert_eq!(again["events"], json!([]), "closing twice marks nothing more");
    // Back to the warehouse: the pasta is on the shelf again.
    let (status, back) = c.wh.post(&format!("/api/parcels/hh-2-{today}/return"), "back", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{back}");
    let (_, hh1) = c.a.get(&format!("/api/parcels/hh-1-{today}")).await;
    let kept: u64 = hh1["lines"].as_array().unwrap().iter().map(|l| l["units"].as_u64().unwrap()).sum();
    let lot = wait_for(&c.wh, "/api/lots/d1-l1", |l| l["shipped"].as_u64() == Some(kept)).await;
    assert_eq!(lot["available"].as_u64(), Some(20 - kept), "{lot}");
    assert!(c.foodaid.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_waves_at_once_never_share_a_unit_and_leave_nobody_short() {
    // Plenty of starches, but the earliest lot (pasta), which both waves want first, is small:
    // the wave that reserves second finds it gone, and composes those parcels again with rice.
    let lines = json!([
        {"product_id": "pasta", "quantity": 100, "weight_g": 50000, "date": in_days(100)},
        {"product_id": "rice", "quantity": 400, "weight_g": 200000, "date": in_days(300)}]);
    let households: Vec<String> = (0..40).map(|i| format!("hh-{i}")).collect();
    let products = [product("pasta", "starches", "ambient", "ddm"), product("rice", "starches", "ambient", "ddm")];
    let c = collective(&products, lines, "Lyon").await;
    for id in &households {
        eligible_household(&c.a, id, small_family(), json!({})).await;
    }
    let days = [in_days(1), in_days(2)];
    for (i, id) in households.iter().enumerate() {
        let body = json!({"household_id": id, "date": days[i % 2]});
        assert_eq!(c.a.post("/api/parcels", &format!("p-{id}"), body).await.0, StatusCode::CREATED);
    }
    let (one, two) = tokio::join!(
        c.admin.post("/api/waves", "w1", json!({"site_id": "gerland", "date": days[0]})),
        c.admin.post("/api/waves", "w2", json!({"site_id": "gerland", "date": days[1]})),
    );
    assert_eq!((one.0, two.0), (StatusCode::OK, StatusCode::OK), "{} {}", one.1, two.1);
    let seq = one.1["seq"].as_u64().unwrap().max(two.1["seq"].as_u64().unwrap());
    let (mut recomposed, mut from_lot) = (0, std::collections::BTreeMap::<String, u64>::new());
    for (i, id) in households.iter().enumerate() {
        let (_, row) = c.a.get(&format!("/api/parcels/{id}-{}?min_seq=distribution:{seq}", days[i % 2])).await;
        assert_eq!(row["status"], "composed", "{row}");
        // Stock sufficed: whatever the interleaving, nobody is short of starches.
        assert!(!row["short"].as_array().unwrap().contains(&json!("starches")), "{row}");
        recomposed += usize::from(row["recomposed"] == true);
        let mut units = 0;
        for l in row["lines"].as_array().unwrap() {
            *from_lot.entry(l["lot_id"].as_str().unwrap().to_owned()).or_default() += l["units"].as_u64().unwrap();
            units += l["units"].as_u64().unwrap();
        }
        // What the parcel says is what stock holds for it, over its reservations.
        let mut held = 0;
        for r in row["reservations"].as_array().unwrap() {
            let (_, reservation) = c.wh.get(&format!("/api/reservations/{}", r.as_str().unwrap())).await;
            held += reservation["allocations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["quantity"].as_u64().unwrap())
                .sum::<u64>();
        }
        assert_eq!(units, held, "{row}");
    }
    for (lot, units) in &from_lot {
        let (_, row) = c.wh.get(&format!("/api/lots/{lot}")).await;
        assert_eq!(row["reserved"].as_u64(), Some(*units), "no unit promised twice: {row}");
    }
    eprintln!("parcels recomposed after the other wave took their lots: {recomposed}; units per lot {from_lot:?}");
    assert!(c.foodaid.terminate().success());
}
