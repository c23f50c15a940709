//! Households: registered, assessed and changed by their own association only. Who they are
//! (names, birth date, phone, address) is sealed with the household's key from the vault before
//! it enters any event; erasure destroys the key.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use distribution::{Assessment, Association, Composition, Diet, Household, HouseholdCommand, HouseholdEvent, Sealed};
use eventcore::AggregateId;
use projections::{ApplyError, Engine, Projection, ProjectionHandle, RecordedEvent, Tx};
use runtime::{parse_payload, Actor, CommandRunner, Role, ServiceError, ServiceHost};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vault::Vault;

use super::SERVICE;
use crate::common::{meta, new_id, parse_id, require, require_scope, storage, ServiceContext};

/// Who the household is: sealed, never in an event in clear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonalData {
    pub first_name: String,
    pub last_name: String,
    pub birth_date: NaiveDate,
    #[serde(default)]
    pub phone: String,
    #[serde(default)]
    pub address: String,
}

impl PersonalData {
    /// Trimmed, and checked.
    fn tidy(&self) -> Result<PersonalData, ServiceError> {
        let tidy = PersonalData {
            first_name: self.first_name.trim().to_owned(),
            last_name: self.last_name.trim().to_owned(),
            birth_date: self.birth_date,
            phone: self.phone.trim().to_owned(),
            address: self.address.trim().to_owned(),
        };
        tidy.check()?;
        Ok(tidy)
    }

    fn check(&self) -> Result<(), ServiceError> {
        let fields = [&self.first_name, &self.last_name, &self.phone, &self.address];
        if self.last_name.trim().is_empty() || self.first_name.trim().is_empty() {
            return Err(ServiceError::validation("invalid_personal_data", "first and last names are required"));
        }
        if fields.iter().any(|f| f.chars().count() > 200) {
            return Err(ServiceError::validation(
                "invalid_personal_data",
                "personal fields are at most 200 characters",
            ));
        }
        Ok(())
    }

    /// What duplicate detection compares: names and birth date.
    fn identity(&self) -> String {
        format!("{} {} {}", self.last_name, self.first_name, self.birth_date)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterHousehold {
    /// Optional pseudonymous id; derived from the idempotency key when absent.
    pub household_id: Option<String>,
    pub association_id: String,
    pub relay_point_id: String,
    #[schema(value_type = Object)]
    pub composition: Composition,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub diet: Diet,
    /// The household agreed to its data being kept (RGPD).
    pub consent: bool,
    pub personal: PersonalData,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateHousehold {
    pub household_id: String,
    pub relay_point_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub composition: Option<Composition>,
    #[schema(value_type = Option<Object>)]
    pub diet: Option<Diet>,
    pub personal: Option<PersonalData>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssessHousehold {
    pub household_id: String,
    /// Monthly resources, euro cents.
    pub resources_cents: u64,
    /// Monthly fixed charges, euro cents.
    pub charges_cents: u64,
    /// Today by default.
    pub assessed_on: Option<NaiveDate>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentChange {
    pub household_id: String,
    pub consent: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseHousehold {
    pub household_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetHousehold {
    pub household_id: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListHouseholds {
    /// Required for administrators; an association sees its own.
    pub association_id: Option<String>,
}

/// A household as the read model keeps it: pseudonymous, personal data still sealed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HouseholdRow {
    pub household_id: String,
    pub association_id: String,
    pub relay_point_id: String,
    #[schema(value_type = Object)]
    pub composition: Composition,
    #[schema(value_type = Object)]
    pub diet: Diet,
    pub consent: bool,
    #[schema(value_type = Option<Object>)]
    pub assessment: Option<Assessment>,
    pub erased: bool,
    #[serde(skip_serializing)]
    #[schema(ignore)]
    pub sealed: Option<(String, String)>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A household as its association sees it: personal data opened, and whether another
/// association may be serving the same people (which one, never their record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HouseholdView {
    #[serde(flatten)]
    pub row: HouseholdRow,
    /// `null` once erased.
    pub personal: Option<PersonalData>,
    /// Associations that registered a household with the same names and birth date.
    pub possible_duplicates: Vec<String>,
}

pub struct HouseholdsProjection;

impl Projection for HouseholdsProjection {
    fn name(&self) -> &'static str {
        "households"
    }

    fn streams(&self) -> &'static [&'static str] {
        &[SERVICE]
    }

    fn apply(&self, tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError> {
        if event.aggregate_kind != "household" {
            return Ok(());
        }
        let id = event.envelope.aggregate_id.as_ref();
        let at = event.envelope.occurred_at;
        if let HouseholdEvent::HouseholdRegistered {
            association_id,
            relay_point_id,
            composition,
            diet,
            consent,
            personal,
        } = event.decode::<HouseholdEvent>()?
        {
            tx.put("by_association", format!("{association_id}\0{id}").as_bytes(), id.as_bytes().to_vec());
            let row = HouseholdRow {
                household_id: id.to_owned(),
                association_id,
                relay_point_id,
                composition,
                diet,
                consent,
                assessment: None,
                erased: false,
                sealed: Some((personal.nonce, personal.ciphertext)),
                registered_at: at,
                updated_at: at,
            };
            tx.put_json("household", id.as_bytes(), &SealedRow(row));
            return Ok(());
        }
        let event = event.decode::<HouseholdEvent>()?;
        let SealedRow(mut row) = tx
            .get_json("household", id.as_bytes())?
            .ok_or_else(|| ApplyError(format!("event of unknown household {id}")))?;
        row.updated_at = at;
        match event {
            HouseholdEvent::HouseholdRegistered { .. } => {}
            HouseholdEvent::HouseholdUpdated { relay_point_id, composition, diet, personal } => {
                row.relay_point_id = relay_point_id;
                row.composition = composition;
                row.diet = diet;
                row.sealed = Some((personal.nonce, personal.ciphertext));
            }
            HouseholdEvent::EligibilityAssessed(a) => row.assessment = Some(a),
            HouseholdEvent::ConsentGiven {} => row.consent = true,
            HouseholdEvent::ConsentWithdrawn {} => row.consent = false,
            HouseholdEvent::HouseholdErased {} => {
                row.erased = true;
                row.sealed = None;
            }
        }
        tx.put_json("household", id.as_bytes(), &SealedRow(row));
        Ok(())
    }
}

/// The row as stored, sealed data included (the API's row leaves it out).
struct SealedRow(HouseholdRow);

impl Serialize for SealedRow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Stored<'a> {
            #[serde(flatten)]
            row: &'a HouseholdRow,
            sealed: &'a Option<(String, String)>,
        }
        Stored { row: &self.0, sealed: &self.0.sealed }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SealedRow {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Stored {
            #[serde(flatten)]
            row: HouseholdRow,
            sealed: Option<(String, String)>,
        }
        let Stored { mut row, sealed } = Stored::deserialize(d)?;
        row.sealed = sealed;
        Ok(SealedRow(row))
    }
}

fn vault_error(e: vault::VaultError) -> ServiceError {
    match e {
        vault::VaultError::Unavailable(m) => ServiceError::unavailable("vault_unavailable", m),
        other => ServiceError::internal("using the vault", other),
    }
}

/// Seals personal data under the household's key and records its identity for duplicate checks.
async fn seal(vault: &Vault, household: &AggregateId, personal: &PersonalData) -> Result<Sealed, ServiceError> {
    let personal = personal.tidy()?;
    let json = serde_json::to_vec(&personal).map_err(|e| ServiceError::internal("sealing", e))?;
    let sealed = vault.seal(household.as_str(), &json).await.map_err(vault_error)?;
    vault.index_identity(household.as_str(), &personal.identity()).await.map_err(vault_error)?;
    Ok(Sealed { nonce: sealed.nonce, ciphertext: sealed.ciphertext })
}

/// Loads a household and checks the actor may act for its association.
async fn owned(
    households: &CommandRunner<Household>,
    actor: &Actor,
    id: &AggregateId,
) -> Result<Household, ServiceError> {
    let (household, _) = households.load(id).await?;
    let association = household
        .association_id
        .clone()
        .ok_or_else(|| ServiceError::not_found("household_not_found", format!("no household {id}")))?;
    require_scope(actor, Role::Association, &association)?;
    Ok(household)
}

pub(super) fn register(
    host: &mut ServiceHost,
    ctx: &ServiceContext,
    engine: &mut Engine,
    associations: &Arc<CommandRunner<Association>>,
) -> ProjectionHandle {
    let households = ctx.runner::<Household>(SERVICE);
    let view = engine.register(HouseholdsProjection);
    let vault = ctx.vault.clone();
    let default_rule = ctx.policies.eligibility;

    {
        let (households, associations, vault) = (households.clone(), associations.clone(), vault.clone());
        host.command("register_household", move |request| {
            let (households, associations, vault) = (households.clone(), associations.clone(), vault.clone());
            async move {
                require(&request.actor, &[Role::Association])?;
                let body: RegisterHousehold = parse_payload(&request.payload)?;
                let association_id = parse_id(&body.association_id, "association")?;
                require_scope(&request.actor, Role::Association, association_id.as_str())?;
                let (association, _) = associations.load(&association_id).await?;
                if association.name.is_none() {
                    return Err(ServiceError::not_found(
                        "association_not_found",
                        format!("no association {association_id}"),
                    ));
                }
                let relay = parse_id(&body.relay_point_id, "relay")?;
                if !association.relay_points.contains_key(&relay) {
                    return Err(ServiceError::not_found(
                        "relay_point_not_found",
                        format!("{association_id} has no relay point {relay}"),
                    ));
                }
                let id = new_id(body.household_id, &request, "household")?;
                let personal = seal(&vault, &id, &body.personal).await?;
                let command = HouseholdCommand::Register {
                    association_id: association_id.to_string(),
                    relay_point_id: relay.to_string(),
                    composition: body.composition,
                    diet: body.diet,
                    consent: body.consent,
                    personal,
                };
                households.execute(id, command, meta(&request)).await
            }
        });
    }
    {
        let (households, associations, vault) = (households.clone(), associations.clone(), vault.clone());
        host.command("update_household", move |request| {
            let (households, associations, vault) = (households.clone(), associations.clone(), vault.clone());
            async move {
                require(&request.actor, &[Role::Association])?;
                let body: UpdateHousehold = parse_payload(&request.payload)?;
                let id = parse_id(&body.household_id, "household")?;
                let household = owned(&households, &request.actor, &id).await?;
                if let Some(relay) = &body.relay_point_id {
                    let association_id =
                        parse_id(household.association_id.as_deref().unwrap_or_default(), "association")?;
                    let (association, _) = associations.load(&association_id).await?;
                    if !association.relay_points.contains_key(&parse_id(relay, "relay")?) {
                        return Err(ServiceError::not_found(
                            "relay_point_not_found",
                            format!("no relay point {relay}"),
                        ));
                    }
                }
                let personal = match &body.personal {
                    Some(p) => Some(seal(&vault, &id, p).await?),
                    None => None,
                };
                let command = HouseholdCommand::Update {
                    relay_point_id: body.relay_point_id,
                    composition: body.composition,
                    diet: body.diet,
                    personal,
                };
                households.execute(id, command, meta(&request)).await
            }
        });
    }
    {
        let (households, associations) = (households.clone(), associations.clone());
        host.command("assess_household", move |request| {
            let (households, associations) = (households.clone(), associations.clone());
            async move {
                require(&request.actor, &[Role::Association])?;
                let body: AssessHousehold = parse_payload(&request.payload)?;
                let id = parse_id(&body.household_id, "household")?;
                let household = owned(&households, &request.actor, &id).await?;
                let association_id = parse_id(household.association_id.as_deref().unwrap_or_default(), "association")?;
                let rule = associations.load(&association_id).await?.0.eligibility.unwrap_or(default_rule);
                let command = HouseholdCommand::Assess {
                    assessed_on: body.assessed_on.unwrap_or_else(|| Utc::now().date_naive()),
                    resources_cents: body.resources_cents,
                    charges_cents: body.charges_cents,
                    threshold_cents: rule.threshold_cents,
                    validity_days: rule.validity_days,
                };
                households.execute(id, command, meta(&request)).await
            }
        });
    }
    {
        let households = households.clone();
        host.command("change_consent", move |request| {
            let households = households.clone();
            async move {
                require(&request.actor, &[Role::Association])?;
                let body: ConsentChange = parse_payload(&request.payload)?;
                let id = parse_id(&body.household_id, "household")?;
                owned(&households, &request.actor, &id).await?;
                let command =
                    if body.consent { HouseholdCommand::GiveConsent } else { HouseholdCommand::WithdrawConsent };
                households.execute(id, command, meta(&request)).await
            }
        });
    }
    {
        let (households, vault) = (households.clone(), vault.clone());
        host.command("erase_household", move |request| {
            let (households, vault) = (households.clone(), vault.clone());
            async move {
                require(&request.actor, &[Role::Association])?;
                let body: EraseHousehold = parse_payload(&request.payload)?;
                let id = parse_id(&body.household_id, "household")?;
                let household = owned(&households, &request.actor, &id).await?;
                if household.erased {
                    return Err(ServiceError::conflict("household_erased", "this household's data was erased"));
                }
                // The key goes first: whatever happens next, the data can no longer be read.
                vault.destroy(id.as_str()).await.map_err(vault_error)?;
                households.execute(id, HouseholdCommand::Erase, meta(&request)).await
            }
        });
    }

    {
        let vault = vault.clone();
        let store = ctx.projections.clone();
        let wait = (ctx.clone(), view.clone());
        host.query("get_household", move |request| {
            let (vault, store, (ctx, view)) = (vault.clone(), store.clone(), wait.clone());
            async move {
                require(&request.actor, &[Role::Association])?;
                let params: GetHousehold = parse_payload(&request.params)?;
                crate::common::wait_for_min_seq(&ctx, &view, &request).await?;
                let row = read_row(&store, &params.household_id).await?;
                require_scope(&request.actor, Role::Association, &row.association_id).map_err(|_| {
                    ServiceError::not_found("household_not_found", format!("no household {}", params.household_id))
                })?;
                open(&vault, &store, row).await
            }
        });
    }
    {
        let vault = vault.clone();
        let store = ctx.projections.clone();
        let wait = (ctx.clone(), view.clone());
        host.query("list_households", move |request| {
            let (vault, store, (ctx, view)) = (vault.clone(), store.clone(), wait.clone());
            async move {
                require(&request.actor, &[Role::Association])?;
                let params: ListHouseholds = match &request.params {
                    serde_json::Value::Null => ListHouseholds::default(),
                    p => parse_payload(p)?,
                };
                let association = match (&request.actor.scope, params.association_id) {
                    (_, Some(a)) => a,
                    (Some(scope), None) if request.actor.role == Role::Association => scope.clone(),
                    _ => return Err(ServiceError::validation("association_required", "say which association")),
                };
                require_scope(&request.actor, Role::Association, &association)?;
                crate::common::wait_for_min_seq(&ctx, &view, &request).await?;
                let rows = tokio::task::spawn_blocking(move || -> Result<Vec<HouseholdRow>, ServiceError> {
                    let v = store.view(HouseholdsProjection.name()).map_err(storage)?;
                    let mut rows = Vec::new();
                    for item in v.scan("by_association", format!("{association}\0").as_bytes()) {
                        let (_, id) = item.map_err(storage)?;
                        if let Some(SealedRow(row)) = v.get_json("household", &id).map_err(storage)? {
                            rows.push(row);
                        }
                    }
                    Ok(rows)
                })
                .await
                .map_err(|e| ServiceError::internal("listing households", e))??;
                let mut out = Vec::with_capacity(rows.len());
                let store = ctx.projections.clone();
                for row in rows {
                    out.push(open(&vault, &store, row).await?);
                }
                Ok(out)
            }
        });
    }
    view
}

async fn read_row(store: &projections::ProjectionStore, id: &str) -> Result<HouseholdRow, ServiceError> {
    let (store, id) = (store.clone(), id.to_owned());
    tokio::task::spawn_blocking(move || {
        store
            .view(HouseholdsProjection.name())
            .map_err(storage)?
            .get_json::<SealedRow>("household", id.as_bytes())
            .map_err(storage)?
            .map(|SealedRow(row)| row)
            .ok_or_else(|| ServiceError::not_found("household_not_found", format!("no household {id}")))
    })
    .await
    .map_err(|e| ServiceError::internal("reading a household", e))?
}

/// Opens a row's personal data (if its key still exists) and looks for possible duplicates.
async fn open(
    vault: &Vault,
    store: &projections::ProjectionStore,
    row: HouseholdRow,
) -> Result<HouseholdView, ServiceError> {
    let personal = match &row.sealed {
        Some((nonce, ciphertext)) if !row.erased => {
            let sealed = vault::Sealed { nonce: nonce.clone(), ciphertext: ciphertext.clone() };
            match vault.unseal(&row.household_id, &sealed).await.map_err(vault_error)? {
                Some(bytes) => Some(
                    serde_json::from_slice(&bytes).map_err(|e| ServiceError::internal("opening personal data", e))?,
                ),
                None => None,
            }
        }
        _ => None,
    };
    let others = vault.others_with_identity_of(&row.household_id).await.map_err(vault_error)?;
    let mut possible_duplicates = Vec::new();
    for other in others {
        if let Ok(r) = read_row(store, &other).await {
            if !r.erased {
                possible_duplicates.push(r.association_id);
            }
        }
    }
    possible_duplicates.sort();
    possible_duplicates.dedup();
    Ok(HouseholdView { row, personal, possible_duplicates })
}
