//! The warehouse through HTTP, as volunteers and coordinators use it: products, donors and their
//! agreements, donations judged line by line, donor statements. A real nats-server, the
//! `foodaid` binary, the gateway.

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{in_days, min_seq, token, wait_for, Api, Foodaid};
use testkit::TestNats;

fn line(product: &str, quantity: u32, weight_g: u64, date: Option<&str>, temperature: Option<f64>) -> Value {
    let mut l = json!({"quantity": quantity, "weight_g": weight_g, "lot_number": "L-0042"});
    if product.chars().all(|c| c.is_ascii_digit()) {
        l["gtin"] = json!(product);
    } else {
        l["product_id"] = json!(product);
    }
    if let Some(d) = date {
        l["date"] = json!(d);
    }
    if let Some(t) = temperature {
        l["temperature_c"] = json!(t);
    }
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn donations_are_judged_line_by_line_and_donors_get_their_statement() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let admin = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "admin"]));
    let wh = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "warehouse", "--name", "Josiane"]));

    let site =
        json!({"site_id": "gerland", "name": "Entrepôt de Gerland", "zones": [{"code": "A1", "storage": "ambient"}]});
    assert_eq!(admin.post("/api/sites", "site-1", site).await.0, StatusCode::CREATED);
    for (id, name) in
        [("carrefour-venissieux", "Carrefour Vénissieux"), ("ferme-des-monts", "Ferme des Monts, \"bio\"")]
    {
        let donor = json!({"donor_id": id, "kind": "retailer", "name": name, "address": "69200 Vénissieux"});
        assert_eq!(wh.post("/api/donors", &format!("donor-{id}"), donor).await.0, StatusCode::CREATED);
    }
    // Only an administrator records an agreement.
    let agreement = json!({"reference": "CONV-2026-014", "dlc_min_hours": 24});
    let (status, err) = wh.post("/api/donors/carrefour-venissieux/agreement", "agr-0", agreement.clone()).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    let (status, _) = admin.post("/api/donors/carrefour-venissieux/agreement", "agr-1", agreement).await;
    assert_eq!(status, StatusCode::OK);

    // Products: a GTIN is checked, and a scan of the EAN-13 finds the product by its GTIN-14.
    let yoghurt = json!({"gtin": "3033490004743", "name": "Yaourt nature x4", "food_group": "dairy",
        "unit_weight_g": 500, "storage": "chilled", "date_kind": "dlc", "allergens": ["milk"], "traits": {"ready_to_eat": true}});
    let (status, reply) = wh.post("/api/products", "prod-yoghurt", yoghurt.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    assert_eq!(reply["aggregate_id"], "gtin-03033490004743");
    let bad =
        json!({"gtin": "3033490004744", "name": "x", "food_group": "dairy", "storage": "chilled", "date_kind": "dlc"});
    let (status, err) = wh.post("/api/products", "prod-bad", bad).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_payload")));
    assert!(err["message"].as_str().unwrap().contains("check digit"), "{err}");
    let pasta = json!({"product_id": "pates-vrac", "name": "Pâtes en vrac", "food_group": "starches",
        "storage": "ambient", "date_kind": "ddm", "allergens": ["gluten"]});
    let (status, reply) = wh.post("/api/products", "prod-pasta", pasta).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, found) = wh.get(&format!("/api/gtin/03033490004743?min_seq={}", min_seq(&reply))).await;
    assert_eq!((status, found["name"].as_str()), (StatusCode::OK, Some("Yaourt nature x4")));
    let (status, found) = wh.get("/api/gtin/3033490004743").await;
    assert_eq!((status, found["product_id"].as_str()), (StatusCode::OK, Some("gtin-03033490004743")));
    assert_eq!(found["traits"], json!({"meat": false, "pork": false, "halal": false, "ready_to_eat": true}));
    let ham = json!({"product_id": "jambon", "name": "Jambon", "food_group": "meat_fish_eggs", "storage": "chilled",
        "date_kind": "dlc", "traits": {"pork": true}});
    let (status, err) = wh.post("/api/products", "prod-ham", ham).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_traits")));
    let (status, err) = wh.get("/api/gtin/3017620422003").await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::NOT_FOUND, Some("product_not_found")));

    // A donation received five days ago at 11:00, Paris time, recorded now.
    let paris = values::Calendar::default();
    let received = paris.day_of(chrono::Utc::now()) - chrono::Duration::days(5);
    let received_at = paris.at(received, chrono::NaiveTime::from_hms_opt(11, 0, 0).unwrap());
    let on = |days: i64| (received + chrono::Duration::days(days)).to_string();
    let lines = vec![
        line("3033490004743", 24, 12_000, Some(&on(4)), Some(3.5)), // fine
        line("3033490004743", 10, 5_000, Some(&on(1)), Some(3.0)),  // 37 h left: the agreement allows 24 h
        line("3033490004743", 6, 3_000, Some(&on(10)), Some(7.5)),  // cold chain broken
        line("3033490004743", 6, 3_000, Some(&on(-1)), Some(2.0)),  // use-by passed
        line("pates-vrac", 40, 20_000, Some(&on(-37)), None),       // 37 days past best-before, grace 90
        line("pates-vrac", 10, 5_000, Some(&on(-160)), None),       // 160 days past
    ];
    let mut donation = json!({"donation_id": "don-1", "donor_id": "carrefour-venissieux", "site_id": "gerland",
        "received_at": received_at.to_rfc3339(), "lines": lines});
    let (status, reply) = wh.post("/api/donations", "don-1", donation.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let types: Vec<&str> = reply["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "donation_recorded",
            "line_accepted",
            "line_accepted",
            "line_refused",
            "line_refused",
            "line_accepted",
            "line_refused"
        ]
    );
    let (status, recorded) = wh.get(&format!("/api/donations/don-1?min_seq={}", min_seq(&reply))).await;
    assert_eq!(status, StatusCode::OK);
    let outcome: Vec<(bool, bool, Option<&str>)> = recorded["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (l["accepted"].as_bool().unwrap(), l["past_best_before"].as_bool().unwrap(), l["refusal"]["code"].as_str())
        })
        .collect();
    assert_eq!(
        outcome,
        [
            (true, false, None),
            (true, false, None),
            (false, false, Some("cold_chain_break")),
            (false, false, Some("dlc_passed")),
            (true, true, None),
            (false, false, Some("ddm_beyond_grace")),
        ]
    );
    assert_eq!(recorded["recorded_by"], "warehouse/Josiane");

    // The same lines from a donor without an agreement: the 48 h rule refuses the close date.
    donation["donation_id"] = json!("don-2");
    donation["donor_id"] = json!("ferme-des-monts");
    donation["lines"] = json!([line("3033490004743", 10, 5_000, Some(&on(1)), Some(3.0))]);
    let (status, reply) = wh.post("/api/donations", "don-2", donation.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(reply["events"][1]["data"]["reason"]["code"], "dlc_too_close");
    // To midnight in Paris, not UTC: 13 hours that day and 24 the next (23 or 25 when the clocks
    // change).
    let left = (paris.end_of(received + chrono::Duration::days(1)) - received_at).num_hours();
    assert!((36..=38).contains(&left));
    assert_eq!(reply["events"][1]["data"]["reason"]["hours_left"], left);

    // Bad input is refused with a clear code, and nothing is recorded.
    let cases = [
        (json!({"lines": [line("pates-vrac", 0, 1_000, Some("2027-01-01"), None)]}), 422, "invalid_quantity"),
        (json!({"lines": [line("pates-vrac", 1, 0, Some("2027-01-01"), None)]}), 422, "invalid_weight"),
        (json!({"lines": [line("3033490004743", 1, 500, Some("2027-01-01"), None)]}), 422, "temperature_required"),
        (json!({"lines": [line("pates-vrac", 1, 500, None, None)]}), 422, "date_required"),
        (json!({"lines": []}), 422, "no_lines"),
        (json!({"site_id": "nowhere"}), 404, "site_not_found"),
        (json!({"donor_id": "nobody"}), 404, "donor_not_found"),
        (json!({"lines": [line("unknown-product", 1, 500, None, None)]}), 404, "product_not_found"),
        (json!({"lines": [{"gtin": "3033490004744", "quantity": 1, "weight_g": 1}]}), 422, "invalid_payload"),
        (json!({"received_at": "2099-01-01T00:00:00Z"}), 422, "received_in_future"),
    ];
    for (i, (change, status, code)) in cases.into_iter().enumerate() {
        let mut body = donation.clone();
        body["donation_id"] = json!(format!("bad-{i}"));
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (got, err) = wh.post("/api/donations", &format!("bad-{i}"), body).await;
        assert_eq!((got.as_u16(), err["code"].as_str()), (status, Some(code)), "{err}");
    }
    let (_, listed) = wh.get(&format!("/api/donations?min_seq={}", min_seq(&reply))).await;
    let mut ids: Vec<&str> = listed.as_array().unwrap().iter().map(|d| d["donation_id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["don-1", "don-2"], "only the two good donations are recorded");
    let (_, listed) = wh.get(&format!("/api/donations?donor_id=ferme-des-monts&from={}&to={}", on(0), on(0))).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let (_, listed) = wh.get(&format!("/api/donations?from={}", on(1))).await;
    assert_eq!(listed.as_array().unwrap().len(), 0);

    // The year's statement counts what was accepted: 17 kg of dairy, 20 kg of starches.
    let year = chrono::Datelike::year(&received);
    let (status, s) = wh.get(&format!("/api/donors/carrefour-venissieux/statements/{year}")).await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["donations"], 1);
    assert_eq!(s["lines"][0]["food_group"], "starches");
    assert_eq!(s["lines"][0]["kg"], 20.0);
    assert_eq!(s["lines"][1]["food_group"], "dairy");
    assert_eq!(s["lines"][1]["kg"], 17.0);
    assert_eq!((s["total_kg"].as_f64(), s["meals"].as_u64()), (Some(37.0), Some(74)));
    let (status, content_type, csv) =
        wh.get_text(&format!("/api/donors/carrefour-venissieux/statements/{year}/csv")).await;
    assert_eq!((status, content_type.as_str()), (StatusCode::OK, "text/csv; charset=utf-8"));
    assert_eq!(
        csv,
        format!(
            "donor_id,donor_name,year,food_group,lines,kg,declared_value_eur\n\
             carrefour-venissieux,Carrefour Vénissieux,{year},starches,1,20.000,0.00\n\
             carrefour-venissieux,Carrefour Vénissieux,{year},dairy,2,17.000,0.00\n\
             carrefour-venissieux,Carrefour Vénissieux,{year},total,3,37.000,0.00\n"
        )
    );
    let (_, _, csv) = wh.get_text(&format!("/api/donors/ferme-des-monts/statements/{year}/csv")).await;
    assert!(csv.contains(&format!("ferme-des-monts,\"Ferme des Monts, \"\"bio\"\"\",{year},total,0,0.000")), "{csv}");
    let (status, content_type, html) =
        wh.get_text(&format!("/api/donors/carrefour-venissieux/statements/{year}/html")).await;
    assert_eq!((status, content_type.as_str()), (StatusCode::OK, "text/html; charset=utf-8"));
    let title = format!("Attestation de dons alimentaires — {year}");
    assert!(html.contains(&title) && html.contains("<strong>74</strong>"), "{html}");
    let (status, err) = wh.get("/api/donors/carrefour-venissieux/statements/year-one").await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_payload")));
    assert!(foodaid.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_follow_fefo_and_1000_concurrent_requests_never_oversell() {
    use futures::StreamExt;

    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let admin = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "admin"]));
    let wh = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "warehouse", "--name", "Ahmed"]));
    let site = json!({"site_id": "gerland", "name": "Entrepôt de Gerland",
        "zones": [{"code": "A1", "storage": "ambient"}, {"code": "FROID-1", "storage": "chilled"}]});
    assert_eq!(admin.post("/api/sites", "site", site).await.0, StatusCode::CREATED);
    let donor = json!({"donor_id": "lidl", "kind": "retailer", "name": "Lidl Villeurbanne"});
    assert_eq!(wh.post("/api/donors", "donor", donor).await.0, StatusCode::CREATED);
    let pasta = json!({"product_id": "pasta", "name": "Pâtes 500 g", "food_group": "starches",
        "storage": "ambient", "date_kind": "ddm", "allergens": ["gluten"]});
    assert_eq!(wh.post("/api/products", "pasta", pasta).await.0, StatusCode::CREATED);

    // Three donations: 4 units best before day 105, 3 before day 100, 3 before day 130.
    for (id, quantity, date) in [("don-a", 4, in_days(105)), ("don-b", 3, in_days(100)), ("don-c", 3, in_days(130))] {
        let body = json!({"donation_id": id, "donor_id": "lidl", "site_id": "gerland",
            "lines": [{"product_id": "pasta", "quantity": quantity, "weight_g": quantity * 500, "date": date}]});
        assert_eq!(wh.post("/api/donations", id, body).await.0, StatusCode::CREATED);
    }
    // The stock service takes each accepted line in as a lot, on its own.
    let lots = wait_for(&wh, "/api/lots?product_id=pasta", |v| v.as_array().is_some_and(|a| a.len() == 3)).await;
    assert!(lots.as_array().unwrap().iter().all(|l| l["site_id"] == "gerland" && l["donor_id"] == "lidl"), "{lots}");
    let (_, lot) = wh.get("/api/lots/don-b-l1").await;
    assert_eq!((lot["available"].as_u64(), lot["status"].as_str()), (Some(3), Some("available")));
    assert_eq!(lot["allergens"], json!(["gluten"]), "what diets are checked against follows the product into stock");

    // FEFO: 5 units come from the lot best before day 100 (3), then the one of day 105 (2).
    let body =
        json!({"reservation_id": "parcel-1", "site_id": "gerland", "lines": [{"product_id": "pasta", "quantity": 5}]});
    let (status, reply) = wh.post("/api/reservations", "parcel-1", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let allocations = &reply["events"][0]["data"]["allocations"];
    assert_eq!(
        allocations,
        &json!([{"line": 1, "lot_id": "don-b-l1", "quantity": 3}, {"line": 1, "lot_id": "don-a-l1", "quantity": 2}])
    );
    // The same request again: the first answer, nothing more reserved.
    let (status, again) = wh.post("/api/reservations", "parcel-1", body).await;
    assert_eq!((status, again["duplicate"].as_bool()), (StatusCode::CREATED, Some(true)), "{again}");
    assert_eq!(&again["events"][0]["data"]["allocations"], allocations);
    let (_, r) = wh.get(&format!("/api/reservations/parcel-1?min_seq={}", min_seq(&reply))).await;
    assert_eq!(r["status"], "confirmed");
    // Too much for the stock left: nothing is held.
    let big =
        json!({"reservation_id": "parcel-2", "site_id": "gerland", "lines": [{"product_id": "pasta", "quantity": 6}]});
    let (status, err) = wh.post("/api/reservations", "parcel-2", big).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("insufficient_stock")), "{err}");
    assert!(err["message"].as_str().unwrap().contains("pasta: 6 asked, 5 available"), "{err}");
    let (status, _) = wh.post("/api/reservations/parcel-1/release", "release-1", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    // The parcel composer names its lots: they are used as named, not FEFO.
    let chosen = json!({"reservation_id": "parcel-c", "site_id": "gerland",
        "lines": [{"product_id": "pasta", "quantity": 2, "lots": ["don-c-l1"]}]});
    let (status, reply) = wh.post("/api/reservations", "parcel-c", chosen).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    assert_eq!(reply["events"][0]["data"]["allocations"], json!([{"line": 1, "lot_id": "don-c-l1", "quantity": 2}]));
    assert_eq!(wh.post("/api/reservations/parcel-c/release", "release-c", json!({})).await.0, StatusCode::OK);
    let wrong = json!({"reservation_id": "parcel-w", "site_id": "gerland",
        "lines": [{"product_id": "rice", "quantity": 1, "lots": ["don-c-l1"]}]});
    let (status, err) = wh.post("/api/reservations", "parcel-w", wrong).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_lot")), "{err}");

    // 1,000 concurrent requests of one unit each for the 10 units: exactly 10 succeed.
    let results: Vec<(StatusCode, Value)> = futures::stream::iter(0..1000)
        .map(|i| {
            let wh = &wh;
            async move {
                let body = json!({"reservation_id": format!("p-{i}"), "site_id": "gerland",
                    "lines": [{"product_id": "pasta", "quantity": 1}]});
                wh.post("/api/reservations", &format!("p-{i}"), body).await
            }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    let won = results.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    let refused =
        results.iter().filter(|(s, e)| *s == StatusCode::CONFLICT && e["code"] == "insufficient_stock").count();
    assert_eq!(
        (won, refused),
        (10, 990),
        "{:?}",
        results.iter().find(|(s, _)| *s != StatusCode::CREATED && *s != StatusCode::CONFLICT)
    );
    let lots = wait_for(&wh, "/api/lots?product_id=pasta", |v| {
        v.as_array().unwrap().iter().map(|l| l["reserved"].as_u64().unwrap()).sum::<u64>() == 10
    })
    .await;
    for lot in lots.as_array().unwrap() {
        assert_eq!((lot["available"].as_u64(), lot["on_hand"].as_u64()), (Some(0), lot["received"].as_u64()), "{lot}");
    }

    // A winner is picked and shipped to a household's parcel; the lot records where it went.
    let (_, winner) = results.iter().find(|(s, _)| *s == StatusCode::CREATED).unwrap();
    let id = winner["aggregate_id"].as_str().unwrap();
    assert_eq!(wh.post(&format!("/api/reservations/{id}/pick"), "pick", json!({})).await.0, StatusCode::OK);
    let destination = json!({"kind": "parcel", "reference": "colis-2026-0001", "association_id": "asso-restos",
        "relay_point_id": "rp-vaulx", "household": "hh-7f3a"});
    let (status, shipped) =
        wh.post(&format!("/api/reservations/{id}/ship"), "ship", json!({"destination": destination})).await;
    assert_eq!(status, StatusCode::OK, "{shipped}");
    let (_, r) = wh.get(&format!("/api/reservations/{id}?min_seq={}", min_seq(&shipped))).await;
    assert_eq!(r["status"], "shipped");
    let lot_id = r["allocations"][0]["lot_id"].as_str().unwrap();
    let (_, lot) = wh.get(&format!("/api/lots/{lot_id}")).await;
    assert_eq!(
        (lot["shipped"].as_u64(), lot["reserved"].as_u64().unwrap() + lot["picked"].as_u64().unwrap()),
        (Some(1), lot["received"].as_u64().unwrap() - 1)
    );
    assert!(foodaid.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stock_audit_passes_after_a_kill_9_during_donations_and_reservations() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let admin = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "admin"]));
    let wh_token = token(dir.path(), Some(&url), &["--role", "warehouse"]);
    let wh = Api::new(&foodaid.http, &wh_token);
    let site = json!({"site_id": "gerland", "name": "Gerland", "zones": [{"code": "A1", "storage": "ambient"}]});
    assert_eq!(admin.post("/api/sites", "site", site).await.0, StatusCode::CREATED);
    assert_eq!(
        wh.post("/api/donors", "donor", json!({"donor_id": "lidl", "kind": "retailer", "name": "Lidl"})).await.0,
        StatusCode::CREATED
    );
    for p in ["rice", "beans"] {
        let body =
            json!({"product_id": p, "name": p, "food_group": "starches", "storage": "ambient", "date_kind": "ddm"});
        assert_eq!(wh.post("/api/products", p, body).await.0, StatusCode::CREATED);
    }

    // Four volunteers record donations and reserve, pick, ship and release parcels until the
    // process is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (stop, acked) = (stop.clone(), acked.clone());
        let api = Api::new(&foodaid.http, &wh_token);
        workers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = format!("w{w}-{i}");
                let donation = json!({"donation_id": format!("d-{key}"), "donor_id": "lidl", "site_id": "gerland", "lines": [
                    {"product_id": "rice", "quantity": 5, "weight_g": 5000, "date": in_days(200)},
                    {"product_id": "beans", "quantity": 3, "weight_g": 1200, "date": in_days(100)}]});
                let Ok((status, _)) = api.send(reqwest::Method::POST, "/api/donations", Some(&format!("d-{key}")), Some(donation)).await else { break };
                if status == StatusCode::CREATED {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                let reservation = json!({"reservation_id": format!("r-{key}"), "site_id": "gerland", "partial": true,
                    "lines": [{"product_id": "rice", "quantity": 2}, {"product_id": "beans", "quantity": 1}]});
                let Ok((status, _)) = api.send(reqwest::Method::POST, "/api/reservations", Some(&format!("r-{key}")), Some(reservation)).await else { break };
                if status != StatusCode::CREATED {
                    continue;
                }
                let step = match i % 3 {
                    0 => "release",
                    1 => "pick",
                    _ => "ship",
                };
                let body = if step == "ship" {
                    json!({"destination": {"kind": "parcel", "reference": format!("colis-{key}"), "household": format!("hh-{w}")}})
                } else {
                    json!({})
                };
                let path = format!("/api/reservations/r-{key}/{step}");
                if api.send(reqwest::Method::POST, &path, Some(&format!("{step}-{key}")), Some(body)).await.is_err() {
                    break;
                }
            }
        }));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while acked.load(Ordering::Relaxed) < 40 {
        assert!(std::time::Instant::now() < deadline, "the load made no progress");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    foodaid.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    // Restarted, the platform takes in every donation line the crash interrupted, and the
    // events still add up.
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let wh = Api::new(&foodaid.http, &wh_token);
    let (_, donations) = wh.get("/api/donations").await;
    let lines = donations.as_array().unwrap().len() * 2;
    assert!(lines >= 80, "{lines}");
    wait_for(&wh, "/api/lots?status=available", |_| true).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let audit = support::run(dir.path(), Some(&url), &["stock", "audit", "--json"]);
        let report: Value = serde_json::from_str(&audit).unwrap();
        assert_eq!(report["problems"], json!([]), "{audit}");
        if report["lots"].as_u64() == Some(lines as u64) {
            let expected = json!(lines / 2 * 8);
            assert_eq!(report["received"], expected, "{audit}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not every accepted line became a lot: {audit}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(foodaid.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recall_holds_the_lot_at_three_sites_and_traces_every_unit_shipped() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let admin = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "admin"]));
    let wh = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "warehouse"]));
    for (id, name) in [("gerland", "Gerland"), ("venissieux", "Vénissieux"), ("givors", "Givors")] {
        let site = json!({"site_id": id, "name": name, "zones": [{"code": "FROID", "storage": "chilled"}]});
        assert_eq!(admin.post("/api/sites", id, site).await.0, StatusCode::CREATED);
    }
    assert_eq!(
        wh.post("/api/donors", "donor", json!({"donor_id": "fromagerie", "kind": "producer", "name": "Fromagerie"}))
            .await
            .0,
        StatusCode::CREATED
    );
    let cheese = json!({"gtin": "3760012345021", "name": "Tomme 200 g", "food_group": "dairy", "storage": "chilled", "date_kind": "dlc"});
    assert_eq!(wh.post("/api/products", "cheese", cheese).await.0, StatusCode::CREATED);
    let donation = json!({"donation_id": "don-t", "donor_id": "fromagerie", "site_id": "gerland", "lines": [
        {"gtin": "3760012345021", "quantity": 20, "weight_g": 4000, "lot_number": "T-2311", "date": in_days(20), "temperature_c": 3.0},
        {"gtin": "3760012345021", "quantity": 10, "weight_g": 2000, "lot_number": "T-2312", "date": in_days(25), "temperature_c": 3.0}]});
    assert_eq!(wh.post("/api/donations", "don-t", donation).await.0, StatusCode::CREATED);
    wait_for(&wh, "/api/lots?product_id=gtin-03760012345021", |v| v.as_array().unwrap().len() == 2).await;

    // Lot T-2311 goes out to two other sites (5 units each), 3 units leave Gerland in a parcel,
    // 2 leave Vénissieux in another.
    for (transfer, to) in [("tr-v", "venissieux"), ("tr-g", "givors")] {
        let body = json!({"reservation_id": transfer, "site_id": "gerland", "purpose": {"kind": "transfer", "to_site": to},
            "lines": [{"product_id": "gtin-03760012345021", "quantity": 5}]});
        let (status, reply) = wh.post("/api/reservations", transfer, body).await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
        let (status, reply) =
            wh.post(&format!("/api/reservations/{transfer}/dispatch"), &format!("{transfer}-out"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        let (status, reply) =
            wh.post(&format!("/api/reservations/{transfer}/receive"), &format!("{transfer}-in"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    // Each site sees the transfers leaving or reaching it.
    let listed = wait_for(&wh, "/api/transfers?site_id=givors", |v| v[0]["status"] == "dispatched").await;
    let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|r| r["reservation_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["tr-g"], "{listed}");
    let (_, listed) = wh.get("/api/transfers?site_id=gerland").await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let ship = |site: &'static str, parcel: &'static str, quantity: u32, household: &'static str| {
        let wh = &wh;
        async move {
            let body = json!({"reservation_id": parcel, "site_id": site, "lines": [{"product_id": "gtin-03760012345021", "quantity": quantity}]});
            let (status, reply) = wh.post("/api/reservations", parcel, body).await;
            assert_eq!(status, StatusCode::CREATED, "{reply}");
            let destination = json!({"kind": "parcel", "reference": parcel, "association_id": "asso-restos",
                "relay_point_id": format!("rp-{site}"), "household": household});
            let (status, reply) = wh
                .post(
                    &format!("/api/reservations/{parcel}/ship"),
                    &format!("{parcel}-ship"),
                    json!({"destination": destination}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{reply}");
        }
    };
    ship("gerland", "colis-1", 3, "hh-a1").await;
    ship("venissieux", "colis-2", 2, "hh-b7").await;

    // The recall: every lot T-2311 is held at once, wherever it is; T-2312 is untouched.
    let (status, err) = wh
        .post("/api/recalls", "rc-0", json!({"gtin": "3760012345021", "lot_numbers": ["T-2311"], "reason": "Listeria"}))
        .await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    let (status, err) =
        admin.post("/api/recalls", "rc-bad", json!({"gtin": "3760012345021", "reason": "Listeria"})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("recall_too_broad")));
    let recall = json!({"recall_id": "rc-1", "gtin": "3760012345021", "lot_numbers": ["T-2311"], "reason": "Listeria monocytogenes"});
    let (status, reply) = admin.post("/api/recalls", "rc-1", recall).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let (status, trace) = admin.get(&format!("/api/recalls/rc-1/trace?min_seq={}", min_seq(&reply))).await;
    assert_eq!(status, StatusCode::OK, "{trace}");
    let mut sites: Vec<(&str, u64, &str)> = trace["lots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["site_id"].as_str().unwrap(), l["on_hand"].as_u64().unwrap(), l["status"].as_str().unwrap()))
        .collect();
    sites.sort();
    assert_eq!(sites, [("gerland", 7, "recalled"), ("givors", 5, "recalled"), ("venissieux", 3, "recalled")]);
    let shipped: Vec<(&str, &str, u64, &str, &str)> = trace["shipments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["site_id"].as_str().unwrap(),
                s["reference"].as_str().unwrap(),
                s["quantity"].as_u64().unwrap(),
                s["relay_point_id"].as_str().unwrap(),
                s["household"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shipped,
        [("gerland", "colis-1", 3, "rp-gerland", "hh-a1"), ("venissieux", "colis-2", 2, "rp-venissieux", "hh-b7")]
    );
    assert_eq!(trace["transfers"].as_array().unwrap().len(), 2);
    assert_eq!(trace["donors"], json!(["fromagerie"]));
    assert_eq!(
        (trace["units_received"].as_u64(), trace["units_held"].as_u64(), trace["units_shipped"].as_u64()),
        (Some(20), Some(15), Some(5))
    );

    // Nothing recalled can be reserved; the other lot still can.
    let body = json!({"reservation_id": "colis-3", "site_id": "venissieux", "lines": [{"product_id": "gtin-03760012345021", "quantity": 1}]});
    let (status, err) = wh.post("/api/reservations", "colis-3", body).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("insufficient_stock")));
    let body = json!({"reservation_id": "colis-4", "site_id": "gerland", "lines": [{"product_id": "gtin-03760012345021", "quantity": 10}]});
    let (status, reply) = wh.post("/api/reservations", "colis-4", body).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    assert_eq!(reply["events"][0]["data"]["allocations"][0]["lot_id"], "don-t-l2");
    let audit = support::run(dir.path(), Some(&url), &["stock", "audit", "--json"]);
    let report: Value = serde_json::from_str(&audit).unwrap();
    assert_eq!((report["problems"].clone(), report["in_transit"].as_u64()), (json!([]), Some(0)), "{audit}");
    assert!(foodaid.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lots_are_put_away_adjusted_counted_expired_and_summed_up() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let admin = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "admin"]));
    let wh = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "warehouse"]));
    let site = json!({"site_id": "gerland", "name": "Gerland",
        "zones": [{"code": "A1", "storage": "ambient"}, {"code": "FROID", "storage": "chilled"}]});
    assert_eq!(admin.post("/api/sites", "site", site).await.0, StatusCode::CREATED);
    assert_eq!(
        wh.post("/api/donors", "donor", json!({"donor_id": "lidl", "kind": "retailer", "name": "Lidl"})).await.0,
        StatusCode::CREATED
    );
    for (id, group, storage, kind) in [("yoghurt", "dairy", "chilled", "dlc"), ("pasta", "starches", "ambient", "ddm")]
    {
        let body = json!({"product_id": id, "name": id, "food_group": group, "storage": storage, "date_kind": kind});
        assert_eq!(wh.post("/api/products", id, body).await.0, StatusCode::CREATED);
    }
    // Received ten days ago (recorded now): a yoghurt good for nine more days then, a pasta
    // whose best-before date was four days ahead.
    let paris = values::Calendar::default();
    let received = paris.day_of(chrono::Utc::now()) - chrono::Duration::days(10);
    let on = |days: i64| (received + chrono::Duration::days(days)).to_string();
    let received_at = paris.at(received, chrono::NaiveTime::from_hms_opt(9, 0, 0).unwrap());
    let donation = json!({"donation_id": "d1", "donor_id": "lidl", "site_id": "gerland", "received_at": received_at.to_rfc3339(), "lines": [
        {"product_id": "yoghurt", "quantity": 10, "weight_g": 5000, "date": on(9), "temperature_c": 3.0},
        {"product_id": "pasta", "quantity": 20, "weight_g": 10000, "date": on(4)}]});
    assert_eq!(wh.post("/api/donations", "d1", donation).await.0, StatusCode::CREATED);
    wait_for(&wh, "/api/lots", |v| v.as_array().unwrap().len() == 2).await;

    // Put away: the cold chain decides the zone.
    let (status, err) = wh.post("/api/lots/d1-l1/move", "m0", json!({"zone": "A1"})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("wrong_storage_zone")));
    let (status, err) = wh.post("/api/lots/d1-l1/move", "m1", json!({"zone": "NOPE"})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::NOT_FOUND, Some("zone_not_found")));
    assert_eq!(wh.post("/api/lots/d1-l1/move", "m2", json!({"zone": "froid"})).await.0, StatusCode::OK);
    assert_eq!(wh.post("/api/lots/d1-l2/move", "m3", json!({"zone": "A1"})).await.0, StatusCode::OK);

    // Damage, hold, count.
    let (status, _) = wh
        .post("/api/lots/d1-l2/adjustments", "adj", json!({"delta": -2, "reason": "damage", "note": "sacs percés"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, err) = wh.post("/api/lots/d1-l2/adjustments", "adj2", json!({"delta": -2, "reason": "lost"})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_payload")));
    assert_eq!(wh.post("/api/lots/d1-l2/hold", "hold", json!({"reason": "contrôle"})).await.0, StatusCode::OK);
    let reserve =
        json!({"reservation_id": "r1", "site_id": "gerland", "lines": [{"product_id": "pasta", "quantity": 1}]});
    let (status, _) = wh.post("/api/reservations", "r1", reserve).await;
    assert_eq!(status, StatusCode::CONFLICT, "a held lot takes no reservation");
    assert_eq!(wh.delete("/api/lots/d1-l2/hold", "lift").await.0, StatusCode::OK);
    let (status, err) = wh.post("/api/sites/gerland/zones/A1/counts", "c0", json!({"counts": []})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("count_incomplete")), "{err}");
    let (status, err) = wh
        .post("/api/sites/gerland/zones/A1/counts", "c1", json!({"counts": [{"lot_id": "d1-l1", "counted": 1}]}))
        .await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("lot_not_in_zone")), "{err}");
    let (status, counted) = wh
        .post(
            "/api/sites/gerland/zones/A1/counts",
            "c2",
            json!({"counts": [{"lot_id": "d1-l2", "counted": 17}], "note": "inventaire"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{counted}");
    let (_, lot) = wh.get(&format!("/api/lots/d1-l2?min_seq={}", min_seq(&counted))).await;
    assert_eq!(
        (lot["on_hand"].as_u64(), lot["written_off"].as_i64(), lot["zone"].as_str()),
        (Some(17), Some(3), Some("A1"))
    );

    // Summaries: now, on a past day, and against the minimum per food group.
    let (_, stock) = wh.get("/api/stock?site_id=gerland&food_group=starches").await;
    assert_eq!(
        stock,
        json!([{"site_id": "gerland", "product_id": "pasta", "product_name": "pasta", "food_group": "starches",
        "storage": "ambient", "lots": 1, "on_hand": 17, "available": 17, "kg": 8.5, "next_date": on(4)}])
    );
    let (_, past) = wh.get(&format!("/api/stock?as_of={}", on(-1))).await;
    assert_eq!(past, json!([]), "nothing was in stock before the day it was received");
    let (_, then) = wh.get(&format!("/api/stock?as_of={}", on(0))).await;
    assert_eq!(then.as_array().unwrap().iter().map(|l| l["on_hand"].as_u64().unwrap()).collect::<Vec<_>>(), [20, 10]);
    let (_, now) = wh.get(&format!("/api/stock?as_of={}", on(10))).await;
    assert_eq!(now.as_array().unwrap().iter().map(|l| l["on_hand"].as_u64().unwrap()).collect::<Vec<_>>(), [17, 10]);
    let (_, low) = wh.get("/api/stock/low").await;
    let starches = low.as_array().unwrap().iter().find(|l| l["food_group"] == "starches").unwrap();
    assert_eq!(
        (starches["available_kg"].as_f64(), starches["minimum_kg"].as_f64(), starches["low"].as_bool()),
        (Some(8.5), Some(500.0), Some(true))
    );
    let (_, expiring) = wh.get("/api/stock/expiring?days=0").await;
    assert_eq!(expiring.as_array().unwrap().len(), 2, "both dates are past");

    // Today's expiry run: the yoghurt is written off, the pasta flagged and kept.
    let (status, err) = wh.post("/api/stock/expiry-run", "exp-0", json!({"today": on(10)})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    let (status, run) = admin.post("/api/stock/expiry-run", "exp-1", json!({"today": on(10)})).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    let types: Vec<&str> = run["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["lot_expired", "lot_past_best_before"]);
    let (_, yoghurt) = wh.get(&format!("/api/lots/d1-l1?min_seq={}", min_seq(&run))).await;
    assert_eq!(
        (yoghurt["status"].as_str(), yoghurt["on_hand"].as_u64(), yoghurt["written_off"].as_i64()),
        (Some("expired"), Some(0), Some(10))
    );
    let (_, pasta) = wh.get("/api/lots/d1-l2").await;
    assert_eq!((pasta["status"].as_str(), pasta["past_best_before"].as_bool()), (Some("available"), Some(true)));
    let (_, again) = admin.post("/api/stock/expiry-run", "exp-2", json!({"today": on(10)})).await;
    assert_eq!(
        (again["duplicate"].as_bool(), &again["seq"]),
        (Some(true), &run["seq"]),
        "a second run the same day commits nothing"
    );
    let audit = support::run(dir.path(), Some(&url), &["stock", "audit"]);
    assert!(audit.contains("audit passed"), "{audit}");
    assert!(foodaid.terminate().success());
}

/// A site with `lots` lots of rice, `units` units each (donation `d-<n>`).
async fn rice_site(admin: &Api, wh: &Api, lots: usize, units: u32) {
    let site = json!({"site_id": "gerland", "name": "Gerland", "zones": [{"code": "A1", "storage": "ambient"}]});
    assert_eq!(admin.post("/api/sites", "site", site).await.0, StatusCode::CREATED);
    let donor = json!({"donor_id": "lidl", "kind": "retailer", "name": "Lidl"});
    assert_eq!(wh.post("/api/donors", "donor", donor).await.0, StatusCode::CREATED);
    let rice = json!({"product_id": "rice", "name": "Riz", "food_group": "starches", "storage": "ambient", "date_kind": "ddm"});
    assert_eq!(wh.post("/api/products", "rice", rice).await.0, StatusCode::CREATED);
    for n in 0..lots {
        // Each lot a day apart, so FEFO puts them in one order.
        let lines = json!([{"product_id": "rice", "quantity": units, "weight_g": 1000 * units, "date": in_days(100 + n as i64)}]);
        let donation =
            json!({"donation_id": format!("d-{n}"), "donor_id": "lidl", "site_id": "gerland", "lines": lines});
        assert_eq!(wh.post("/api/donations", &format!("d-{n}"), donation).await.0, StatusCode::CREATED);
    }
    wait_for(wh, "/api/lots", |v| v.as_array().is_some_and(|a| a.len() == lots)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_is_never_refused_while_the_site_has_the_units() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let admin = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "admin"]));
    let wh_token = token(dir.path(), Some(&url), &["--role", "warehouse"]);
    let wh = Api::new(&foodaid.http, &wh_token);
    // 60 lots of one unit: six volunteers reserving one unit at a time all plan on the same
    // first lots from a read model that lags behind them.
    rice_site(&admin, &wh, 60, 1).await;
    let refused = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..6 {
        let (api, refused) = (Api::new(&foodaid.http, &wh_token), refused.clone());
        clients.push(tokio::spawn(async move {
            for i in 0..10 {
                let id = format!("r-{c}-{i}");
                let body = json!({"reservation_id": id, "site_id": "gerland",
                    "lines": [{"product_id": "rice", "quantity": 1}]});
                let (status, reply) = api.post("/api/reservations", &id, body).await;
                if status != StatusCode::CREATED {
                    eprintln!("{id}: {status} {reply}");
                    refused.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(refused.load(Ordering::SeqCst), 0, "60 units, 60 one-unit reservations: none refused");
    // Now the site is empty: the next one is refused, and writes nothing.
    let js = async_nats::jetstream::new(nats.client().await);
    let before = support::settled(&js).await;
    let body = json!({"site_id": "gerland", "lines": [{"product_id": "rice", "quantity": 1}]});
    let (status, err) = wh.post("/api/reservations", "r-more", body).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("insufficient_stock")), "{err}");
    let unknown = json!({"site_id": "gerland", "lines": [{"product_id": "caviar", "quantity": 1}]});
    let (status, err) = wh.post("/api/reservations", "r-caviar", unknown).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("insufficient_stock")), "{err}");
    assert_eq!(support::settled(&js).await, before, "a refused reservation writes nothing");
    let audit: Value =
        serde_json::from_str(&support::run(dir.path(), Some(&url), &["stock", "audit", "--json"])).unwrap();
    assert_eq!((&audit["problems"], &audit["open_reservations"]), (&json!([]), &json!(0)), "{audit}");
    assert!(foodaid.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_cut_short_by_a_crash_gives_its_units_back_after_the_timeout() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    // The process dies (kill -9) after the lots granted their units, before the reservation
    // records it: nothing will ever settle it, since nobody retries.
    let failing = Foodaid::up_with(dir.path(), Some(&url), &[], &[("FOODAID_FAILPOINT", "reserve.before_settle")]);
    let admin = Api::new(&failing.http, &token(dir.path(), Some(&url), &["--role", "admin"]));
    let wh_token = token(dir.path(), Some(&url), &["--role", "warehouse"]);
    let wh = Api::new(&failing.http, &wh_token);
    rice_site(&admin, &wh, 3, 4).await;
    let body =
        json!({"reservation_id": "lost", "site_id": "gerland", "lines": [{"product_id": "rice", "quantity": 6}]});
    assert!(wh.send(reqwest::Method::POST, "/api/reservations", Some("lost"), Some(body)).await.is_err(), "no answer");
    let mut failing = failing;
    assert!(!failing.child.wait().unwrap().success(), "killed at the failpoint");
    let audit: Value =
        serde_json::from_str(&support::run(dir.path(), Some(&url), &["stock", "audit", "--json"])).unwrap();
    assert_eq!(audit["open_reservations"], 1, "the crash left a reservation open: {audit}");

    // Restarted, the platform gives the units back once the reservation is older than the
    // timeout (none here), and only then.
    let env = [
        ("FOODAID__POLICIES__RESERVATION_TIMEOUT_MINUTES", "0.02"),
        ("FOODAID__JOBS__RESERVATIONS_INTERVAL_SECS", "1"),
    ];
    let foodaid = Foodaid::up_with(dir.path(), Some(&url), &[], &env);
    let wh = Api::new(&foodaid.http, &wh_token);
    let expired = wait_for(&wh, "/api/reservations/lost", |r| r["status"] == "failed").await;
    assert_eq!(expired["shortfalls"][0]["requested"], 6, "{expired}");
    let lots = wait_for(&wh, "/api/lots", |v| v.as_array().unwrap().iter().all(|l| l["available"] == 4)).await;
    assert_eq!(lots.as_array().unwrap().len(), 3, "{lots}");
    let audit = support::run(dir.path(), Some(&url), &["stock", "audit", "--json"]);
    let report: Value = serde_json::from_str(&audit).unwrap();
    assert_eq!((&report["problems"], &report["open_reservations"]), (&json!([]), &json!(0)), "{audit}");
    // Retried after all, the request hears that it expired.
    let body =
        json!({"reservation_id": "lost", "site_id": "gerland", "lines": [{"product_id": "rice", "quantity": 6}]});
    let (status, err) = wh.post("/api/reservations", "lost", body).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("reservation_expired")), "{err}");
    assert!(foodaid.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recall_holds_the_lots_that_arrive_after_it() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let admin = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "admin"]));
    let wh = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "warehouse"]));
    for id in ["gerland", "givors"] {
        let site = json!({"site_id": id, "name": id, "zones": [{"code": "F1", "storage": "chilled"}]});
        assert_eq!(admin.post("/api/sites", id, site).await.0, StatusCode::CREATED);
    }
    let donor = json!({"donor_id": "fromagerie", "kind": "producer", "name": "Fromagerie"});
    assert_eq!(wh.post("/api/donors", "donor", donor).await.0, StatusCode::CREATED);
    let cheese = json!({"product_id": "cheese", "name": "Fourme", "food_group": "dairy", "storage": "chilled", "date_kind": "dlc"});
    assert_eq!(wh.post("/api/products", "cheese", cheese).await.0, StatusCode::CREATED);
    let donate = |id: &str, number: &str| {
        json!({"donation_id": id, "donor_id": "fromagerie", "site_id": "gerland", "lines": [
            {"product_id": "cheese", "quantity": 10, "weight_g": 2500, "date": in_days(20), "lot_number": number,
             "temperature_c": 3.0}]})
    };
    let (status, reply) = wh.post("/api/donations", "d1", donate("d1", "L1")).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    wait_for(&wh, "/api/lots/d1-l1", |l| l["on_hand"] == 10).await;
    // Some of it is on its way to Givors, some in a household's parcel.
    let transfer = json!({"reservation_id": "t1", "site_id": "gerland", "purpose": {"kind": "transfer", "to_site": "givors"},
        "lines": [{"product_id": "cheese", "quantity": 4}]});
    assert_eq!(wh.post("/api/reservations", "t1", transfer).await.0, StatusCode::CREATED);
    assert_eq!(wh.post("/api/reservations/t1/dispatch", "t1-out", json!({})).await.0, StatusCode::OK);
    let parcel =
        json!({"reservation_id": "p1", "site_id": "gerland", "lines": [{"product_id": "cheese", "quantity": 2}]});
    assert_eq!(wh.post("/api/reservations", "p1", parcel).await.0, StatusCode::CREATED);
    let to = json!({"destination": {"kind": "parcel", "reference": "colis-1", "household": "hh-9"}});
    assert_eq!(wh.post("/api/reservations/p1/ship", "p1-ship", to).await.0, StatusCode::OK);

    let recall = json!({"recall_id": "rc-1", "product_id": "cheese", "lot_numbers": ["L1"], "reason": "Listeria"});
    let (status, reply) = admin.post("/api/recalls", "rc-1", recall).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let (_, trace) = admin.get(&format!("/api/recalls/rc-1/trace?min_seq={}", min_seq(&reply))).await;
    assert_eq!(trace["recall"]["lots"], json!(["d1-l1"]), "{trace}");

    // After the recall: the transfer arrives, the parcel comes back, the donor brings more of
    // the same lot, and another lot. Everything of lot L1 is held as it arrives.
    assert_eq!(wh.post("/api/reservations/t1/receive", "t1-in", json!({})).await.0, StatusCode::OK);
    assert_eq!(wh.post("/api/reservations/p1/return", "p1-back", json!({})).await.0, StatusCode::OK);
    assert_eq!(wh.post("/api/donations", "d2", donate("d2", "l1")).await.0, StatusCode::CREATED);
    assert_eq!(wh.post("/api/donations", "d3", donate("d3", "L2")).await.0, StatusCode::CREATED);
    let trace =
        wait_for(&admin, "/api/recalls/rc-1/trace", |t| t["recall"]["lots"].as_array().unwrap().len() == 3).await;
    let mut held: Vec<&str> = trace["recall"]["lots"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    held.sort();
    assert_eq!(held, ["d1-l1", "d2-l1", "t1-d1-l1"], "{trace}");
    for lot in ["d1-l1", "d2-l1", "t1-d1-l1"] {
        let row = wait_for(&wh, &format!("/api/lots/{lot}"), |l| l["status"] == "recalled").await;
        assert_eq!(row["available"], 0, "{row}");
    }
    // The parcel's units came back to the recalled lot, held with the rest.
    let (_, back) = wh.get("/api/lots/d1-l1").await;
    assert_eq!(back["on_hand"], 4, "10 - 4 transferred - 2 shipped + 2 returned (chilled: written off) {back}");
    let (_, other) = wh.get("/api/lots/d3-l1").await;
    assert_eq!(other["status"], "available", "lot L2 is not recalled: {other}");
    let body = json!({"site_id": "givors", "lines": [{"product_id": "cheese", "quantity": 1}]});
    let (status, err) = wh.post("/api/reservations", "after", body).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("insufficient_stock")), "{err}");
    assert!(foodaid.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_donation_is_dated_when_it_was_received_on_the_collectives_calendar() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let admin = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "admin"]));
    let wh = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "warehouse"]));
    let site = json!({"site_id": "gerland", "name": "Gerland", "zones": [{"code": "A1", "storage": "ambient"}]});
    assert_eq!(admin.post("/api/sites", "site", site).await.0, StatusCode::CREATED);
    let donor = json!({"donor_id": "lidl", "kind": "retailer", "name": "Lidl"});
    assert_eq!(wh.post("/api/donors", "donor", donor).await.0, StatusCode::CREATED);
    let rice = json!({"product_id": "rice", "name": "Riz", "food_group": "starches", "storage": "ambient", "date_kind": "ddm"});
    assert_eq!(wh.post("/api/products", "rice", rice).await.0, StatusCode::CREATED);

    // Received at 23:30 UTC ten days ago or so — already the next day in Paris — and recorded
    // only now.
    let paris = values::Calendar::default();
    let late = {
        let day = chrono::Utc::now().date_naive() - chrono::Duration::days(10);
        day.and_hms_opt(23, 30, 0).unwrap().and_utc()
    };
    let (utc_day, paris_day) = (late.date_naive(), paris.day_of(late));
    assert_eq!(paris_day, utc_day.succ_opt().unwrap());
    let body = json!({"donation_id": "late", "donor_id": "lidl", "site_id": "gerland", "received_at": late.to_rfc3339(),
        "lines": [{"product_id": "rice", "quantity": 10, "weight_g": 10000, "date": in_days(300)}]});
    let (status, reply) = wh.post("/api/donations", "late", body).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let lot = wait_for(&wh, "/api/lots/late-l1", |l| l["on_hand"] == 10).await;
    let received: chrono::DateTime<chrono::Utc> = lot["received_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(received, late, "the lot is dated when the donation was received: {lot}");
    // Stock as it was: there from Paris's day it arrived, not before, and not from the day it
    // was recorded only.
    let stock_on = |day: chrono::NaiveDate| {
        let wh = &wh;
        async move {
            let (status, lines) = wh.get(&format!("/api/stock?as_of={day}")).await;
            assert_eq!(status, StatusCode::OK, "{lines}");
            lines.as_array().unwrap().iter().map(|l| l["on_hand"].as_u64().unwrap()).sum::<u64>()
        }
    };
    assert_eq!(stock_on(paris_day).await, 10);
    assert_eq!(stock_on(paris_day + chrono::Duration::days(3)).await, 10);
    assert_eq!(stock_on(utc_day).await, 0, "the UTC day before it arrived in Paris");
    // Listed among the donations of Paris's day.
    let (_, listed) = wh.get(&format!("/api/donations?from={paris_day}&to={paris_day}")).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let (_, listed) = wh.get(&format!("/api/donations?from={utc_day}&to={utc_day}")).await;
    assert_eq!(listed, json!([]));
    assert!(foodaid.terminate().success());
}
