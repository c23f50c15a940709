//! Monthly distribution reports per association and commune, for funders and the collective's
//! board: parcels handed over, households and people served (by age band), kilograms per food
//! group, meal equivalents, the fresh share and how far needs were covered. Aggregates only:
//! no household id, no personal data.
//!
//! Counted when a parcel is handed over (collected, or redistributed to another household
//! after nobody came), in the month of its distribution day. "Fresh" is fruit and vegetables
//! and every use-by (DLC) product: the perishables funders ask about.

use std::collections::BTreeMap;

use distribution::{Composition, ParcelStatus};
use projections::{ApplyError, ProjectionHandle, Tx};
use runtime::{Role, ServiceError, ServiceHost};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use values::{DateKind, FoodGroup};

use super::parcels::ParcelRow;
use crate::common::{csv_field, scoped_query, storage, ServiceContext};

/// What the read model keeps per month, association and commune.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Tally {
    parcels: u64,
    not_collected: u64,
    households: u64,
    /// Adults, teens, children, infants.
    people: [u64; 4],
    grams: BTreeMap<FoodGroup, u64>,
    fresh_g: u64,
    need_g: u64,
    covered_g: u64,
}

/// Counts a parcel that reached its end: handed over to `household` (who are `people`), or
/// not collected.
pub(super) fn count(
    tx: &mut Tx,
    parcel: &ParcelRow,
    status: ParcelStatus,
    household: &str,
    people: Option<Composition>,
) -> Result<(), ApplyError> {
    let month = parcel.date.format("%Y-%m");
    let key = format!("{month}\0{}\0{}", parcel.association_id, parcel.commune);
    let mut tally: Tally = tx.get_json("report", key.as_bytes())?.unwrap_or_default();
    if status == ParcelStatus::NotCollected {
        tally.not_collected += 1;
        tx.put_json("report", key.as_bytes(), &tally);
        return Ok(());
    }
    tally.parcels += 1;
    // A household counts once a month, whatever the number of parcels.
    let seen = format!("{key}\0{household}");
    if tx.get("report_household", seen.as_bytes())?.is_none() {
        tx.put("report_household", seen.as_bytes(), Vec::new());
        tally.households += 1;
        if let Some(p) = people {
            for (sum, n) in tally.people.iter_mut().zip([p.adults, p.teens, p.children, p.infants]) {
                *sum += u64::from(n);
            }
        }
    }
    let mut given: BTreeMap<FoodGroup, u64> = BTreeMap::new();
    for line in &parcel.lines {
        *given.entry(line.food_group).or_default() += line.grams;
        if line.food_group == FoodGroup::FruitVegetables || line.date_kind == DateKind::Dlc {
            tally.fresh_g += line.grams;
        }
    }
    for (group, need) in &parcel.needs {
        tally.need_g += need;
        tally.covered_g += given.get(group).copied().unwrap_or(0).min(*need);
    }
    for (group, grams) in given {
        *tally.grams.entry(group).or_default() += grams;
    }
    tx.put_json("report", key.as_bytes(), &tally);
    Ok(())
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    /// `YYYY-MM`; every month when absent.
    #[serde(default, deserialize_with = "crate::common::month")]
    pub month: Option<String>,
    /// One association; an association's token sees only its own.
    pub association_id: Option<String>,
}

/// People served in the month, by age band (each household once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PeopleServed {
    pub adults: u64,
    pub teens: u64,
    pub children: u64,
    pub infants: u64,
    pub total: u64,
}

/// One month of one association in one commune.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReportRow {
    pub month: String,
    pub association_id: String,
    pub commune: String,
    /// Parcels handed over (collected or redistributed).
    pub parcels: u64,
    pub not_collected: u64,
    pub households: u64,
    pub people: PeopleServed,
    /// Kilograms handed over per food group (every group, zero included).
    #[schema(value_type = Object)]
    pub kg_by_group: BTreeMap<FoodGroup, f64>,
    pub kg_total: f64,
    /// Kilograms of food (hygiene excluded) ÷ the collective's meal weight.
    pub meals: u64,
    /// Fruit and vegetables and use-by products, share of the kilograms, percent.
    pub fresh_pct: f64,
    /// Σ min(given, need) ÷ Σ need over the parcels' food groups, percent.
    pub need_coverage_pct: f64,
}

fn row(key: &str, tally: Tally, meal_grams: u32) -> ReportRow {
    let mut parts = key.split('\0');
    let mut next = || parts.next().unwrap_or_default().to_owned();
    let (month, association_id, commune) = (next(), next(), next());
    let total_g: u64 = tally.grams.values().sum();
    let food_g: u64 = tally.grams.iter().filter(|(g, _)| **g != FoodGroup::Hygiene).map(|(_, v)| v).sum();
    let [adults, teens, children, infants] = tally.people;
    let pct =
        |part: u64, whole: u64| if whole == 0 { 0.0 } else { (1000.0 * part as f64 / whole as f64).round() / 10.0 };
    ReportRow {
        month,
        association_id,
        commune,
        parcels: tally.parcels,
        not_collected: tally.not_collected,
        households: tally.households,
        people: PeopleServed { adults, teens, children, infants, total: adults + teens + children + infants },
        kg_by_group: FoodGroup::ALL
            .iter()
            .map(|g| (*g, tally.grams.get(g).copied().unwrap_or(0) as f64 / 1000.0))
            .collect(),
        kg_total: total_g as f64 / 1000.0,
        meals: food_g / u64::from(meal_grams.max(1)),
        fresh_pct: pct(tally.fresh_g, total_g),
        need_coverage_pct: pct(tally.covered_g, tally.need_g),
    }
}

/// The rows as CSV: one line per month, association and commune.
pub fn report_csv(rows: &Vec<ReportRow>) -> String {
    let mut out = String::from("month,association_id,commune,parcels,not_collected,households,");
    out.push_str("adults,teens,children,infants,people,");
    for g in FoodGroup::ALL {
        out.push_str(&format!("kg_{g},"));
    }
    out.push_str("kg_total,meals,fresh_pct,need_coverage_pct\n");
    for r in rows {
        let p = &r.people;
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},",
            r.month,
            csv_field(&r.association_id),
            csv_field(&r.commune),
            r.parcels,
            r.not_collected,
            r.households,
            p.adults,
            p.teens,
            p.children,
            p.infants,
            p.total
        ));
        for g in FoodGroup::ALL {
            out.push_str(&format!("{:.3},", r.kg_by_group.get(&g).copied().unwrap_or(0.0)));
        }
        out.push_str(&format!("{:.3},{},{:.1},{:.1}\n", r.kg_total, r.meals, r.fresh_pct, r.need_coverage_pct));
    }
    out
}

pub(super) fn register(host: &mut ServiceHost, ctx: &ServiceContext, view: &ProjectionHandle) {
    let meal_grams = ctx.policies.meal_grams;
    let roles: Option<&'static [Role]> = Some(&[Role::Association]);
    scoped_query(host, "distribution_report", ctx, view, roles, move |view, actor, p: ReportParams| {
        // An association sees its own rows; an administrator all, or the one asked for.
        let only = match actor.role {
            Role::Association => Some(super::households::own_association(actor, p.association_id)?),
            _ => p.association_id,
        };
        let prefix = p.month.map(|m| format!("{m}\0")).unwrap_or_default();
        let mut rows = Vec::new();
        for item in view.scan("report", prefix.as_bytes()) {
            let (key, value) = item.map_err(storage)?;
            let key = String::from_utf8_lossy(&key).into_owned();
            let tally: Tally =
                serde_json::from_slice(&value).map_err(|e| ServiceError::internal("reading a report", e))?;
            let r = row(&key, tally, meal_grams);
            if only.as_ref().is_none_or(|a| *a == r.association_id) {
                rows.push(r);
            }
        }
        Ok(rows)
    });
}
