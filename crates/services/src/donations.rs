//! Donations service: donors and their agreements, the product catalogue (GTIN lookup),
//! donations with each line accepted or refused, and donor statements.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use donations::{
    Agreement, Donation, DonationCommand, DonationEvent, Donor, DonorCommand, DonorEvent, DonorKind, LineInput,
    Product, ProductCommand, ProductDetails, ProductEvent, RecordedLine, Refusal,
};
use eventcore::AggregateId;
use projections::{ApplyError, Engine, Projection, ProjectionStore, RecordedEvent, Tx, View};
use runtime::{Role, ServiceError, ServiceHost};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use values::Calendar;
use values::{Allergen, DateKind, FoodGroup, GeoPoint, Gtin, Name, ProductFacts, StorageClass, Traits};

use crate::common::{
    aggregate_command, csv_field, enum_schema, meta, new_id, not_in_future, number, parse_id, process_command,
    projection_query, storage, Position, ServiceContext,
};

pub const SERVICE: &str = "donations";

fn donor_kind_schema() -> utoipa::openapi::Object {
    enum_schema(&["retailer", "producer", "wholesaler", "public_programme", "food_drive", "individual"])
}

pub(crate) fn food_group_schema() -> utoipa::openapi::Object {
    enum_schema(&FoodGroup::ALL.map(FoodGroup::as_str))
}

pub(crate) fn storage_schema() -> utoipa::openapi::Object {
    enum_schema(&["ambient", "chilled", "frozen"])
}

fn date_kind_schema() -> utoipa::openapi::Object {
    enum_schema(&["dlc", "ddm", "none"])
}

// ---------------------------------------------------------------------------------------------
// Donors

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDonor {
    /// Optional client-chosen id; derived from the idempotency key when absent.
    pub donor_id: Option<String>,
    #[schema(schema_with = donor_kind_schema)]
    pub kind: DonorKind,
    #[schema(value_type = String, example = "Carrefour Vénissieux")]
    pub name: Name,
    #[serde(default)]
    pub address: String,
    #[schema(value_type = Option<Position>)]
    pub position: Option<GeoPoint>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDonor {
    pub donor_id: String,
    #[schema(value_type = Option<String>)]
    pub name: Option<Name>,
    pub address: Option<String>,
    #[schema(value_type = Option<Position>)]
    pub position: Option<GeoPoint>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignAgreement {
    pub donor_id: String,
    /// The agreement's reference, as written on it.
    #[schema(example = "CONV-2026-014")]
    pub reference: String,
    /// Minimum remaining life of use-by products for this donor, hours (default rule: 48).
    pub dlc_min_hours: u32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndAgreement {
    pub donor_id: String,
}

/// Replaces a donor's weekly collections:
/// `[{"day": "Tue", "opens": "09:00:00", "closes": "11:00:00", "kg": 150, "chilled_kg": 40,
/// "site_id": "..."}]`; none: the donor brings its gifts itself.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetCollections {
    pub donor_id: String,
    #[schema(value_type = Vec<Object>)]
    pub collections: Vec<donations::Collection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgreementRow {
    pub reference: String,
    pub dlc_min_hours: u32,
    pub signed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DonorRow {
    pub donor_id: String,
    #[schema(schema_with = donor_kind_schema)]
    pub kind: DonorKind,
    pub name: String,
    pub address: String,
    pub position: Option<Position>,
    #[serde(default)]
    pub agreement: Option<AgreementRow>,
    /// Weekly collections at the donor's, which become pickup jobs day by day.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub collections: Vec<donations::Collection>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListDonors {
    #[schema(schema_with = donor_kind_schema)]
    pub kind: Option<DonorKind>,
    /// Case-insensitive part of the name.
    pub q: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetDonor {
    pub donor_id: String,
}

/// Donors by id.
pub struct DonorsProjection;

impl Projection for DonorsProjection {
    fn name(&self) -> &'static str {
        "donors"
    }

    /// Bump when what `apply` writes changes: the rows are then rebuilt on start.
    fn version(&self) -> u32 {
        1
    }

    fn streams(&self) -> &'static [&'static str] {
        &[SERVICE]
    }

    fn apply(&self, tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError> {
        if event.aggregate_kind != "donor" {
            return Ok(());
        }
        let id = event.envelope.aggregate_id.as_bytes();
        let at = event.envelope.occurred_at;
        match event.decode::<DonorEvent>()? {
            DonorEvent::DonorRegistered { kind, name, address, position } => {
                let row = DonorRow {
                    donor_id: event.envelope.aggregate_id.to_string(),
                    kind,
                    name: name.into(),
                    address,
                    position: position.map(Position::from),
                    agreement: None,
                    collections: vec![],
                    registered_at: at,
                    updated_at: at,
                };
                tx.put_json("donor", id, &row);
            }
            DonorEvent::DonorUpdated { name, address, position } => {
                tx.update_json("donor", id, |row: &mut DonorRow| {
                    row.name = name.into();
                    row.address = address;
                    row.position = position.map(Position::from);
                    row.updated_at = at;
                })?;
            }
            DonorEvent::AgreementSigned(Agreement { reference, dlc_min_hours }) => {
                tx.update_json("donor", id, |row: &mut DonorRow| {
                    row.agreement = Some(AgreementRow { reference, dlc_min_hours, signed_at: at });
                    row.updated_at = at;
                })?;
            }
            DonorEvent::AgreementEnded {} => {
                tx.update_json("donor", id, |row: &mut DonorRow| {
                    row.agreement = None;
                    row.updated_at = at;
                })?;
            }
            DonorEvent::CollectionsSet { collections } => {
                tx.update_json("donor", id, |row: &mut DonorRow| {
                    row.collections = collections;
                    row.updated_at = at;
                })?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Products

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductBody {
    /// EAN-8, UPC-A, EAN-13 or GTIN-14, check digit verified; stored as 14 digits.
    #[schema(value_type = Option<String>, example = "3017620422003")]
    pub gtin: Option<Gtin>,
    #[schema(value_type = String, example = "Pâtes complètes 500 g")]
    pub name: Name,
    #[schema(schema_with = food_group_schema)]
    pub food_group: FoodGroup,
    /// Grams per unit, when units have a known weight.
    pub unit_weight_g: Option<u32>,
    #[schema(schema_with = storage_schema)]
    pub storage: StorageClass,
    /// `dlc` (use-by), `ddm` (best-before) or `none`.
    #[schema(schema_with = date_kind_schema)]
    pub date_kind: DateKind,
    /// Any of the 14 EU allergens: gluten, crustaceans, eggs, fish, peanuts, soybeans, milk,
    /// nuts, celery, mustard, sesame, sulphites, lupin, molluscs.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub allergens: BTreeSet<Allergen>,
    /// `{"meat", "pork", "halal", "ready_to_eat"}` (all false by default): what diets check.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub traits: Traits,
}

impl From<ProductBody> for ProductDetails {
    fn from(b: ProductBody) -> Self {
        ProductDetails {
            gtin: b.gtin,
            name: b.name,
            food_group: b.food_group,
            unit_weight_g: b.unit_weight_g,
            storage: b.storage,
            date_kind: b.date_kind,
            allergens: b.allergens,
            traits: b.traits,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefineProduct {
    /// For products without a GTIN: optional client-chosen id. Products with a GTIN always get
    /// the id `gtin-<14 digits>`.
    pub product_id: Option<String>,
    #[serde(flatten)]
    pub details: ProductBody,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    pub product_id: String,
    #[serde(flatten)]
    pub details: ProductBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProductRow {
    pub product_id: String,
    /// 14 digits.
    pub gtin: Option<String>,
    pub name: String,
    #[schema(schema_with = food_group_schema)]
    pub food_group: FoodGroup,
    pub unit_weight_g: Option<u32>,
    #[schema(schema_with = storage_schema)]
    pub storage: StorageClass,
    #[schema(schema_with = date_kind_schema)]
    pub date_kind: DateKind,
    #[schema(value_type = Vec<String>)]
    pub allergens: BTreeSet<Allergen>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub traits: Traits,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetProduct {
    pub product_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupGtin {
    #[schema(value_type = String)]
    pub gtin: Gtin,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListProducts {
    #[schema(schema_with = food_group_schema)]
    pub food_group: Option<FoodGroup>,
    /// Case-insensitive part of the name.
    pub q: Option<String>,
}

/// The catalogue, by id and by GTIN.
pub struct ProductsProjection;

impl Projection for ProductsProjection {
    fn name(&self) -> &'static str {
        "products"
    }

    /// Bump when what `apply` writes changes: the rows are then rebuilt on start.
    fn version(&self) -> u32 {
        1
    }

    fn streams(&self) -> &'static [&'static str] {
        &[SERVICE]
    }

    fn apply(&self, tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError> {
        if event.aggregate_kind != "product" {
            return Ok(());
        }
        let (ProductEvent::ProductDefined(d) | ProductEvent::ProductUpdated(d)) = event.decode::<ProductEvent>()?;
        let id = event.envelope.aggregate_id.as_ref();
        if let Some(gtin) = &d.gtin {
            tx.put("gtin", gtin.as_str().as_bytes(), id.as_bytes().to_vec());
        }
        let row = ProductRow {
            product_id: id.to_owned(),
            gtin: d.gtin.map(String::from),
            name: d.name.into(),
            food_group: d.food_group,
            unit_weight_g: d.unit_weight_g,
            storage: d.storage,
            date_kind: d.date_kind,
            allergens: d.allergens,
            traits: d.traits,
            updated_at: event.envelope.occurred_at,
        };
        tx.put_json("product", id.as_bytes(), &row);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Donations

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DonationLineBody {
    /// The product, by id or by GTIN (one of the two).
    pub product_id: Option<String>,
    #[schema(value_type = Option<String>)]
    pub gtin: Option<Gtin>,
    /// Units received (packs, cans, crates...).
    pub quantity: u32,
    /// Total weight of the line, grams.
    pub weight_g: u64,
    pub lot_number: Option<String>,
    /// The use-by (DLC) or best-before (DDM) date printed on the product.
    pub date: Option<NaiveDate>,
    /// Measured at reception, °C; required for chilled and frozen products.
    pub temperature_c: Option<f64>,
    /// Value declared by the donor, euro cents (for its tax receipt).
    pub declared_value_cents: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordDonation {
    /// Optional client-chosen id; derived from the idempotency key when absent.
    pub donation_id: Option<String>,
    pub donor_id: String,
    pub site_id: String,
    /// When the goods were received; defaults to `X-Occurred-At`, then to now.
    pub received_at: Option<DateTime<Utc>>,
    pub lines: Vec<DonationLineBody>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RefusalRow {
    /// `dlc_passed`, `dlc_too_close`, `ddm_beyond_grace` or `cold_chain_break`.
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DonationLineRow {
    pub line: u32,
    pub product_id: String,
    pub product_name: String,
    #[schema(schema_with = food_group_schema)]
    pub food_group: FoodGroup,
    pub quantity: u32,
    pub weight_g: u64,
    pub lot_number: Option<String>,
    pub date: Option<NaiveDate>,
    pub temperature_c: Option<f64>,
    pub declared_value_cents: Option<u64>,
    pub accepted: bool,
    pub past_best_before: bool,
    pub refusal: Option<RefusalRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DonationRow {
    pub donation_id: String,
    pub donor_id: String,
    pub site_id: String,
    pub received_at: DateTime<Utc>,
    pub recorded_by: String,
    pub lines: Vec<DonationLineRow>,
}

/// Goods a driver collected, waiting at the site to be checked in: record them with
/// `POST /api/donations` and this `donation_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IncomingRow {
    pub donation_id: String,
    pub donor_id: String,
    pub site_id: String,
    pub collected_at: DateTime<Utc>,
    /// As weighed (or estimated) by the driver.
    pub kg: f64,
    pub chilled_kg: f64,
    /// The transport job that collected it.
    pub job_id: String,
    /// Why it must be inspected at check-in (chilled goods out of the cold too long).
    pub inspect: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListIncoming {
    pub site_id: Option<String>,
}

/// A driver's collection, announced to the site (the platform's transport saga).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectDonation {
    pub donation_id: String,
    pub donor_id: String,
    pub site_id: String,
    pub collected_at: DateTime<Utc>,
    pub grams: u64,
    #[serde(default)]
    pub chilled_grams: u64,
    pub job_id: String,
    #[serde(default)]
    pub inspect: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListDonations {
    pub donor_id: Option<String>,
    pub site_id: Option<String>,
    /// First day received (inclusive).
    pub from: Option<NaiveDate>,
    /// Last day received (inclusive).
    pub to: Option<NaiveDate>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetDonation {
    pub donation_id: String,
}

/// Per donor, year and food group: what was accepted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct StatementCell {
    food_group: Option<FoodGroup>,
    lines: u64,
    weight_g: u64,
    declared_value_cents: u64,
}

/// Donations by id, and per donor, year and food group, the totals statements are made of.
/// Days a donation may be recorded after it was received (`received_at`, `X-Occurred-At`):
/// a backlog of paper forms, not a rewrite of last year's stock.
pub const BACKDATE_DAYS: i64 = 31;

pub struct DonationsProjection {
    /// Statements count a donation in the year it was received, here.
    pub calendar: Calendar,
}

impl DonationsProjection {
    pub const NAME: &'static str = "donations";
}

impl Projection for DonationsProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    /// Bump when what `apply` writes changes: the rows are then rebuilt on start.
    fn version(&self) -> u32 {
        // The time zone's digest is part of it: lists by day and statements by year are local.
        const VERSION: u32 = 2;
        VERSION * 1000 + self.calendar.digest()
    }

    fn streams(&self) -> &'static [&'static str] {
        &[SERVICE]
    }

    fn apply(&self, tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError> {
        if event.aggregate_kind != "donation" {
            return Ok(());
        }
        let id = event.envelope.aggregate_id.as_ref();
        let (line, outcome) = match event.decode::<DonationEvent>()? {
            DonationEvent::DonationExpected(incoming) => {
                let row = IncomingRow {
                    donation_id: id.to_owned(),
                    donor_id: incoming.donor_id,
                    site_id: incoming.site_id,
                    collected_at: incoming.collected_at,
                    kg: incoming.grams as f64 / 1000.0,
                    chilled_kg: incoming.chilled_grams as f64 / 1000.0,
                    job_id: incoming.job_id,
                    inspect: incoming.inspect,
                };
                tx.put_json("incoming", id.as_bytes(), &row);
                return Ok(());
            }
            DonationEvent::DonationRecorded { donor_id, site_id, received_at, lines } => {
                // Checked in: no longer waiting.
                tx.delete("incoming", id.as_bytes());
                let row = DonationRow {
                    donation_id: id.to_owned(),
                    donor_id: donor_id.clone(),
                    site_id,
                    received_at,
                    recorded_by: event.envelope.actor.to_string(),
                    lines: Vec::with_capacity(lines as usize),
                };
                tx.put_json("donation", id.as_bytes(), &row);
                // Listed by time received: keys sort by date.
                tx.put("by_time", time_key(&self.calendar, received_at, id).as_bytes(), id.as_bytes().to_vec());
                let key = statement_key(&donor_id, self.calendar.year_of(received_at), None);
                let count: u64 = tx.get_json("year_count", key.as_bytes())?.unwrap_or(0);
                tx.put_json("year_count", key.as_bytes(), &count.saturating_add(1));
                return Ok(());
            }
            DonationEvent::LineAccepted { line, past_best_before } => (line, Ok(past_best_before)),
            DonationEvent::LineRefused { line, reason } => (line, Err(reason)),
        };
        let mut donation: DonationRow = tx
            .get_json("donation", id.as_bytes())?
            .ok_or_else(|| ApplyError(format!("line of unknown donation {id}")))?;
        if outcome.is_ok() {
            let year = self.calendar.year_of(donation.received_at);
            let key = statement_key(&donation.donor_id, year, Some(line.input.product.food_group));
            let mut cell: StatementCell = tx.get_json("statement", key.as_bytes())?.unwrap_or_default();
            cell.food_group = Some(line.input.product.food_group);
            // Saturating: a sum that wrapped (or panicked) would stop the projection for good;
            // the lines are bounded, so these never reach it.
            cell.lines = cell.lines.saturating_add(1);
            cell.weight_g = cell.weight_g.saturating_add(line.input.weight_g);
            cell.declared_value_cents =
                cell.declared_value_cents.saturating_add(line.input.declared_value_cents.unwrap_or(0));
            tx.put_json("statement", key.as_bytes(), &cell);
        }
        donation.lines.push(line_row(line, outcome));
        tx.put_json("donation", id.as_bytes(), &donation);
        Ok(())
    }
}

fn line_row(line: RecordedLine, outcome: Result<bool, Refusal>) -> DonationLineRow {
    DonationLineRow {
        line: line.line,
        product_id: line.input.product.product_id,
        product_name: line.input.product.name,
        food_group: line.input.product.food_group,
        quantity: line.input.quantity,
        weight_g: line.input.weight_g,
        lot_number: line.input.lot_number,
        date: line.input.date,
        temperature_c: line.input.temperature_c,
        declared_value_cents: line.input.declared_value_cents,
        accepted: outcome.is_ok(),
        past_best_before: outcome.as_ref().is_ok_and(|p| *p),
        refusal: outcome.err().map(|r| RefusalRow { code: r.code().to_owned(), message: r.message() }),
    }
}

/// Sorts by the day received here (what `from` and `to` filter on), then by the instant.
fn time_key(calendar: &Calendar, at: DateTime<Utc>, id: &str) -> String {
    format!("{}\0{}\0{id}", calendar.day_of(at), at.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
}

fn statement_key(donor: &str, year: i32, group: Option<FoodGroup>) -> String {
    match group {
        Some(g) => format!("{donor}\0{year:04}\0{g}"),
        None => format!("{donor}\0{year:04}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Donor statements

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetStatement {
    pub donor_id: String,
    #[serde(deserialize_with = "number")]
    pub year: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatementLine {
    #[schema(schema_with = food_group_schema)]
    pub food_group: FoodGroup,
    pub lines: u64,
    pub kg: f64,
    /// Sum of the values the donor declared, euro cents (lines without one count 0).
    pub declared_value_cents: u64,
}

/// What a donor gave in a calendar year: the attestation it keeps for its tax receipt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DonorStatement {
    pub donor_id: String,
    pub donor_name: String,
    #[schema(schema_with = donor_kind_schema)]
    pub donor_kind: DonorKind,
    pub donor_address: String,
    pub year: i32,
    pub donations: u64,
    pub lines: Vec<StatementLine>,
    pub total_kg: f64,
    pub total_declared_value_cents: u64,
    /// Total weight divided by `meal_grams`, rounded down.
    pub meals: u64,
    pub meal_grams: u32,
}

fn statement(
    view: &View,
    donors: &View,
    meal_grams: u32,
    params: GetStatement,
) -> Result<DonorStatement, ServiceError> {
    let donor: DonorRow = donors
        .get_json("donor", params.donor_id.as_bytes())
        .map_err(storage)?
        .ok_or_else(|| ServiceError::not_found("donor_not_found", format!("no donor {}", params.donor_id)))?;
    if !(2000..=9999).contains(&params.year) {
        return Err(ServiceError::validation("invalid_year", "year must be between 2000 and 9999"));
    }
    let prefix = format!("{}\0", statement_key(&donor.donor_id, params.year, None));
    let mut lines: Vec<(FoodGroup, StatementCell)> = view
        .scan_json::<StatementCell>("statement", prefix.as_bytes())
        .map_err(storage)?
        .into_iter()
        .filter_map(|cell| Some((cell.food_group?, cell)))
        .collect();
    lines.sort_by_key(|(g, _)| *g);
    let total_g = lines.iter().fold(0u64, |sum, (_, c)| sum.saturating_add(c.weight_g));
    let donations: u64 = view
        .get_json("year_count", statement_key(&donor.donor_id, params.year, None).as_bytes())
        .map_err(storage)?
        .unwrap_or(0);
    Ok(DonorStatement {
        donor_id: donor.donor_id,
        donor_name: donor.name,
        donor_kind: donor.kind,
        donor_address: donor.address,
        year: params.year,
        donations,
        total_kg: kg(total_g),
        total_declared_value_cents: lines.iter().fold(0, |sum, (_, c)| sum.saturating_add(c.declared_value_cents)),
        meals: total_g / u64::from(meal_grams.max(1)),
        meal_grams,
        lines: lines
            .into_iter()
            .map(|(food_group, c)| StatementLine {
                food_group,
                lines: c.lines,
                kg: kg(c.weight_g),
                declared_value_cents: c.declared_value_cents,
            })
            .collect(),
    })
}

fn kg(grams: u64) -> f64 {
    grams as f64 / 1000.0
}

fn euros(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// The statement as CSV: one row per food group, then a total row.
pub fn statement_csv(s: &DonorStatement) -> String {
    let mut out = String::from("donor_id,donor_name,year,food_group,lines,kg,declared_value_eur\n");
    let name = csv_field(&s.donor_name);
    for l in &s.lines {
        out.push_str(&format!(
            "{},{name},{},{},{},{:.3},{}\n",
            csv_field(&s.donor_id),
            s.year,
            l.food_group,
            l.lines,
            l.kg,
            euros(l.declared_value_cents)
        ));
    }
    out.push_str(&format!(
        "{},{name},{},total,{},{:.3},{}\n",
        csv_field(&s.donor_id),
        s.year,
        s.lines.iter().map(|l| l.lines).sum::<u64>(),
        s.total_kg,
        euros(s.total_declared_value_cents)
    ));
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The statement as a printable HTML page, the attestation the donor keeps.
pub fn statement_html(s: &DonorStatement) -> String {
    let rows: String = s
        .lines
        .iter()
        .map(|l| {
            format!(
                "<tr><td>{}</td><td class=n>{}</td><td class=n>{:.3}</td><td class=n>{} €</td></tr>\n",
                food_group_label(l.food_group),
                l.lines,
                l.kg,
                euros(l.declared_value_cents)
            )
        })
        .collect();
    format!(
        r#"<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><title>Attestation de dons {year} — {name}</title>
<style>
body {{ font: 14px/1.5 system-ui, sans-serif; max-width: 48rem; margin: 2rem auto; color: #111; }}
table {{ border-collapse: collapse; width: 100%; }} th, td {{ border-bottom: 1px solid #999; padding: .3rem .5rem; text-align: left; }}
.n {{ text-align: right; }} tfoot td {{ font-weight: bold; }} @media print {{ body {{ margin: 0; }} }}
</style></head><body>
<h1>Attestation de dons alimentaires — {year}</h1>
<p><strong>{name}</strong><br>{address}</p>
<p>Donateur n° {id}. Dons reçus du 1<sup>er</sup> janvier au 31 décembre {year} : {donations} réception(s).</p>
<table><thead><tr><th>Famille de produits</th><th class=n>Lignes</th><th class=n>Poids (kg)</th><th class=n>Valeur déclarée</th></tr></thead>
<tbody>
{rows}</tbody>
<tfoot><tr><td>Total</td><td class=n>{total_lines}</td><td class=n>{total_kg:.3}</td><td class=n>{total_value} €</td></tr></tfoot></table>
<p>Soit environ <strong>{meals}</strong> repas (à raison de {meal_grams} g par repas).</p>
<p>Seules les marchandises acceptées à la réception sont comptées.</p>
</body></html>
"#,
        year = s.year,
        name = html_escape(&s.donor_name),
        address = html_escape(&s.donor_address),
        id = html_escape(&s.donor_id),
        donations = s.donations,
        total_lines = s.lines.iter().map(|l| l.lines).sum::<u64>(),
        total_kg = s.total_kg,
        total_value = euros(s.total_declared_value_cents),
        meals = s.meals,
        meal_grams = s.meal_grams,
    )
}

fn food_group_label(g: FoodGroup) -> &'static str {
    match g {
        FoodGroup::Starches => "Féculents",
        FoodGroup::FruitVegetables => "Fruits et légumes",
        FoodGroup::Dairy => "Produits laitiers",
        FoodGroup::MeatFishEggs => "Viande, poisson, œufs",
        FoodGroup::Fats => "Matières grasses",
        FoodGroup::SugarySalty => "Produits sucrés et salés",
        FoodGroup::Drinks => "Boissons",
        FoodGroup::BabyFood => "Alimentation infantile",
        FoodGroup::Hygiene => "Hygiène",
    }
}

// ---------------------------------------------------------------------------------------------
// Wiring

pub fn build(ctx: &ServiceContext, engine: &mut Engine) -> ServiceHost {
    let mut host = ServiceHost::new(SERVICE);
    let donors = ctx.runner::<Donor>(SERVICE);
    let products = ctx.runner::<Product>(SERVICE);
    let donations = ctx.runner::<Donation>(SERVICE);
    let donors_view = engine.register(DonorsProjection);
    let products_view = engine.register(ProductsProjection);
    let donations_view = engine.register(DonationsProjection { calendar: ctx.calendar });
    let warehouse: &'static [Role] = &[Role::Warehouse];

    aggregate_command(&mut host, "register_donor", &donors, warehouse, |body: RegisterDonor, request| {
        let id = new_id(body.donor_id, request, "donor")?;
        Ok((
            id,
            DonorCommand::Register { kind: body.kind, name: body.name, address: body.address, position: body.position },
        ))
    });
    aggregate_command(&mut host, "update_donor", &donors, warehouse, |body: UpdateDonor, _| {
        let id = parse_id(&body.donor_id, "donor")?;
        Ok((id, DonorCommand::Update { name: body.name, address: body.address, position: body.position }))
    });
    aggregate_command(&mut host, "sign_agreement", &donors, &[], |body: SignAgreement, _| {
        let id = parse_id(&body.donor_id, "donor")?;
        Ok((
            id,
            DonorCommand::SignAgreement(Agreement { reference: body.reference, dlc_min_hours: body.dlc_min_hours }),
        ))
    });
    aggregate_command(&mut host, "end_agreement", &donors, &[], |body: EndAgreement, _| {
        Ok((parse_id(&body.donor_id, "donor")?, DonorCommand::EndAgreement))
    });
    let sites = ctx.runner::<stock::Site>(crate::stock::SERVICE);
    process_command(
        &mut host,
        "set_collections",
        warehouse,
        (donors.clone(), sites.clone()),
        |(donors, sites), request, body: SetCollections| async move {
            let id = parse_id(&body.donor_id, "donor")?;
            if let Some(first) = donors.answered(&id, &request.command_id).await? {
                return Ok(first);
            }
            // Every collection goes to a site that exists: a job is made for it.
            for site in body.collections.iter().map(|c| c.site_id.as_str()).collect::<BTreeSet<_>>() {
                crate::stock::known_site(&sites, site).await?;
            }
            donors.execute(id, DonorCommand::SetCollections(body.collections), meta(&request)).await
        },
    );

    aggregate_command(&mut host, "define_product", &products, warehouse, |body: DefineProduct, request| {
        let id = match &body.details.gtin {
            Some(gtin) => {
                let id = Product::id_for_gtin(gtin);
                if body.product_id.as_ref().is_some_and(|given| *given != id) {
                    return Err(ServiceError::validation(
                        "invalid_product_id",
                        format!("a product with a GTIN has the id {id}"),
                    ));
                }
                parse_id(&id, "product")?
            }
            None => new_id(body.product_id, request, "product")?,
        };
        Ok((id, ProductCommand::Define(body.details.into())))
    });
    aggregate_command(&mut host, "update_product", &products, warehouse, |body: UpdateProduct, _| {
        Ok((parse_id(&body.product_id, "product")?, ProductCommand::Update(body.details.into())))
    });

    let rules = Arc::new(ctx.policies.reception.clone());
    let calendar = ctx.calendar;
    let state = (sites, donors.clone(), products.clone(), donations.clone(), rules);
    process_command(
        &mut host,
        "record_donation",
        warehouse,
        state,
        move |(sites, donors, products, donations, rules), request, body: RecordDonation| async move {
            let id = new_id(body.donation_id, &request, "donation")?;
            let received_at = body.received_at.or(request.occurred_at).unwrap_or_else(Utc::now);
            not_in_future(received_at, "received_in_future")?;
            if received_at < Utc::now() - chrono::Duration::days(BACKDATE_DAYS) {
                return Err(ServiceError::validation(
                    "received_too_long_ago",
                    format!("{received_at} is more than {BACKDATE_DAYS} days ago: stock as it was then cannot change"),
                ));
            }
            let donor_id = parse_id(&body.donor_id, "donor")?;
            let (donor, _) = donors.load(&donor_id).await?;
            if donor.registered.is_none() {
                return Err(ServiceError::not_found("donor_not_found", format!("no donor {donor_id}")));
            }
            let site_id = parse_id(&body.site_id, "site")?;
            // Sites are never removed: a cached one is as good as a fresh one.
            if sites.load_cached(&site_id).await?.name.is_none() {
                return Err(ServiceError::not_found("site_not_found", format!("no site {site_id}")));
            }
            let mut known: BTreeMap<AggregateId, ProductDetails> = BTreeMap::new();
            let mut lines = Vec::with_capacity(body.lines.len());
            for (i, line) in body.lines.into_iter().enumerate() {
                let n = i + 1;
                let product_id = match (&line.product_id, &line.gtin) {
                    (Some(id), None) => parse_id(id, "product")?,
                    (None, Some(gtin)) => parse_id(&Product::id_for_gtin(gtin), "product")?,
                    _ => {
                        return Err(ServiceError::validation(
                            "product_required",
                            format!("line {n}: give either product_id or gtin"),
                        ))
                    }
                };
                if !known.contains_key(&product_id) {
                    let details = products.load(&product_id).await?.0.details.ok_or_else(|| {
                        ServiceError::not_found(
                            "product_not_found",
                            format!("line {n}: no product {product_id}; define it first"),
                        )
                    })?;
                    known.insert(product_id.clone(), details);
                }
                let details = &known[&product_id];
                lines.push(LineInput {
                    product: ProductFacts {
                        product_id: product_id.to_string(),
                        name: details.name.to_string(),
                        gtin: details.gtin.clone(),
                        food_group: details.food_group,
                        storage: details.storage,
                        date_kind: details.date_kind,
                        allergens: details.allergens.clone(),
                        traits: details.traits,
                    },
                    quantity: line.quantity,
                    weight_g: line.weight_g,
                    lot_number: line.lot_number,
                    date: line.date,
                    temperature_c: line.temperature_c,
                    declared_value_cents: line.declared_value_cents,
                });
            }
            let command = DonationCommand::Record {
                donor_id: donor_id.to_string(),
                site_id: site_id.to_string(),
                received_at,
                agreement_dlc_min_hours: donor.agreement.map(|a| a.dlc_min_hours),
                rules: (*rules).clone(),
                calendar,
                lines,
            };
            // Dated when it was received: its lots and the stock history are too.
            let dated = eventcore::CommandMeta { occurred_at: Some(received_at), ..meta(&request) };
            donations.execute(id, command, dated).await
        },
    );

    projection_query(&mut host, "list_donors", ctx, &donors_view, Some(warehouse), |view, params: ListDonors| {
        let needle = params.q.as_deref().map(str::to_lowercase);
        let mut rows: Vec<DonorRow> = view.scan_json("donor", b"").map_err(storage)?;
        rows.retain(|r| {
            params.kind.is_none_or(|k| k == r.kind)
                && needle.as_deref().is_none_or(|n| r.name.to_lowercase().contains(n))
        });
        rows.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.donor_id.cmp(&b.donor_id)));
        Ok(rows)
    });
    projection_query(&mut host, "get_donor", ctx, &donors_view, Some(warehouse), |view, params: GetDonor| {
        view.get_json::<DonorRow>("donor", params.donor_id.as_bytes())
            .map_err(storage)?
            .ok_or_else(|| ServiceError::not_found("donor_not_found", format!("no donor {}", params.donor_id)))
    });

    projection_query(&mut host, "get_product", ctx, &products_view, None, |view, params: GetProduct| {
        view.get_json::<ProductRow>("product", params.product_id.as_bytes())
            .map_err(storage)?
            .ok_or_else(|| ServiceError::not_found("product_not_found", format!("no product {}", params.product_id)))
    });
    projection_query(&mut host, "lookup_gtin", ctx, &products_view, None, |view, params: LookupGtin| {
        let unknown = || ServiceError::not_found("product_not_found", format!("no product has GTIN {}", params.gtin));
        let id = view.get("gtin", params.gtin.as_str().as_bytes()).map_err(storage)?.ok_or_else(unknown)?;
        view.get_json::<ProductRow>("product", &id).map_err(storage)?.ok_or_else(unknown)
    });
    projection_query(&mut host, "list_products", ctx, &products_view, None, |view, params: ListProducts| {
        let needle = params.q.as_deref().map(str::to_lowercase);
        let mut rows: Vec<ProductRow> = view.scan_json("product", b"").map_err(storage)?;
        rows.retain(|r| {
            params.food_group.is_none_or(|g| g == r.food_group)
                && needle.as_deref().is_none_or(|n| r.name.to_lowercase().contains(n))
        });
        rows.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.product_id.cmp(&b.product_id)));
        Ok(rows)
    });

    projection_query(&mut host, "list_donations", ctx, &donations_view, Some(warehouse), |view, p: ListDonations| {
        let from = p.from.map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default();
        let mut rows = Vec::new();
        for item in view.scan("by_time", b"") {
            let (key, id) = item.map_err(storage)?;
            let day = String::from_utf8_lossy(&key[..10.min(key.len())]).into_owned();
            if day < from {
                continue;
            }
            if p.to.is_some_and(|to| day > to.format("%Y-%m-%d").to_string()) {
                break;
            }
            let Some(row) = view.get_json::<DonationRow>("donation", &id).map_err(storage)? else { continue };
            if p.donor_id.as_ref().is_none_or(|d| *d == row.donor_id)
                && p.site_id.as_ref().is_none_or(|s| *s == row.site_id)
            {
                rows.push(row);
            }
        }
        rows.reverse();
        Ok(rows)
    });
    aggregate_command(&mut host, "expect_donation", &donations, &[], |body: ExpectDonation, _| {
        let incoming = donations::Incoming {
            donor_id: body.donor_id,
            site_id: body.site_id,
            collected_at: body.collected_at,
            grams: body.grams,
            chilled_grams: body.chilled_grams,
            job_id: body.job_id,
            inspect: body.inspect,
        };
        Ok((parse_id(&body.donation_id, "donation")?, DonationCommand::Expect(incoming)))
    });
    projection_query(&mut host, "list_incoming", ctx, &donations_view, Some(warehouse), |view, p: ListIncoming| {
        let mut rows: Vec<IncomingRow> = view.scan_json("incoming", b"").map_err(storage)?;
        rows.retain(|r| p.site_id.as_ref().is_none_or(|s| *s == r.site_id));
        rows.sort_by_key(|r| r.collected_at);
        Ok(rows)
    });
    projection_query(&mut host, "get_donation", ctx, &donations_view, Some(warehouse), |view, p: GetDonation| {
        view.get_json::<DonationRow>("donation", p.donation_id.as_bytes())
            .map_err(storage)?
            .ok_or_else(|| ServiceError::not_found("donation_not_found", format!("no donation {}", p.donation_id)))
    });

    let store: ProjectionStore = ctx.projections.clone();
    let meal_grams = ctx.policies.meal_grams;
    projection_query(
        &mut host,
        "donor_statement",
        ctx,
        &donations_view,
        Some(warehouse),
        move |view, p: GetStatement| {
            let donors = store.view(DonorsProjection.name()).map_err(storage)?;
            statement(view, &donors, meal_grams, p)
        },
    );
    host
}
