//! The warehouse through HTTP, as volunteers and coordinators use it: products, donors and their
//! agreements, donations judged line by line, donor statements. A real nats-server, the
//! `foodaid` binary, the gateway.

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{token, Api, Foodaid};
use testkit::TestNats;

fn min_seq(reply: &Value) -> String {
    format!("{}:{}", reply["stream"].as_str().unwrap(), reply["seq"])
}

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
        "unit_weight_g": 500, "storage": "chilled", "date_kind": "dlc", "allergens": ["milk"]});
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
    let (status, err) = wh.get("/api/gtin/3017620422003").await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::NOT_FOUND, Some("product_not_found")));

    // A donation received on 10 March 2026 at 10:00 UTC.
    let lines = vec![
        line("3033490004743", 24, 12_000, Some("2026-03-14"), Some(3.5)), // fine
        line("3033490004743", 10, 5_000, Some("2026-03-11"), Some(3.0)),  // 38 h left: the agreement allows 24 h
        line("3033490004743", 6, 3_000, Some("2026-03-20"), Some(7.5)),   // cold chain broken
        line("3033490004743", 6, 3_000, Some("2026-03-09"), Some(2.0)),   // use-by passed
        line("pates-vrac", 40, 20_000, Some("2026-02-01"), None),         // 37 days past best-before, grace 90
        line("pates-vrac", 10, 5_000, Some("2025-10-01"), None),          // 160 days past
    ];
    let mut donation = json!({"donation_id": "don-1", "donor_id": "carrefour-venissieux", "site_id": "gerland",
        "received_at": "2026-03-10T10:00:00Z", "lines": lines});
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
    donation["lines"] = json!([line("3033490004743", 10, 5_000, Some("2026-03-11"), Some(3.0))]);
    let (status, reply) = wh.post("/api/donations", "don-2", donation.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(reply["events"][1]["data"]["reason"]["code"], "dlc_too_close");
    assert_eq!(reply["events"][1]["data"]["reason"]["hours_left"], 38);

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
    let (_, listed) = wh.get("/api/donations?donor_id=ferme-des-monts&from=2026-03-10&to=2026-03-10").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let (_, listed) = wh.get("/api/donations?from=2026-03-11").await;
    assert_eq!(listed.as_array().unwrap().len(), 0);

    // The year's statement counts what was accepted: 17 kg of dairy, 20 kg of starches.
    let (status, s) = wh.get("/api/donors/carrefour-venissieux/statements/2026").await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["donations"], 1);
    assert_eq!(s["lines"][0]["food_group"], "starches");
    assert_eq!(s["lines"][0]["kg"], 20.0);
    assert_eq!(s["lines"][1]["food_group"], "dairy");
    assert_eq!(s["lines"][1]["kg"], 17.0);
    assert_eq!((s["total_kg"].as_f64(), s["meals"].as_u64()), (Some(37.0), Some(74)));
    let (status, content_type, csv) = wh.get_text("/api/donors/carrefour-venissieux/statements/2026/csv").await;
    assert_eq!((status, content_type.as_str()), (StatusCode::OK, "text/csv; charset=utf-8"));
    assert_eq!(
        csv,
        "donor_id,donor_name,year,food_group,lines,kg,declared_value_eur\n\
         carrefour-venissieux,Carrefour Vénissieux,2026,starches,1,20.000,0.00\n\
         carrefour-venissieux,Carrefour Vénissieux,2026,dairy,2,17.000,0.00\n\
         carrefour-venissieux,Carrefour Vénissieux,2026,total,3,37.000,0.00\n"
    );
    let (_, _, csv) = wh.get_text("/api/donors/ferme-des-monts/statements/2026/csv").await;
    assert!(csv.contains("ferme-des-monts,\"Ferme des Monts, \"\"bio\"\"\",2026,total,0,0.000"), "{csv}");
    let (status, content_type, html) = wh.get_text("/api/donors/carrefour-venissieux/statements/2026/html").await;
    assert_eq!((status, content_type.as_str()), (StatusCode::OK, "text/html; charset=utf-8"));
    assert!(html.contains("Attestation de dons alimentaires — 2026") && html.contains("<strong>74</strong>"), "{html}");
    let (status, err) = wh.get("/api/donors/carrefour-venissieux/statements/year-one").await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_payload")));
    assert!(foodaid.terminate().success());
}
