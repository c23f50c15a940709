//! Households: registered, assessed and changed by their own association only. Who they are
//! (names, birth date, phone, address) is sealed with the household's key from the vault before
//! it enters any event; erasure destroys the key.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use distribution::{
    Assessment, Association, Composition, Diet, EligibilityRule, Household, HouseholdCommand, HouseholdEvent, Sealed,
};
use eventcore::AggregateId;
use eventcore::CommandMeta;
use projections::{ApplyError, Engine, Projection, ProjectionHandle, ProjectionStore, RecordedEvent, Tx, View};
use runtime::{Actor, CommandReply, CommandRunner, QueryRequest, Role, ServiceError, ServiceHost};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use vault::Vault;

use super::import::{self, ImportHouseholds, ImportLine};
use super::SERVICE;
use crate::common::{
    combine, meta, new_id, parse_id, process_command, query_params, require, require_scope, storage, wait_for_min_seq,
    with_view, ServiceContext,
};
use futures::{StreamExt, TryStreamExt};

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

    pub(super) fn check(&self) -> Result<(), ServiceError> {
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
    pub(super) fn identity(&self) -> String {
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

/// A household as the read model keeps it: pseudonymous. Its sealed personal data is kept in a
/// table of its own (`sealed`), dropped on erasure.
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

    /// Bump when what `apply` writes changes: the rows are then rebuilt on start.
    fn version(&self) -> u32 {
        1
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
        let event = event.decode::<HouseholdEvent>()?;
        if let HouseholdEvent::HouseholdRegistered {
            association_id,
            relay_point_id,
            composition,
            diet,
            consent,
            personal,
        } = event
        {
            tx.put("by_association", format!("{association_id}\0{id}").as_bytes(), id.as_bytes().to_vec());
            tx.put_json("sealed", id.as_bytes(), &personal);
            let row = HouseholdRow {
                household_id: id.to_owned(),
                association_id,
                relay_point_id,
                composition,
                diet,
                consent,
                assessment: None,
                erased: false,
                registered_at: at,
                updated_at: at,
            };
            tx.put_json("household", id.as_bytes(), &row);
            return Ok(());
        }
        let mut row: HouseholdRow = tx
            .get_json("household", id.as_bytes())?
            .ok_or_else(|| ApplyError(format!("event of unknown household {id}")))?;
        row.updated_at = at;
        match event {
            HouseholdEvent::HouseholdRegistered { .. } => {}
            HouseholdEvent::HouseholdUpdated { relay_point_id, composition, diet, personal } => {
                row.relay_point_id = relay_point_id;
                row.composition = composition;
                row.diet = diet;
                tx.put_json("sealed", id.as_bytes(), &personal);
            }
            HouseholdEvent::EligibilityAssessed(a) => row.assessment = Some(a),
            HouseholdEvent::ConsentGiven {} => row.consent = true,
            HouseholdEvent::ConsentWithdrawn {} => row.consent = false,
            HouseholdEvent::HouseholdErased {} => {
                row.erased = true;
                tx.delete("sealed", id.as_bytes());
            }
        }
        tx.put_json("household", id.as_bytes(), &row);
        Ok(())
    }
}

fn vault_error(e: vault::VaultError) -> ServiceError {
    match e {
        vault::VaultError::Unavailable(m) => ServiceError::unavailable("vault_unavailable", m),
        other => ServiceError::internal("using the vault", other),
    }
}

/// Refuses now what the household would refuse, before anything is written for the command (the
/// vault is written before the aggregate, which must not happen for a command it refuses).
async fn decided_on(
    households: &CommandRunner<Household>,
    id: &AggregateId,
    command: &HouseholdCommand,
) -> Result<(), ServiceError> {
    let (household, _) = households.load(id).await?;
    eventcore::Aggregate::decide(&household, command)?;
    Ok(())
}

/// Seals personal data under the household's key and records its identity for duplicate checks.
async fn seal(vault: &Vault, household: &AggregateId, personal: &PersonalData) -> Result<Sealed, ServiceError> {
    let personal = personal.tidy()?;
    let json = serde_json::to_vec(&personal).map_err(|e| ServiceError::internal("sealing", e))?;
    let sealed = vault.seal(household.as_str(), &json).await.map_err(vault_error)?;
    vault.index_identity(household.as_str(), &personal.identity()).await.map_err(vault_error)?;
    Ok(Sealed { nonce: sealed.nonce, ciphertext: sealed.ciphertext })
}

/// Lines of an import registered at once.
const IMPORT_CONCURRENCY: usize = 16;

/// Registers one checked line of an import (and assesses it when the file says how), or
/// leaves alone the household it already is; the commits made.
async fn import_line(
    households: &CommandRunner<Household>,
    vault: &Vault,
    request: &runtime::CommandRequest,
    association_id: &str,
    rule: EligibilityRule,
    today: NaiveDate,
    line: ImportLine,
) -> Result<Vec<CommandReply>, ServiceError> {
    // The same person in the same association is the same household, whichever file.
    let who = format!("{association_id} {}", line.personal.identity());
    let hash = vault.identity_hash(&who).await.map_err(vault_error)?;
    let derived = Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("foodaid/household-identity/{hash}").as_bytes());
    let id = AggregateId::try_from(derived.to_string()).expect("uuids are valid ids");
    let step = |name: &str| CommandMeta { command_id: format!("{}/{id}{name}", request.command_id), ..meta(request) };
    let (register_meta, assess_meta) = (step(""), step("/assessment"));
    // A household registered before keeps its key and identity in the vault as they are:
    // nothing is sealed again (an erased one stays erased). Its own sealed data goes with the
    // command, which a retry of this very import gets the first answer to, and any other
    // import is refused (and skipped).
    let (existing, _) = households.load(&id).await?;
    let personal = match (&existing.association_id, existing.personal) {
        (None, _) => seal(vault, &id, &line.personal).await?,
        (Some(_), Some(sealed)) => sealed,
        (Some(_), None) => return Ok(Vec::new()),
    };
    let command = HouseholdCommand::Register {
        association_id: association_id.to_owned(),
        relay_point_id: line.relay_point_id,
        composition: line.composition,
        diet: line.diet,
        consent: true,
        personal,
    };
    let mut replies = match households.execute(id.clone(), command, register_meta).await {
        Ok(reply) => vec![reply],
        Err(e) if e.code == "household_already_registered" => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    if let Some((resources_cents, charges_cents)) = line.assessment {
        let command = assess(rule, today, resources_cents, charges_cents);
        replies.push(households.execute(id, command, assess_meta).await?);
    }
    Ok(replies)
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

/// The association whose records a query is about: the one named, or the caller's own.
pub(super) fn own_association(actor: &Actor, given: Option<String>) -> Result<String, ServiceError> {
    let association = match (&actor.scope, given) {
        (_, Some(a)) => a,
        (Some(scope), None) if actor.role == Role::Association => scope.clone(),
        _ => return Err(ServiceError::validation("association_required", "say which association")),
    };
    require_scope(actor, Role::Association, &association)?;
    Ok(association)
}

/// A registered association.
async fn registered_association(
    associations: &CommandRunner<Association>,
    association_id: &AggregateId,
) -> Result<Association, ServiceError> {
    let (association, _) = associations.load(association_id).await?;
    if association.name.is_none() {
        return Err(ServiceError::not_found("association_not_found", format!("no association {association_id}")));
    }
    Ok(association)
}

/// An assessment by the association's rule (the collective's when it has none).
fn assess(rule: EligibilityRule, assessed_on: NaiveDate, resources_cents: u64, charges_cents: u64) -> HouseholdCommand {
    HouseholdCommand::Assess {
        assessed_on,
        resources_cents,
        charges_cents,
        threshold_cents: rule.threshold_cents,
        validity_days: rule.validity_days,
    }
}

/// Checks that `relay` is one of `association`'s relay points.
async fn check_relay(
    associations: &CommandRunner<Association>,
    association_id: &AggregateId,
    relay: &str,
) -> Result<AggregateId, ServiceError> {
    let association = registered_association(associations, association_id).await?;
    let relay = parse_id(relay, "relay")?;
    if !association.relay_points.contains_key(&relay) {
        return Err(ServiceError::not_found(
            "relay_point_not_found",
            format!("{association_id} has no relay point {relay}"),
        ));
    }
    Ok(relay)
}

pub(super) fn register(
    host: &mut ServiceHost,
    ctx: &ServiceContext,
    engine: &mut Engine,
    associations: &Arc<CommandRunner<Association>>,
) -> ProjectionHandle {
    let households = ctx.runner::<Household>(SERVICE);
    let view = engine.register(HouseholdsProjection);
    let default_rule = ctx.policies.eligibility;
    let calendar = ctx.calendar;
    let association: &'static [Role] = &[Role::Association];
    let state = (households.clone(), associations.clone(), ctx.vault.clone());

    process_command(
        host,
        "register_household",
        association,
        state.clone(),
        |(households, associations, vault), request, body: RegisterHousehold| async move {
            let association_id = parse_id(&body.association_id, "association")?;
            require_scope(&request.actor, Role::Association, association_id.as_str())?;
            let id = new_id(body.household_id, &request, "household")?;
            if let Some(first) = households.answered(&id, &request.command_id).await? {
                return Ok(first);
            }
            let relay = check_relay(&associations, &association_id, &body.relay_point_id).await?;
            let mut command = HouseholdCommand::Register {
                association_id: association_id.to_string(),
                relay_point_id: relay.to_string(),
                composition: body.composition,
                diet: body.diet,
                consent: body.consent,
                personal: Sealed { nonce: String::new(), ciphertext: String::new() },
            };
            // Decided before anything is sealed: a refusal leaves no key nor identity behind
            // (another association's household id among them).
            let personal = body.personal.tidy()?;
            decided_on(&households, &id, &command).await?;
            if let HouseholdCommand::Register { personal: sealed, .. } = &mut command {
                *sealed = seal(&vault, &id, &personal).await?;
            }
            households.execute(id, command, meta(&request)).await
        },
    );
    process_command(
        host,
        "import_households",
        association,
        state.clone(),
        move |(households, associations, vault), request, body: ImportHouseholds| async move {
            let association_id = parse_id(&own_association(&request.actor, body.association_id)?, "association")?;
            let association = registered_association(&associations, &association_id).await?;
            let relays: Vec<(String, String)> =
                association.relay_points.values().map(|r| (r.relay_id.to_string(), r.name.to_string())).collect();
            let lines = import::parse(&body.csv, &relays).map_err(|errors| {
                let details = serde_json::to_value(&errors).expect("line errors serialise");
                ServiceError::validation(
                    "invalid_import",
                    format!("{} error(s) in the file: nothing was imported", errors.len()),
                )
                .with_details(details)
            })?;
            let rule = association.eligibility.unwrap_or(default_rule);
            let today = calendar.day_of(Utc::now());
            // Households are independent aggregates: several lines at once, the reply in file order.
            let mut done: Vec<(usize, Vec<CommandReply>)> = futures::stream::iter(lines)
                .map(|line| {
                    let (households, vault, request) = (&households, &vault, &request);
                    let association_id = association_id.as_str();
                    async move {
                        let n = line.line;
                        import_line(households, vault, request, association_id, rule, today, line).await.map(|r| (n, r))
                    }
                })
                .buffer_unordered(IMPORT_CONCURRENCY)
                .try_collect()
                .await?;
            done.sort_by_key(|(n, _)| *n);
            let replies = done.into_iter().flat_map(|(_, r)| r).collect();
            Ok(combine(format!("import-{association_id}"), SERVICE, replies))
        },
    );
    process_command(
        host,
        "update_household",
        association,
        state.clone(),
        |(households, associations, vault), request, body: UpdateHousehold| async move {
            let id = parse_id(&body.household_id, "household")?;
            let household = owned(&households, &request.actor, &id).await?;
            if let Some(first) = households.answered(&id, &request.command_id).await? {
                return Ok(first);
            }
            if let Some(relay) = &body.relay_point_id {
                let association_id = parse_id(household.association_id.as_deref().unwrap_or_default(), "association")?;
                check_relay(&associations, &association_id, relay).await?;
            }
            let personal = body.personal.as_ref().map(PersonalData::tidy).transpose()?;
            let placeholder = personal.as_ref().map(|_| Sealed { nonce: String::new(), ciphertext: String::new() });
            let mut command = HouseholdCommand::Update {
                relay_point_id: body.relay_point_id,
                composition: body.composition,
                diet: body.diet,
                personal: placeholder,
            };
            // Decided before anything is sealed: a refused change leaves the vault as it was.
            decided_on(&households, &id, &command).await?;
            if let (HouseholdCommand::Update { personal: Some(sealed), .. }, Some(p)) = (&mut command, &personal) {
                *sealed = seal(&vault, &id, p).await?;
            }
            households.execute(id, command, meta(&request)).await
        },
    );
    process_command(
        host,
        "assess_household",
        association,
        state.clone(),
        move |(households, associations, _), request, body: AssessHousehold| async move {
            let id = parse_id(&body.household_id, "household")?;
            let household = owned(&households, &request.actor, &id).await?;
            let association_id = parse_id(household.association_id.as_deref().unwrap_or_default(), "association")?;
            let rule = associations.load(&association_id).await?.0.eligibility.unwrap_or(default_rule);
            let on = body.assessed_on.unwrap_or_else(|| calendar.day_of(Utc::now()));
            let command = assess(rule, on, body.resources_cents, body.charges_cents);
            households.execute(id, command, meta(&request)).await
        },
    );
    process_command(
        host,
        "change_consent",
        association,
        state.clone(),
        |(households, _, _), request, body: ConsentChange| async move {
            let id = parse_id(&body.household_id, "household")?;
            owned(&households, &request.actor, &id).await?;
            let command = if body.consent { HouseholdCommand::GiveConsent } else { HouseholdCommand::WithdrawConsent };
            households.execute(id, command, meta(&request)).await
        },
    );
    process_command(
        host,
        "erase_household",
        association,
        state,
        |(households, _, vault), request, body: EraseHousehold| async move {
            let id = parse_id(&body.household_id, "household")?;
            let household = owned(&households, &request.actor, &id).await?;
            if household.erased {
                return Err(ServiceError::conflict("household_erased", "this household's data was erased"));
            }
            // The key goes first: whatever happens next, the data can no longer be read.
            vault.destroy(id.as_str()).await.map_err(vault_error)?;
            households.execute(id, HouseholdCommand::Erase, meta(&request)).await
        },
    );

    // These answers open personal data with the vault (async), so they cannot be plain
    // projection queries: they read the rows first, then open them.
    let state = (ctx.clone(), view.clone());
    host.query("get_household", move |request| {
        let (ctx, view) = state.clone();
        async move {
            let params: GetHousehold = read_params(&ctx, &view, &request).await?;
            let missing =
                || ServiceError::not_found("household_not_found", format!("no household {}", params.household_id));
            let id = params.household_id.clone();
            let found = with_view(&ctx.projections, HouseholdsProjection.name(), move |v| read_rows(v, [id])).await?;
            let (row, sealed) = found.into_iter().next().ok_or_else(missing)?;
            // Another association's household does not exist, as far as this caller knows.
            require_scope(&request.actor, Role::Association, &row.association_id).map_err(|_| missing())?;
            open(&ctx.vault, &ctx.projections, row, sealed).await
        }
    });
    let state = (ctx.clone(), view.clone());
    host.query("list_households", move |request| {
        let (ctx, view) = state.clone();
        async move {
            let params: ListHouseholds = read_params(&ctx, &view, &request).await?;
            let association = own_association(&request.actor, params.association_id)?;
            let rows = with_view(&ctx.projections, HouseholdsProjection.name(), move |v| {
                let ids: Vec<String> = v
                    .scan("by_association", format!("{association}\0").as_bytes())
                    .map(|item| item.map(|(_, id)| String::from_utf8_lossy(&id).into_owned()).map_err(storage))
                    .collect::<Result<_, _>>()?;
                read_rows(v, ids)
            })
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for (row, sealed) in rows {
                out.push(open(&ctx.vault, &ctx.projections, row, sealed).await?);
            }
            Ok(out)
        }
    });
    view
}

/// The role check, parameters and `min_seq` wait every household query starts with.
async fn read_params<P: serde::de::DeserializeOwned>(
    ctx: &ServiceContext,
    view: &ProjectionHandle,
    request: &QueryRequest,
) -> Result<P, ServiceError> {
    require(&request.actor, &[Role::Association])?;
    let params = query_params(request)?;
    wait_for_min_seq(ctx, view, request).await?;
    Ok(params)
}

/// The rows of the households that exist among `ids`, with their sealed data if not erased.
fn read_rows(
    view: &View,
    ids: impl IntoIterator<Item = String>,
) -> Result<Vec<(HouseholdRow, Option<Sealed>)>, ServiceError> {
    let mut out = Vec::new();
    for id in ids {
        if let Some(row) = view.get_json::<HouseholdRow>("household", id.as_bytes()).map_err(storage)? {
            let sealed = view.get_json::<Sealed>("sealed", id.as_bytes()).map_err(storage)?;
            out.push((row, sealed));
        }
    }
    Ok(out)
}

/// Opens a row's personal data (if its key still exists) and looks for possible duplicates.
async fn open(
    vault: &Vault,
    store: &ProjectionStore,
    row: HouseholdRow,
    sealed: Option<Sealed>,
) -> Result<HouseholdView, ServiceError> {
    let personal = match sealed {
        Some(Sealed { nonce, ciphertext }) => {
            match vault.unseal(&row.household_id, &vault::Sealed { nonce, ciphertext }).await.map_err(vault_error)? {
                Some(bytes) => Some(
                    serde_json::from_slice(&bytes).map_err(|e| ServiceError::internal("opening personal data", e))?,
                ),
                None => None,
            }
        }
        None => None,
    };
    // Households the vault knows but the read model not yet (or no more) are left out.
    let others = vault.others_with_identity_of(&row.household_id).await.map_err(vault_error)?;
    let others = with_view(store, HouseholdsProjection.name(), move |v| read_rows(v, others)).await?;
    let possible_duplicates: BTreeSet<String> =
        others.into_iter().filter(|(r, _)| !r.erased).map(|(r, _)| r.association_id).collect();
    Ok(HouseholdView { row, personal, possible_duplicates: possible_duplicates.into_iter().collect() })
}
