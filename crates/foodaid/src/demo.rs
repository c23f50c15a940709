//! A small, realistic data set for trying foodaid: one warehouse, a few donors of every kind,
//! associations with relay points in several communes, a small fleet. Loading it twice changes
//! nothing: every command has a fixed idempotency key and every aggregate a fixed id.

use std::time::{Duration, Instant};

use anyhow::Context;
use runtime::{Actor, CommandRequest, ErrorKind, ServiceClient, ServiceError};
use serde_json::{json, Value};

use crate::config::Settings;

fn commands() -> Vec<(&'static str, &'static str, &'static str, Value)> {
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
    ]
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

/// Loads the demo data and makes sure a demo admin token exists; returns what to tell the user.
pub async fn load(
    client: &ServiceClient,
    store: &eventstore::EventStore,
    settings: &Settings,
) -> anyhow::Result<String> {
    let actor = Actor::system("demo");
    let list = commands();
    for (service, name, key, payload) in &list {
        let request = CommandRequest::new(*key, actor.clone(), payload.clone());
        send(client, service, name, &request).await.with_context(|| format!("{service}.{name} ({key})"))?;
    }
    let token_file = settings.data_dir.join("demo-admin-token");
    let tokens = gateway::TokenStore::open(store.jetstream(), settings.nats.replicas, settings.token_cache()).await?;
    let existing = std::fs::read_to_string(&token_file).ok().map(|t| t.trim().to_owned());
    let token = match existing {
        Some(t) if tokens.authenticate(&t).await?.is_some() => t,
        _ => {
            let (t, _) = tokens.create(runtime::Role::Admin, None, "demo admin").await?;
            std::fs::write(&token_file, &t).with_context(|| format!("writing {}", token_file.display()))?;
            t
        }
    };
    Ok(format!("demo data loaded ({} commands). Admin token (also in {}):\n{token}", list.len(), token_file.display()))
}
