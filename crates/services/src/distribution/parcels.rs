//! Parcel requests: an association asks for a parcel for one of its eligible households on a
//! distribution day; the wave that composes them comes next.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use distribution::compose::Line;
use distribution::{Association, Composition, Household, Parcel, ParcelCommand, ParcelEvent, ParcelStatus};
use eventcore::AggregateId;
use projections::{ApplyError, Engine, Projection, ProjectionHandle, RecordedEvent, Tx};
use runtime::{Actor, CommandRunner, ErrorKind, Role, ServiceClient, ServiceError, ServiceHost};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::SERVICE;
use crate::common::{
    combine, meta, parse_id, process_command, projection_query, require_scope, scoped_query, storage, with_view,
    ServiceContext,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestParcel {
    pub household_id: String,
    /// The distribution day.
    pub date: NaiveDate,
    /// Emergency parcels are composed first.
    #[serde(default)]
    pub emergency: bool,
    /// Where it is collected, if not at the household's own relay point.
    pub relay_point_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestParcels {
    /// The distribution day.
    pub date: NaiveDate,
    /// The households (1 to 500), all of the caller's association.
    pub household_ids: Vec<String>,
    #[serde(default)]
    pub emergency: bool,
    /// Where they collect, if not at each household's own relay point.
    pub relay_point_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelParcel {
    pub parcel_id: String,
    #[serde(default)]
    pub reason: String,
}

/// One line of the fair-share ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ShareRow {
    /// `YYYY-MM`, of the distribution day.
    pub month: String,
    pub association_id: String,
    pub commune: String,
    #[schema(value_type = String)]
    pub food_group: values::FoodGroup,
    pub parcels: u64,
    pub need_g: u64,
    /// Given, counted up to the need (more than needed does not make up for others' lack).
    pub given_g: u64,
    pub coverage_pct: f64,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FairShare {
    /// `YYYY-MM`; every month when absent.
    #[serde(default, deserialize_with = "crate::common::month")]
    pub month: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParcelStep {
    pub parcel_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseDay {
    /// The distribution day: today or before.
    pub date: NaiveDate,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedistributeParcel {
    pub parcel_id: String,
    /// Another household of the same association, eligible today.
    pub household_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetParcel {
    pub parcel_id: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParcels {
    /// An association sees its own. Without it, administrators and the warehouse get the
    /// day's parcels of every association (`date` then required).
    pub association_id: Option<String>,
    pub date: Option<NaiveDate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ParcelRow {
    pub parcel_id: String,
    pub household_id: String,
    pub association_id: String,
    pub relay_point_id: String,
    pub date: NaiveDate,
    pub emergency: bool,
    /// `requested`, `composed`, `picked`, `shipped`, `at_relay`, `collected`, `not_collected`
    /// or `cancelled`.
    #[schema(value_type = String)]
    pub status: ParcelStatus,
    pub cancel_reason: Option<String>,
    /// What the wave put in it; each line says why (need, date).
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub lines: Vec<Line>,
    /// Food groups the stock could not fill.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub short: Vec<values::FoodGroup>,
    /// The stock reservations holding its lines.
    #[serde(default)]
    pub reservations: Vec<String>,
    /// Some of its lots were taken while the wave ran, and it was composed again.
    #[serde(default)]
    pub recomposed: bool,
    /// The household it went to instead, when nobody collected it.
    #[serde(default)]
    pub redistributed_to: Option<String>,
    /// Who it is for, by age band.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub people: Option<Composition>,
    /// The relay point's commune.
    #[serde(default)]
    pub commune: String,
    /// The household's needs per food group, grams.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub needs: BTreeMap<values::FoodGroup, u64>,
    pub updated_at: DateTime<Utc>,
}

pub struct ParcelsProjection;

impl Projection for ParcelsProjection {
    fn name(&self) -> &'static str {
        "parcels"
    }

    /// Bump when what `apply` writes changes: the rows are then rebuilt on start.
    fn version(&self) -> u32 {
        1
    }

    fn streams(&self) -> &'static [&'static str] {
        &[SERVICE]
    }

    fn apply(&self, tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError> {
        if event.aggregate_kind != "parcel" {
            return Ok(());
        }
        let id = event.envelope.aggregate_id.as_ref();
        let at = event.envelope.occurred_at;
        match event.decode::<ParcelEvent>()? {
            ParcelEvent::ParcelRequested { household_id, association_id, relay_point_id, date, emergency, people } => {
                tx.put("by_association", format!("{association_id}\0{date}\0{id}").as_bytes(), id.as_bytes().to_vec());
                tx.put("by_date", format!("{date}\0{id}").as_bytes(), id.as_bytes().to_vec());
                let row = ParcelRow {
                    parcel_id: id.to_owned(),
                    household_id,
                    association_id,
                    relay_point_id,
                    date,
                    emergency,
                    status: ParcelStatus::Requested,
                    cancel_reason: None,
                    lines: Vec::new(),
                    short: Vec::new(),
                    reservations: Vec::new(),
                    recomposed: false,
                    redistributed_to: None,
                    people,
                    commune: String::new(),
                    needs: BTreeMap::new(),
                    updated_at: at,
                };
                tx.put_json("parcel", id.as_bytes(), &row);
            }
            ParcelEvent::ParcelComposed { lines, short, needs, commune, reservations, recomposed } => {
                // The fair-share ledger: per association, commune, month and food group, what
                // was needed and what was given.
                let row: ParcelRow = tx
                    .get_json("parcel", id.as_bytes())?
                    .ok_or_else(|| ApplyError(format!("composition of unknown parcel {id}")))?;
                let month = row.date.format("%Y-%m").to_string();
                for (group, need) in &needs {
                    let given: u64 = lines.iter().filter(|l| l.food_group == *group).map(|l| l.grams).sum();
                    let key = format!("{month}\0{}\0{commune}\0{group}", row.association_id);
                    let mut entry: ShareRow = tx.get_json("share", key.as_bytes())?.unwrap_or_else(|| ShareRow {
                        month: month.clone(),
                        association_id: row.association_id.clone(),
                        commune: commune.clone(),
                        food_group: *group,
                        parcels: 0,
                        need_g: 0,
                        given_g: 0,
                        coverage_pct: 0.0,
                    });
                    entry.parcels += 1;
                    entry.need_g += need;
                    entry.given_g += given.min(*need);
                    entry.coverage_pct = 100.0 * entry.given_g as f64 / entry.need_g.max(1) as f64;
                    tx.put_json("share", key.as_bytes(), &entry);
                }
                tx.update_json("parcel", id.as_bytes(), |row: &mut ParcelRow| {
                    row.status = ParcelStatus::Composed;
                    row.reservations = reservations.unwrap_or_else(|| vec![id.to_owned()]);
                    row.commune = commune;
                    row.needs = needs;
                    row.recomposed = recomposed;
                    row.lines = lines;
                    row.short = short;
                    row.updated_at = at;
                })?;
            }
            step @ (ParcelEvent::ParcelPicked {}
            | ParcelEvent::ParcelShipped {}
            | ParcelEvent::ParcelAtRelay {}
            | ParcelEvent::ParcelCollected {}
            | ParcelEvent::ParcelNotCollected {}
            | ParcelEvent::ParcelReturned {}) => {
                let status = match step {
                    ParcelEvent::ParcelPicked {} => ParcelStatus::Picked,
                    ParcelEvent::ParcelShipped {} => ParcelStatus::Shipped,
                    ParcelEvent::ParcelAtRelay {} => ParcelStatus::AtRelay,
                    ParcelEvent::ParcelCollected {} => ParcelStatus::Collected,
                    ParcelEvent::ParcelReturned {} => ParcelStatus::Returned,
                    _ => ParcelStatus::NotCollected,
                };
                let row = tx.update_json("parcel", id.as_bytes(), |row: &mut ParcelRow| {
                    row.status = status;
                    row.updated_at = at;
                })?;
                if matches!(status, ParcelStatus::Collected | ParcelStatus::NotCollected) {
                    super::reports::count(tx, &row, status, &row.household_id, row.people)?;
                }
            }
            ParcelEvent::ParcelRedistributed { household_id, people } => {
                let row = tx.update_json("parcel", id.as_bytes(), |row: &mut ParcelRow| {
                    row.status = ParcelStatus::Redistributed;
                    row.redistributed_to = Some(household_id.clone());
                    row.updated_at = at;
                })?;
                super::reports::count(tx, &row, ParcelStatus::Redistributed, &household_id, people)?;
            }
            ParcelEvent::ParcelCancelled { reason } => {
                tx.update_json("parcel", id.as_bytes(), |row: &mut ParcelRow| {
                    row.status = ParcelStatus::Cancelled;
                    row.cancel_reason = Some(reason);
                    row.updated_at = at;
                })?;
            }
        }
        Ok(())
    }
}

/// Most households in one list of parcel requests.
const MAX_BATCH: usize = 500;

#[derive(Clone)]
struct Requests {
    parcels: Arc<CommandRunner<Parcel>>,
    households: Arc<CommandRunner<Household>>,
    associations: Arc<CommandRunner<Association>>,
    calendar: values::Calendar,
}

impl Requests {
    /// Checks that `actor` may ask for a parcel for the household on `date` (its association,
    /// eligible, the relay point open that day, none yet) and says how.
    async fn prepare(
        &self,
        actor: &Actor,
        household_id: &str,
        date: NaiveDate,
        emergency: bool,
        relay_point_id: Option<&str>,
    ) -> Result<(AggregateId, ParcelCommand), ServiceError> {
        let household_id = parse_id(household_id, "household")?;
        let (household, _) = self.households.load(&household_id).await?;
        let association_id = household
            .association_id
            .clone()
            .ok_or_else(|| ServiceError::not_found("household_not_found", format!("no household {household_id}")))?;
        require_scope(actor, Role::Association, &association_id)?;
        if !household.may_receive(date) {
            let why = if household.erased {
                "its data was erased"
            } else if !household.consent {
                "it has not given its consent"
            } else if household.assessment.is_none() {
                "it has not been assessed"
            } else {
                "its assessment does not make it eligible on that day"
            };
            return Err(ServiceError::conflict("household_not_eligible", format!("household {household_id}: {why}")));
        }
        let (association, _) = self.associations.load(&parse_id(&association_id, "association")?).await?;
        let relay_id = relay_point_id.unwrap_or(&household.relay_point_id);
        let relay = association.relay_points.values().find(|r| r.relay_id.as_str() == relay_id).ok_or_else(|| {
            ServiceError::not_found("relay_point_not_found", format!("{association_id} has no relay point {relay_id}"))
        })?;
        if !relay.open_on(date) {
            return Err(ServiceError::validation(
                "relay_point_closed",
                format!("relay point {relay_id} is closed on {}", date.format("%A %d %B %Y")),
            ));
        }
        let id = parse_id(&Parcel::id_for(household_id.as_str(), date), "parcel")?;
        let (parcel, _) = self.parcels.load(&id).await?;
        if parcel.status.is_some_and(|s| s != ParcelStatus::Cancelled) {
            return Err(ServiceError::conflict(
                "parcel_already_requested",
                format!("household {household_id} already has a parcel on {date}"),
            ));
        }
        let command = ParcelCommand::Request {
            household_id: household_id.to_string(),
            association_id,
            relay_point_id: relay_id.to_owned(),
            date,
            emergency,
            people: household.composition,
            today: self.calendar.day_of(Utc::now()),
        };
        Ok((id, command))
    }
}

async fn load_parcel(parcels: &CommandRunner<Parcel>, id: &AggregateId) -> Result<Parcel, ServiceError> {
    let (parcel, _) = parcels.load(id).await?;
    if parcel.status.is_none() {
        return Err(ServiceError::not_found("parcel_not_found", format!("no parcel {id}")));
    }
    Ok(parcel)
}

/// Where a parcel's units went, for the stock lots (and so the recall trace).
fn destination(parcel_id: &str, parcel: &Parcel, household: &str) -> serde_json::Value {
    serde_json::json!({ "kind": "parcel", "reference": parcel_id, "association_id": parcel.association_id,
                        "relay_point_id": parcel.relay_point_id, "household": household })
}

/// Runs a stock command on each of the parcel's reservations (with `destination` when it takes
/// one), as step `step`: a retry repeats the same commands, which stock answers once.
async fn on_reservations(
    client: &ServiceClient,
    parcel: &Parcel,
    step: &str,
    command: &str,
    destination: impl Fn(&str) -> Option<serde_json::Value>,
) -> Result<(), ServiceError> {
    for reservation in parcel.reservations() {
        let mut payload = serde_json::json!({ "reservation_id": reservation });
        if let Some(to) = destination(&reservation) {
            payload["destination"] = to;
        }
        let request = runtime::CommandRequest::new(
            format!("{step}/{reservation}"),
            runtime::Actor::system("distribution"),
            payload,
        );
        match client.command("stock", command, &request).await {
            Ok(_) => {}
            // Released or never reserved (a parcel with nothing in it): nothing to give back.
            Err(e) if command == "release_reservation" && e.code == "reservation_not_found" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub(super) fn register(host: &mut ServiceHost, ctx: &ServiceContext, engine: &mut Engine) -> ProjectionHandle {
    let parcels = ctx.runner::<Parcel>(SERVICE);
    let households = ctx.runner::<Household>(SERVICE);
    let view = engine.register(ParcelsProjection);
    let association: &'static [Role] = &[Role::Association];

    let runners = Requests {
        parcels: parcels.clone(),
        households: households.clone(),
        associations: ctx.runner::<Association>(SERVICE),
        calendar: ctx.calendar,
    };
    process_command(
        host,
        "request_parcel",
        association,
        runners.clone(),
        |r, request, body: RequestParcel| async move {
            let (id, command) = r
                .prepare(&request.actor, &body.household_id, body.date, body.emergency, body.relay_point_id.as_deref())
                .await?;
            r.parcels.execute(id, command, meta(&request)).await
        },
    );
    // A distribution day's list: every household checked first, and nothing requested unless
    // all can be; a retry of the same request completes one cut short.
    process_command(host, "request_parcels", association, runners, |r, request, body: RequestParcels| async move {
        if body.household_ids.is_empty() || body.household_ids.len() > MAX_BATCH {
            return Err(ServiceError::validation("invalid_households", format!("list 1 to {MAX_BATCH} households")));
        }
        let mut ready = Vec::new();
        let mut problems = Vec::new();
        for (i, household) in body.household_ids.iter().enumerate() {
            let relay = body.relay_point_id.as_deref();
            match r.prepare(&request.actor, household, body.date, body.emergency, relay).await {
                Ok(ok) => ready.push((household, ok)),
                Err(e) if e.kind == ErrorKind::Unavailable || e.kind == ErrorKind::Internal => return Err(e),
                Err(e) => problems.push(format!("line {} ({household}): {} — {}", i + 1, e.code, e.message)),
            }
        }
        if !problems.is_empty() {
            return Err(ServiceError::validation(
                "parcel_requests_rejected",
                format!("nothing was requested: {}", problems.join("; ")),
            ));
        }
        let mut replies = Vec::new();
        for (household, (id, command)) in ready {
            let meta =
                eventcore::CommandMeta { command_id: format!("{}/{household}", request.command_id), ..meta(&request) };
            replies.push(r.parcels.execute(id, command, meta).await?);
        }
        Ok(combine(format!("requests-{}", body.date), SERVICE, replies))
    });
    let client = ctx.client.clone();
    process_command(
        host,
        "cancel_parcel",
        association,
        (parcels, client),
        |(parcels, client), request, body: CancelParcel| async move {
            let id = parse_id(&body.parcel_id, "parcel")?;
            let parcel = load_parcel(&parcels, &id).await?;
            require_scope(&request.actor, Role::Association, &parcel.association_id)?;
            if parcel.status == Some(ParcelStatus::Composed) {
                // What stock set aside for it goes back first.
                on_reservations(&client, &parcel, "cancel", "release_reservation", |_| None).await?;
            }
            parcels.execute(id, ParcelCommand::Cancel { reason: body.reason }, meta(&request)).await
        },
    );

    // The warehouse picks and hands over: stock first (its lots record where the units went,
    // down to the household), then the parcel.
    for (name, step, status) in
        [("pick_parcel", "pick", ParcelStatus::Picked), ("ship_parcel", "ship", ParcelStatus::Shipped)]
    {
        let state = (ctx.runner::<Parcel>(SERVICE), ctx.client.clone());
        process_command(
            host,
            name,
            &[Role::Warehouse],
            state,
            move |(parcels, client), request, body: ParcelStep| async move {
                let id = parse_id(&body.parcel_id, "parcel")?;
                let parcel = load_parcel(&parcels, &id).await?;
                if matches!(parcel.status, Some(ParcelStatus::Composed | ParcelStatus::Picked)) {
                    let destination = (step == "ship").then(|| destination(id.as_str(), &parcel, &parcel.household_id));
                    on_reservations(&client, &parcel, step, &format!("{step}_reservation"), |_| destination.clone())
                        .await?;
                }
                parcels.execute(id, ParcelCommand::Advance(status), meta(&request)).await
            },
        );
    }
    // The association sees it arrive and be collected (or not).
    for (name, status) in [
        ("parcel_at_relay", ParcelStatus::AtRelay),
        ("collect_parcel", ParcelStatus::Collected),
        ("parcel_not_collected", ParcelStatus::NotCollected),
    ] {
        process_command(
            host,
            name,
            association,
            ctx.runner::<Parcel>(SERVICE),
            move |parcels, request, body: ParcelStep| async move {
                let id = parse_id(&body.parcel_id, "parcel")?;
                let parcel = load_parcel(&parcels, &id).await?;
                require_scope(&request.actor, Role::Association, &parcel.association_id)?;
                parcels.execute(id, ParcelCommand::Advance(status), meta(&request)).await
            },
        );
    }
    // Nobody collected it: back to the warehouse (what keeps goes back on the shelf)...
    process_command(
        host,
        "return_parcel",
        &[Role::Warehouse],
        (ctx.runner::<Parcel>(SERVICE), ctx.client.clone()),
        |(parcels, client), request, body: ParcelStep| async move {
            let id = parse_id(&body.parcel_id, "parcel")?;
            let parcel = load_parcel(&parcels, &id).await?;
            if parcel.status == Some(ParcelStatus::NotCollected) {
                on_reservations(&client, &parcel, "return", "return_shipment", |_| None).await?;
            }
            parcels.execute(id, ParcelCommand::Advance(ParcelStatus::Returned), meta(&request)).await
        },
    );
    // ...or to another household of the association, which the recall trace then names.
    process_command(
        host,
        "redistribute_parcel",
        association,
        (ctx.runner::<Parcel>(SERVICE), ctx.runner::<Household>(SERVICE), ctx.clone()),
        |(parcels, households, ctx), request, body: RedistributeParcel| async move {
            let client = &ctx.client;
            let id = parse_id(&body.parcel_id, "parcel")?;
            let parcel = load_parcel(&parcels, &id).await?;
            require_scope(&request.actor, Role::Association, &parcel.association_id)?;
            let other = parse_id(&body.household_id, "household")?;
            let (household, _) = households.load(&other).await?;
            if household.association_id.as_deref() != Some(parcel.association_id.as_str()) {
                return Err(ServiceError::not_found("household_not_found", format!("no household {other}")));
            }
            if !household.may_receive(ctx.today()) {
                return Err(ServiceError::conflict(
                    "household_not_eligible",
                    format!("household {other} may not receive a parcel today"),
                ));
            }
            if parcel.status == Some(ParcelStatus::NotCollected) {
                let to = destination(id.as_str(), &parcel, other.as_str());
                on_reservations(client, &parcel, &format!("redirect-{other}"), "redirect_shipment", |_| {
                    Some(to.clone())
                })
                .await?;
            }
            let command =
                ParcelCommand::Redistribute { household_id: other.to_string(), people: household.composition };
            parcels.execute(id, command, meta(&request)).await
        },
    );

    // The day is over: what was not collected is not collected (the deadline job, or a
    // coordinator closing the day by hand).
    process_command(host, "close_distribution_day", &[], ctx.clone(), |ctx, request, body: CloseDay| async move {
        if body.date > ctx.today() {
            return Err(ServiceError::validation("date_in_future", "a distribution day is closed once it has come"));
        }
        let date = body.date;
        let ids = with_view(&ctx.projections, "parcels", move |view| {
            let mut ids = Vec::new();
            for item in view.scan("by_date", format!("{date}\0").as_bytes()) {
                let (_, id) = item.map_err(storage)?;
                if let Some(row) = view.get_json::<ParcelRow>("parcel", &id).map_err(storage)? {
                    if matches!(row.status, ParcelStatus::Shipped | ParcelStatus::AtRelay) {
                        ids.push(row.parcel_id);
                    }
                }
            }
            Ok(ids)
        })
        .await?;
        let parcels = ctx.runner::<Parcel>(SERVICE);
        let mut replies = Vec::new();
        for id in ids {
            let meta = eventcore::CommandMeta { command_id: format!("deadline/{id}"), ..meta(&request) };
            let command = ParcelCommand::Advance(ParcelStatus::NotCollected);
            match parcels.execute(parse_id(&id, "parcel")?, command, meta).await {
                Ok(reply) => replies.push(reply),
                // Collected meanwhile: nothing to do.
                Err(e) if e.code == "parcel_state" => {}
                Err(e) => return Err(e),
            }
        }
        Ok(combine(format!("day-{date}"), SERVICE, replies))
    });

    // Visible to every member: pooling is built on that transparency.
    projection_query(host, "fair_share", ctx, &view, None, |view, p: FairShare| {
        let prefix = p.month.map(|m| format!("{m}\0")).unwrap_or_default();
        view.scan_json::<ShareRow>("share", prefix.as_bytes()).map_err(storage)
    });

    let association: Option<&'static [Role]> = Some(&[Role::Association]);
    scoped_query(host, "get_parcel", ctx, &view, association, |view, actor, p: GetParcel| {
        let missing = || ServiceError::not_found("parcel_not_found", format!("no parcel {}", p.parcel_id));
        let row = view.get_json::<ParcelRow>("parcel", p.parcel_id.as_bytes()).map_err(storage)?.ok_or_else(missing)?;
        // Another association's parcel does not exist, as far as this caller knows.
        require_scope(actor, Role::Association, &row.association_id).map_err(|_| missing())?;
        Ok(row)
    });
    let parcel_readers: Option<&'static [Role]> = Some(&[Role::Association, Role::Warehouse]);
    scoped_query(host, "list_parcels", ctx, &view, parcel_readers, |view, actor, p: ListParcels| {
        let warehouse = actor.role == Role::Warehouse;
        let (index, prefix) = match (p.association_id, p.date) {
            // The pick list: a whole day across associations, for the warehouse and coordinators.
            (None, Some(d)) if warehouse || actor.is_privileged() => ("by_date", format!("{d}\0")),
            (None, None) if warehouse => {
                return Err(ServiceError::validation("date_required", "say which distribution day"));
            }
            (Some(_), _) if warehouse => {
                return Err(ServiceError::forbidden("forbidden", "the warehouse lists a whole day's parcels"));
            }
            (given, date) => {
                let association = super::households::own_association(actor, given)?;
                let day = date.map(|d| format!("{d}\0")).unwrap_or_default();
                ("by_association", format!("{association}\0{day}"))
            }
        };
        let mut rows = Vec::new();
        for item in view.scan(index, prefix.as_bytes()) {
            let (_, id) = item.map_err(storage)?;
            if let Some(row) = view.get_json::<ParcelRow>("parcel", &id).map_err(storage)? {
                rows.push(row);
            }
        }
        Ok(rows)
    });
    view
}
