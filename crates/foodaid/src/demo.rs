//! A small, realistic data set for trying foodaid: one warehouse, a few donors of every kind,
//! associations with relay points in several communes, a small fleet. Loading it twice changes
//! nothing: every command has a fixed idempotency key and every aggregate a fixed id.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::NaiveDate;
use runtime::{Actor, CommandRequest, ErrorKind, ServiceClient, ServiceError};
use serde_json::{json, Value};

use crate::config::Settings;

fn commands(
    now: chrono::DateTime<chrono::Utc>,
    calendar: values::Calendar,
) -> Vec<(&'static str, &'static str, &'static str, Value)> {
    let today: NaiveDate = calendar.day_of(now);
    let day = |days: i64| (today + chrono::Duration::days(days)).to_string();
    // Received in the last hours, whatever the time of day (never in the future).
    let hours_ago = |h: i64| (now - chrono::Duration::hours(h)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    vec![
        (
            "stock",
            "create_site",
            "demo-site-gerland",
            json!({
            "site_id": "site-gerland", "name": "Entrepôt de Gerland", "address": "12 rue du Vercors, 69007 Lyon",
            "position": {"lat": 45.7335, "lon": 4.8330},
            "zones": [{"code": "A1", "storage": "ambient"}, {"code": "A2", "storage": "ambient"},
                      {"code": "FROID-1", "storage": "chilled"}, {"code": "CONGEL-1", "storage": "frozen"}]}),
        ),
        (
            "stock",
            "create_site",
            "demo-site-givors",
            json!({
            "site_id": "site-givors", "name": "Épicerie solidaire de Givors", "address": "8 rue Jean Jaurès, 69700 Givors",
            "position": {"lat": 45.5906, "lon": 4.7689},
            "zones": [{"code": "A1", "storage": "ambient"}, {"code": "FROID-1", "storage": "chilled"}]}),
        ),
        (
            "donations",
            "register_donor",
            "demo-donor-carrefour",
            json!({
            "donor_id": "donor-carrefour-venissieux", "kind": "retailer", "name": "Carrefour Vénissieux",
            "address": "Boulevard Ambroise Croizat, 69200 Vénissieux", "position": {"lat": 45.7071, "lon": 4.8793}}),
        ),
        (
            "donations",
            "register_donor",
            "demo-donor-lidl",
            json!({
            "donor_id": "donor-lidl-villeurbanne", "kind": "retailer", "name": "Lidl Villeurbanne Gratte-Ciel",
            "address": "Avenue Henri Barbusse, 69100 Villeurbanne", "position": {"lat": 45.7676, "lon": 4.8811}}),
        ),
        (
            "donations",
            "register_donor",
            "demo-donor-ferme",
            json!({
            "donor_id": "donor-ferme-monts-dor", "kind": "producer", "name": "Ferme des Monts d'Or",
            "address": "Chemin de la Roche, 69250 Poleymieux-au-Mont-d'Or", "position": {"lat": 45.8612, "lon": 4.8039}}),
        ),
        (
            "donations",
            "register_donor",
            "demo-donor-banque",
            json!({
            "donor_id": "donor-banque-alimentaire", "kind": "public_programme", "name": "Banque Alimentaire du Rhône (FSE+)",
            "address": "Rue de la Mouche, 69540 Irigny", "position": {"lat": 45.6790, "lon": 4.8205}}),
        ),
        (
            "donations",
            "register_donor",
            "demo-donor-ecole",
            json!({
            "donor_id": "donor-collecte-jean-mace", "kind": "food_drive", "name": "Collecte école Jean Macé",
            "address": "Rue Jean Macé, 69007 Lyon"}),
        ),
        (
            "donations",
            "sign_agreement",
            "demo-agreement-carrefour",
            json!({"donor_id": "donor-carrefour-venissieux", "reference": "CONV-2026-014", "dlc_min_hours": 48}),
        ),
        product(
            "demo-product-pates",
            "3760012345014",
            "Pâtes complètes 500 g",
            "starches",
            500,
            "ambient",
            "ddm",
            &["gluten"],
        ),
        product("demo-product-yaourt", "3760012345021", "Yaourt nature x4", "dairy", 500, "chilled", "dlc", &["milk"]),
        product(
            "demo-product-lait-infantile",
            "3760012345038",
            "Lait infantile 2e âge 800 g",
            "baby_food",
            800,
            "ambient",
            "ddm",
            &["milk"],
        ),
        product(
            "demo-product-colin",
            "3760012345045",
            "Filets de colin surgelés 1 kg",
            "meat_fish_eggs",
            1000,
            "frozen",
            "dlc",
            &["fish"],
        ),
        product(
            "demo-product-thon",
            "3760012345052",
            "Thon au naturel 140 g",
            "meat_fish_eggs",
            140,
            "ambient",
            "ddm",
            &["fish"],
        ),
        (
            "donations",
            "define_product",
            "demo-product-pommes",
            json!({"product_id": "pommes-vrac", "name": "Pommes (vrac)", "food_group": "fruit_vegetables",
                   "storage": "ambient", "date_kind": "none"}),
        ),
        (
            "donations",
            "record_donation",
            "demo-donation-carrefour-1",
            json!({"donation_id": "don-demo-carrefour-1", "donor_id": "donor-carrefour-venissieux",
                   "site_id": "site-gerland", "received_at": hours_ago(3), "lines": [
                {"gtin": "3760012345014", "quantity": 120, "weight_g": 60000, "lot_number": "P2611", "date": day(240)},
                {"gtin": "3760012345021", "quantity": 48, "weight_g": 24000, "lot_number": "Y-4471", "date": day(6), "temperature_c": 3.2},
                {"gtin": "3760012345021", "quantity": 12, "weight_g": 6000, "lot_number": "Y-4468", "date": day(1), "temperature_c": 3.4},
                {"gtin": "3760012345045", "quantity": 30, "weight_g": 30000, "lot_number": "C-0912", "date": day(180), "temperature_c": -21.0},
                {"gtin": "3760012345052", "quantity": 200, "weight_g": 28000, "lot_number": "T-77", "date": day(-20), "declared_value_cents": 31000}
            ]}),
        ),
        (
            "donations",
            "record_donation",
            "demo-donation-ferme-1",
            json!({"donation_id": "don-demo-ferme-1", "donor_id": "donor-ferme-monts-dor",
                   "site_id": "site-gerland", "received_at": hours_ago(2), "lines": [
                {"product_id": "pommes-vrac", "quantity": 25, "weight_g": 250000}
            ]}),
        ),
        (
            "donations",
            "record_donation",
            "demo-donation-banque-1",
            json!({"donation_id": "don-demo-banque-1", "donor_id": "donor-banque-alimentaire",
                   "site_id": "site-gerland", "received_at": hours_ago(4), "lines": [
                {"gtin": "3760012345038", "quantity": 60, "weight_g": 48000, "lot_number": "LI-2207", "date": day(300)},
                {"gtin": "3760012345014", "quantity": 400, "weight_g": 200000, "lot_number": "P2598", "date": day(150)}
            ]}),
        ),
        (
            "distribution",
            "register_association",
            "demo-asso-restos",
            json!({
            "association_id": "asso-restos-vaulx", "name": "Restos du Cœur Vaulx-en-Velin", "commune": "Vaulx-en-Velin"}),
        ),
        (
            "distribution",
            "add_relay_point",
            "demo-relay-vaulx",
            json!({
            "association_id": "asso-restos-vaulx", "relay_id": "rp-vaulx-centre", "name": "Centre social Peyri",
            "address": "Rue Joseph Blein, 69120 Vaulx-en-Velin", "commune": "Vaulx-en-Velin",
            "position": {"lat": 45.7790, "lon": 4.9205}, "cold_storage": true}),
        ),
        (
            "distribution",
            "register_association",
            "demo-asso-secours",
            json!({
            "association_id": "asso-secours-venissieux", "name": "Secours populaire Vénissieux", "commune": "Vénissieux"}),
        ),
        (
            "distribution",
            "add_relay_point",
            "demo-relay-venissieux",
            json!({
            "association_id": "asso-secours-venissieux", "relay_id": "rp-venissieux-minguettes", "name": "Local des Minguettes",
            "address": "Avenue Jean Cagne, 69200 Vénissieux", "commune": "Vénissieux",
            "position": {"lat": 45.7125, "lon": 4.8826}, "cold_storage": false}),
        ),
        (
            "distribution",
            "register_association",
            "demo-asso-epicerie",
            json!({
            "association_id": "asso-epicerie-givors", "name": "Épicerie solidaire de Givors", "commune": "Givors"}),
        ),
        (
            "distribution",
            "add_relay_point",
            "demo-relay-givors",
            json!({
            "association_id": "asso-epicerie-givors", "relay_id": "rp-givors-centre", "name": "Épicerie Givors centre",
            "address": "Rue Roger Salengro, 69700 Givors", "commune": "Givors",
            "position": {"lat": 45.5903, "lon": 4.7690}, "cold_storage": true}),
        ),
        (
            "distribution",
            "register_association",
            "demo-asso-ccas",
            json!({
            "association_id": "asso-ccas-rillieux", "name": "CCAS de Rillieux-la-Pape", "commune": "Rillieux-la-Pape"}),
        ),
        (
            "distribution",
            "add_relay_point",
            "demo-relay-rillieux",
            json!({
            "association_id": "asso-ccas-rillieux", "relay_id": "rp-rillieux-velette", "name": "Maison des services Vélette",
            "address": "Avenue de l'Europe, 69140 Rillieux-la-Pape", "commune": "Rillieux-la-Pape",
            "position": {"lat": 45.8196, "lon": 4.8989}, "cold_storage": false}),
        ),
        (
            "transport",
            "register_vehicle",
            "demo-vehicle-master",
            json!({
            "vehicle_id": "veh-master-frigo", "name": "Renault Master frigorifique", "capacity_kg": 1200,
            "volume_l": 10000, "chilled_capacity_kg": 800, "home_site": "site-gerland"}),
        ),
        (
            "transport",
            "register_vehicle",
            "demo-vehicle-kangoo",
            json!({
            "vehicle_id": "veh-kangoo", "name": "Kangoo", "capacity_kg": 500, "volume_l": 3000,
            "chilled_capacity_kg": 0, "home_site": "site-gerland"}),
        ),
        (
            "transport",
            "register_vehicle",
            "demo-vehicle-trafic",
            json!({
            "vehicle_id": "veh-trafic", "name": "Renault Trafic", "capacity_kg": 900, "volume_l": 6000,
            "chilled_capacity_kg": 0, "home_site": "site-gerland"}),
        ),
        (
            "donations",
            "set_collections",
            "demo-collections-lidl",
            json!({"donor_id": "donor-lidl-villeurbanne", "collections": [
                {"day": "Mon", "opens": "08:30:00", "closes": "10:00:00", "kg": 150, "chilled_kg": 50, "site_id": "site-gerland"},
                {"day": "Thu", "opens": "08:30:00", "closes": "10:00:00", "kg": 150, "chilled_kg": 50, "site_id": "site-gerland"}]}),
        ),
        (
            "transport",
            "register_driver",
            "demo-driver-monique",
            json!({"driver_id": "drv-monique", "name": "Monique", "vehicles": ["veh-master-frigo", "veh-kangoo"],
                   "max_shift_minutes": 360}),
        ),
        (
            "transport",
            "register_driver",
            "demo-driver-karim",
            json!({"driver_id": "drv-karim", "name": "Karim", "vehicles": ["veh-trafic", "veh-kangoo"],
                   "max_shift_minutes": 300}),
        ),
        (
            "transport",
            "set_driver_availability",
            "demo-free-monique",
            json!({"driver_id": "drv-monique", "date": day(1), "slots": [{"from": "07:30:00", "to": "14:00:00"}]}),
        ),
        (
            "transport",
            "set_driver_availability",
            "demo-free-karim",
            json!({"driver_id": "drv-karim", "date": day(1), "slots": [{"from": "08:00:00", "to": "17:00:00"}]}),
        ),
        // Both free today as well, for a parcel shipped today to reach its relay point today.
        (
            "transport",
            "set_driver_availability",
            "demo-free-monique-today",
            json!({"driver_id": "drv-monique", "date": day(0), "slots": [{"from": "07:30:00", "to": "14:00:00"}]}),
        ),
        (
            "transport",
            "set_driver_availability",
            "demo-free-karim-today",
            json!({"driver_id": "drv-karim", "date": day(0), "slots": [{"from": "08:00:00", "to": "17:00:00"}]}),
        ),
        (
            "transport",
            "schedule_job",
            "demo-pickup-carrefour",
            json!({"job_id": "job-pickup-carrefour", "date": day(1), "site_id": "site-gerland", "kind": "pickup",
                   "party_id": "donor-carrefour-venissieux", "kg": 180, "chilled_kg": 60,
                   "address": "Boulevard Ambroise Croizat, 69200 Vénissieux", "position": {"lat": 45.7071, "lon": 4.8793},
                   "contact": "Réception marchandises, quai 2", "opens": "08:00:00", "closes": "10:00:00",
                   "service_minutes": 25}),
        ),
        (
            "transport",
            "schedule_job",
            "demo-pickup-ferme",
            json!({"job_id": "job-pickup-ferme", "date": day(1), "site_id": "site-gerland", "kind": "pickup",
                   "party_id": "donor-ferme-monts-dor", "kg": 120, "contact": "M. Girard",
                   "address": "Chemin de la Roche, 69250 Poleymieux-au-Mont-d'Or", "position": {"lat": 45.8612, "lon": 4.8039},
                   "opens": "09:00:00", "closes": "12:00:00", "service_minutes": 20}),
        ),
    ]
}

#[allow(clippy::too_many_arguments)]
fn product(
    key: &'static str,
    gtin: &str,
    name: &str,
    group: &str,
    unit_g: u32,
    storage: &str,
    date_kind: &str,
    allergens: &[&str],
) -> (&'static str, &'static str, &'static str, Value) {
    let body = json!({"gtin": gtin, "name": name, "food_group": group, "unit_weight_g": unit_g,
                      "storage": storage, "date_kind": date_kind, "allergens": allergens});
    ("donations", "define_product", key, body)
}

/// Sends a command, retrying while the services are still subscribing.
async fn send(client: &ServiceClient, service: &str, name: &str, request: &CommandRequest) -> Result<(), ServiceError> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match client.command(service, name, request).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind == ErrorKind::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The demo's people: one token for each role, so each screen of the web app can be tried.
const DEMO_PEOPLE: [(&str, runtime::Role, Option<&str>, &str); 4] = [
    ("admin", runtime::Role::Admin, None, "demo admin"),
    ("warehouse", runtime::Role::Warehouse, None, "demo warehouse volunteer"),
    ("association", runtime::Role::Association, Some("asso-restos-vaulx"), "demo Restos du Cœur Vaulx"),
    ("driver", runtime::Role::Driver, Some("drv-monique"), "demo driver Monique"),
];

/// What loading the demo gives back: a token per role (`admin`, `warehouse`, `association`,
/// `driver`), also saved in `demo-tokens.json` (and the admin's in `demo-admin-token`).
#[derive(Debug)]
pub struct Loaded {
    pub commands: usize,
    pub tokens: Vec<(&'static str, String)>,
    pub token_file: std::path::PathBuf,
}

impl Loaded {
    /// What to tell the user: sign-in links for the web app at `base`.
    pub fn summary(&self, base: Option<&str>) -> String {
        let mut out =
            format!("demo data loaded ({} commands). Tokens (also in {}):\n", self.commands, self.token_file.display());
        for (who, token) in &self.tokens {
            match base {
                Some(base) => out.push_str(&format!("  {who:<12} {base}/#token={token}\n")),
                None => out.push_str(&format!("  {who:<12} {token}\n")),
            }
        }
        out
    }
}

/// Loads the demo data and makes sure the demo's tokens exist (kept across restarts).
pub async fn load(
    client: &ServiceClient,
    store: &eventstore::EventStore,
    settings: &Settings,
) -> anyhow::Result<Loaded> {
    let actor = Actor::system("demo");
    let list = commands(chrono::Utc::now(), settings.time_zone);
    for (service, name, key, payload) in &list {
        let request = CommandRequest::new(*key, actor.clone(), payload.clone());
        send(client, service, name, &request).await.with_context(|| format!("{service}.{name} ({key})"))?;
    }
    let token_file = settings.data_dir.join("demo-tokens.json");
    let store = gateway::TokenStore::open(store.jetstream(), settings.nats.replicas, settings.token_cache()).await?;
    let saved: std::collections::BTreeMap<String, String> =
        std::fs::read_to_string(&token_file).ok().and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default();
    let mut tokens = Vec::new();
    for (who, role, scope, name) in DEMO_PEOPLE {
        let token = match saved.get(who) {
            Some(t) if store.authenticate(t).await?.is_some() => t.clone(),
            _ => store.create(role, scope.map(str::to_owned), name).await?.0,
        };
        tokens.push((who, token));
    }
    let by_role: std::collections::BTreeMap<_, _> = tokens.iter().cloned().collect();
    std::fs::write(&token_file, serde_json::to_string_pretty(&by_role)?)
        .with_context(|| format!("writing {}", token_file.display()))?;
    let admin = settings.data_dir.join("demo-admin-token");
    std::fs::write(&admin, &tokens[0].1).with_context(|| format!("writing {}", admin.display()))?;
    Ok(Loaded { commands: list.len(), tokens, token_file })
}
