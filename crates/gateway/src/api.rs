//! The HTTP API: a table of operations, each forwarding to one command or query of a service.
//! The same table drives the router and the OpenAPI document, so they cannot disagree.

use std::collections::BTreeMap;

use axum::extract::{Query, RawPathParams, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use runtime::{Actor, CommandRequest, QueryRequest};
use serde_json::{Map, Value};
use utoipa::openapi::{RefOr, Schema};
use uuid::Uuid;

use crate::error::ApiError;
use crate::{AppState, Caller, RequestId};

pub type Schemas = Vec<(String, RefOr<Schema>)>;
pub type SchemaFn = fn(&mut Schemas) -> RefOr<Schema>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Command,
    Query,
}

/// One endpoint of the API.
#[derive(Clone)]
pub struct Op {
    pub method: Method,
    pub path: &'static str,
    pub service: &'static str,
    pub kind: OpKind,
    pub name: &'static str,
    pub summary: &'static str,
    /// Who may call it, declared once here: the OpenAPI text and the access matrix test
    /// (`tests/access.rs`) read it, the services enforce it. `None` until `doc` declares it, which
    /// the test refuses.
    pub access: Option<Access>,
    pub body: Option<SchemaFn>,
    pub response: SchemaFn,
    /// Query-string parameters (name, description).
    pub params: &'static [(&'static str, &'static str)],
    /// Answers 201 Created rather than 200.
    pub creates: bool,
    /// How a query's answer is sent: JSON, or rendered as a document.
    pub render: Render,
    /// How far back `X-Occurred-At` may date what a command records.
    pub dated: Dated,
}

/// Whether a command may be dated by `X-Occurred-At`, and how far back: what can happen away
/// from the network (a driver's stop, a hand-over at a relay point, a donation recorded after
/// the fact) may be dated back a little; anything else is recorded as it happens, and a date
/// would rewrite history (stock as it was, for one). Never more than the clocks' drift ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dated {
    /// Recorded when it arrives: `X-Occurred-At` is refused (`occurred_at_not_accepted`).
    Now,
    /// At most this many days back (`occurred_too_long_ago` beyond).
    DaysBack(i64),
}

/// Days a driver's action or a relay point's hand-over may be sent late (a phone offline for a
/// week still delivers its outbox).
pub const OFFLINE_DAYS: i64 = 7;

/// Who may call an operation. Administrators always may; the other roles as declared. The services
/// enforce it (`services::common::require`, `require_scope` and the handlers' own checks); this
/// declaration is what the OpenAPI document says and what `tests/access.rs` checks them against,
/// cell by cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub warehouse: bool,
    pub association: Grant,
    pub driver: Grant,
    /// The answer to an association or a driver aiming at another's target (`Grant::Own`).
    pub not_yours: Refusal,
}

/// What a scoped role (an association, a driver) may reach with an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Nothing: refused, 403 `forbidden`.
    No,
    /// Its own only: its own households, parcels and association; a driver's own routes. Another's
    /// target is refused with `Access::not_yours`, and what it reads holds its own rows only.
    Own,
    /// The operation names no target; each caller reads its own rows only.
    OwnRows,
    /// Anyone's: shared data (the members, the catalogue, the sites, the fleet).
    All,
}

/// How a refusal for another's target is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 403 `forbidden`.
    Forbidden,
    /// 404 with this code: as far as the caller can tell, the target does not exist.
    NotFound(&'static str),
    /// 422 with this code: a list refused line by line, none of it done.
    Rejected(&'static str),
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Forbidden => StatusCode::FORBIDDEN,
            Refusal::NotFound(_) => StatusCode::NOT_FOUND,
            Refusal::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Refusal::Forbidden => "forbidden",
            Refusal::NotFound(code) | Refusal::Rejected(code) => code,
        }
    }
}

impl Access {
    /// Administrators only.
    pub const ADMIN: Access =
        Access { warehouse: false, association: Grant::No, driver: Grant::No, not_yours: Refusal::Forbidden };
    /// Every role, anyone's.
    pub const ANY: Access =
        Access { warehouse: true, association: Grant::All, driver: Grant::All, not_yours: Refusal::Forbidden };

    /// The warehouse may too.
    pub const fn warehouse(self) -> Access {
        Access { warehouse: true, ..self }
    }

    pub const fn association(self, grant: Grant) -> Access {
        Access { association: grant, ..self }
    }

    pub const fn driver(self, grant: Grant) -> Access {
        Access { driver: grant, ..self }
    }

    /// Another's target is answered `refusal` (rather than 403 `forbidden`).
    pub const fn not_yours(self, refusal: Refusal) -> Access {
        Access { not_yours: refusal, ..self }
    }

    /// Who may call it, in words: the OpenAPI description's "Who".
    pub fn describe(&self) -> String {
        if *self == Access::ANY {
            return "any role".to_owned();
        }
        let mut who = vec!["admin".to_owned()];
        if self.warehouse {
            who.push("warehouse".to_owned());
        }
        for (grant, one, role, own) in
            [(self.association, "an", "association", "its own"), (self.driver, "a", "driver", "their own")]
        {
            match grant {
                Grant::No => {}
                Grant::All => who.push(format!("any {role}")),
                Grant::OwnRows => who.push(format!("{one} {role}, reading {own} only")),
                Grant::Own => who.push(format!(
                    "{one} {role} for {own} (another's: {} {})",
                    self.not_yours.status().as_u16(),
                    self.not_yours.code()
                )),
            }
        }
        who.join(", ")
    }
}

/// A query answer rendered as a document rather than sent as JSON.
#[derive(Clone, Copy)]
pub enum Render {
    Json,
    Document { content_type: &'static str, render: fn(&Value) -> Result<String, String> },
}

/// Renders a query's JSON answer, read back as `T`, with `f`.
fn document<T: serde::de::DeserializeOwned>(answer: &Value, f: fn(&T) -> String) -> Result<String, String> {
    T::deserialize(answer).map(|t| f(&t)).map_err(|e| e.to_string())
}

/// Reference to `T`'s schema, registering it (and what it uses) in `out`.
pub fn schema<T: utoipa::ToSchema>(out: &mut Schemas) -> RefOr<Schema> {
    T::schemas(out);
    out.push((T::name().into_owned(), T::schema()));
    RefOr::Ref(utoipa::openapi::Ref::from_schema_name(T::name()))
}

pub fn array<T: utoipa::ToSchema>(out: &mut Schemas) -> RefOr<Schema> {
    let item = schema::<T>(out);
    RefOr::T(Schema::Array(utoipa::openapi::schema::ArrayBuilder::new().items(item).build()))
}

impl Op {
    fn command(method: Method, path: &'static str, service: &'static str, name: &'static str, body: SchemaFn) -> Op {
        Op {
            method,
            path,
            service,
            kind: OpKind::Command,
            name,
            summary: "",
            access: None,
            body: Some(body),
            response: schema::<runtime_schema::CommandReply>,
            params: &[],
            creates: false,
            render: Render::Json,
            dated: Dated::Now,
        }
    }

    fn query(path: &'static str, service: &'static str, name: &'static str, response: SchemaFn) -> Op {
        Op {
            method: Method::GET,
            path,
            service,
            kind: OpKind::Query,
            name,
            summary: "",
            access: None,
            body: None,
            response,
            params: &[],
            creates: false,
            render: Render::Json,
            dated: Dated::Now,
        }
    }

    fn rendered(mut self, content_type: &'static str, render: fn(&Value) -> Result<String, String>) -> Op {
        self.render = Render::Document { content_type, render };
        self
    }

    fn doc(mut self, summary: &'static str, access: Access) -> Op {
        self.summary = summary;
        self.access = Some(access);
        self
    }

    fn creates(mut self) -> Op {
        self.creates = true;
        self
    }

    /// May be dated back (`X-Occurred-At`) by at most `days`.
    fn dated_back(mut self, days: i64) -> Op {
        self.dated = Dated::DaysBack(days);
        self
    }

    fn params(mut self, params: &'static [(&'static str, &'static str)]) -> Op {
        self.params = params;
        self
    }
}

/// Every operation of the API.
pub fn operations() -> Vec<Op> {
    use services::{distribution as dist, donations as don, stock as st, transport as tr};
    use Grant::{All, Own, OwnRows};
    use Refusal::{NotFound, Rejected};
    let (post, patch) = (Method::POST, Method::PATCH);
    let (admin, any, warehouse) = (Access::ADMIN, Access::ANY, Access::ADMIN.warehouse());
    let (association, driver) = (Access::ADMIN.association(Own), Access::ADMIN.driver(Own));
    vec![
        Op::command(post.clone(), "/api/donors", "donations", "register_donor", schema::<don::RegisterDonor>)
            .doc("Register a donor", warehouse)
            .creates(),
        Op::command(patch, "/api/donors/{donor_id}", "donations", "update_donor", schema::<don::UpdateDonor>)
            .doc("Change a donor's name, address or position", warehouse),
        Op::query("/api/donors", "donations", "list_donors", array::<don::DonorRow>)
            .doc("List donors", warehouse)
            .params(&[("kind", "only donors of this kind"), ("q", "part of the name, any case")]),
        Op::query("/api/donors/{donor_id}", "donations", "get_donor", schema::<don::DonorRow>)
            .doc("One donor", warehouse),
        Op::command(
            post.clone(),
            "/api/donors/{donor_id}/agreement",
            "donations",
            "sign_agreement",
            schema::<don::SignAgreement>,
        )
        .doc("Record the donor's signed agreement (convention), with its own use-by delay", admin),
        Op::command(
            Method::DELETE,
            "/api/donors/{donor_id}/agreement",
            "donations",
            "end_agreement",
            schema::<don::EndAgreement>,
        )
        .doc("End the donor's agreement", admin),
        Op::command(
            Method::PUT,
            "/api/donors/{donor_id}/collections",
            "donations",
            "set_collections",
            schema::<don::SetCollections>,
        )
        .doc(
            "Replace the donor's weekly collections (day, window, kg, chilled kg, site): they become pickup jobs \
             for the days ahead",
            warehouse,
        ),
        Op::query(
            "/api/donors/{donor_id}/statements/{year}",
            "donations",
            "donor_statement",
            schema::<don::DonorStatement>,
        )
        .doc("What the donor gave in a calendar year, by food group, with meal equivalents", warehouse),
        Op::query(
            "/api/donors/{donor_id}/statements/{year}/csv",
            "donations",
            "donor_statement",
            schema::<don::DonorStatement>,
        )
        .doc("The year's statement as CSV (text/csv)", warehouse)
        .rendered("text/csv; charset=utf-8", |v| document(v, don::statement_csv)),
        Op::query(
            "/api/donors/{donor_id}/statements/{year}/html",
            "donations",
            "donor_statement",
            schema::<don::DonorStatement>,
        )
        .doc("The year's statement as a printable attestation (text/html)", warehouse)
        .rendered("text/html; charset=utf-8", |v| document(v, don::statement_html)),
        Op::command(post.clone(), "/api/products", "donations", "define_product", schema::<don::DefineProduct>)
            .doc("Define a product (a GTIN makes its id gtin-<14 digits>)", warehouse)
            .creates(),
        Op::command(
            Method::PUT,
            "/api/products/{product_id}",
            "donations",
            "update_product",
            schema::<don::UpdateProduct>,
        )
        .doc("Replace a product's details (its GTIN cannot change)", warehouse),
        Op::query("/api/products", "donations", "list_products", array::<don::ProductRow>)
            .doc("List the catalogue", any)
            .params(&[("food_group", "only this food group"), ("q", "part of the name, any case")]),
        Op::query("/api/products/{product_id}", "donations", "get_product", schema::<don::ProductRow>)
            .doc("One product", any),
        Op::query("/api/gtin/{gtin}", "donations", "lookup_gtin", schema::<don::ProductRow>)
            .doc("The product a scanned GTIN belongs to", any),
        Op::command(post.clone(), "/api/donations", "donations", "record_donation", schema::<don::RecordDonation>)
            .doc(
                "Record a donation: each line is accepted into stock or refused (use-by, best-before, cold chain)",
                warehouse,
            )
            .creates()
            .dated_back(don::BACKDATE_DAYS),
        Op::query("/api/donations", "donations", "list_donations", array::<don::DonationRow>)
            .doc("Donations, newest first", warehouse)
            .params(&[
                ("donor_id", "only this donor's"),
                ("site_id", "only those received at this site"),
                ("from", "first day received (YYYY-MM-DD)"),
                ("to", "last day received (YYYY-MM-DD)"),
            ]),
        Op::query("/api/donations/incoming", "donations", "list_incoming", array::<don::IncomingRow>)
            .doc(
                "Goods drivers collected, waiting to be checked in (record them with their donation_id)",
                warehouse,
            )
            .params(&[("site_id", "only at this site")]),
        Op::query("/api/donations/{donation_id}", "donations", "get_donation", schema::<don::DonationRow>)
            .doc("One donation and what became of each line", warehouse),
        Op::command(post.clone(), "/api/sites", "stock", "create_site", schema::<st::CreateSite>)
            .doc("Create a warehouse site with its zones", admin)
            .creates(),
        Op::command(post.clone(), "/api/sites/{site_id}/zones", "stock", "add_zone", schema::<st::AddZone>)
            .doc("Add a zone to a site", admin)
            .creates(),
        Op::query("/api/sites", "stock", "list_sites", array::<st::SiteRow>).doc("List sites", any),
        Op::query("/api/sites/{site_id}", "stock", "get_site", schema::<st::SiteRow>).doc("One site", any),
        Op::query("/api/lots", "stock", "list_lots", array::<st::LotRow>)
            .doc("Lots in stock (with units on hand unless a status is given)", warehouse)
            .params(&[
                ("site_id", "only at this site"),
                ("product_id", "only of this product"),
                ("zone", "only in this zone"),
                ("food_group", "only of this food group"),
                ("storage", "ambient, chilled or frozen"),
                ("status", "available, held, recalled, expired or depleted"),
            ]),
        Op::query("/api/lots/{lot_id}", "stock", "get_lot", schema::<st::LotRow>)
            .doc("One lot and its figures", warehouse),
        Op::command(post.clone(), "/api/lots/{lot_id}/adjustments", "stock", "adjust_lot", schema::<st::AdjustLot>)
            .doc("Adjust a lot with a reason (count, damage, spoilage, theft, correction)", warehouse),
        Op::command(post.clone(), "/api/lots/{lot_id}/move", "stock", "move_lot", schema::<st::MoveLot>)
            .doc("Put a lot away in a zone of its site (the zone's storage class must match)", warehouse),
        Op::command(post.clone(), "/api/lots/{lot_id}/hold", "stock", "hold_lot", schema::<st::HoldLot>)
            .doc("Put a lot on hold: no new reservation, nothing leaves", warehouse),
        Op::command(Method::DELETE, "/api/lots/{lot_id}/hold", "stock", "lift_hold", schema::<st::LiftHold>)
            .doc("Lift a lot's hold", warehouse),
        Op::command(post.clone(), "/api/lots/{lot_id}/flag", "stock", "flag_lot", schema::<st::HoldLot>)
            .doc("Flag a lot for inspection (it stays available; the reason shows on the lot)", warehouse),
        Op::query("/api/stock", "stock", "stock_summary", array::<st::StockLine>)
            .doc("Stock by site and product, filtered; as it was on a past day with as_of", warehouse)
            .params(&[
                ("site_id", "only at this site"),
                ("zone", "only in this zone"),
                ("food_group", "only of this food group"),
                ("storage", "ambient, chilled or frozen"),
                ("as_of", "stock at the end of this day (YYYY-MM-DD)"),
            ]),
        Op::query("/api/stock/low", "stock", "low_stock", array::<st::LowStock>)
            .doc("Available kg per food group against the configured minimum", warehouse)
            .params(&[("site_id", "only at this site")]),
        Op::command(post.clone(), "/api/stock/expiry-run", "stock", "run_expiry", schema::<st::RunExpiry>)
            .doc("Write off lots past their use-by date, flag those past best-before (also runs daily)", admin),
        Op::command(
            post.clone(),
            "/api/sites/{site_id}/zones/{zone}/counts",
            "stock",
            "count_zone",
            schema::<st::ZoneCount>,
        )
        .doc("Record a physical count of every lot in a zone; variances become adjustments", warehouse),
        Op::query("/api/stock/expiring", "stock", "expiring_lots", array::<st::LotRow>)
            .doc(
                "Lots whose date falls within N days, earliest first: push them into the next parcels",
                warehouse,
            )
            .params(&[("days", "how many days ahead (required)"), ("site_id", "only at this site")]),
        Op::command(post.clone(), "/api/reservations", "stock", "reserve_stock", schema::<st::ReserveStock>)
            .doc(
                "Reserve stock for a parcel or a transfer, in FEFO order across lots; all or nothing unless partial",
                warehouse,
            )
            .creates(),
        Op::query("/api/transfers", "stock", "list_transfers", array::<st::ReservationRow>)
            .doc("Transfers between sites, latest first (reservations whose purpose is a transfer)", warehouse)
            .params(&[("site_id", "only those leaving or reaching this site")]),
        Op::query("/api/reservations/{reservation_id}", "stock", "get_reservation", schema::<st::ReservationRow>)
            .doc("One reservation and the lots it holds", warehouse),
        Op::command(
            post.clone(),
            "/api/reservations/{reservation_id}/release",
            "stock",
            "release_reservation",
            schema::<st::ReservationAction>,
        )
        .doc("Give a reservation's units back", warehouse),
        Op::command(
            post.clone(),
            "/api/reservations/{reservation_id}/pick",
            "stock",
            "pick_reservation",
            schema::<st::ReservationAction>,
        )
        .doc("Record that a reservation's units are picked (prepared)", warehouse),
        Op::command(
            post.clone(),
            "/api/reservations/{reservation_id}/ship",
            "stock",
            "ship_reservation",
            schema::<st::ShipReservation>,
        )
        .doc("Hand a reservation's units over, recording where they go", warehouse),
        Op::command(
            post.clone(),
            "/api/reservations/{reservation_id}/return",
            "stock",
            "return_shipment",
            schema::<st::ReservationAction>,
        )
        .doc(
            "Take back what a reservation shipped: ambient units within date go back on the shelf, chilled and frozen ones are written off",
            warehouse,
        ),
        Op::command(
            post.clone(),
            "/api/reservations/{reservation_id}/redirect",
            "stock",
            "redirect_shipment",
            schema::<st::ShipReservation>,
        )
        .doc("Record that shipped units went to another destination (the recall trace follows them)", warehouse),
        Op::command(
            post.clone(),
            "/api/reservations/{reservation_id}/dispatch",
            "stock",
            "dispatch_transfer",
            schema::<st::ReservationAction>,
        )
        .doc("Send a transfer's units to the other site (in transit until received)", warehouse),
        Op::command(
            post.clone(),
            "/api/reservations/{reservation_id}/receive",
            "stock",
            "receive_transfer",
            schema::<st::ReservationAction>,
        )
        .doc("Take a dispatched transfer in at its site, as new lots with the same lot numbers", warehouse),
        Op::command(post.clone(), "/api/recalls", "stock", "issue_recall", schema::<st::IssueRecall>)
            .doc("Recall a product's lots (by lot number or dates): every matching lot is held at once", admin)
            .creates(),
        Op::query("/api/recalls/{recall_id}/trace", "stock", "recall_trace", schema::<st::RecallTrace>)
            .doc("Where the recalled units went: parcels, associations, relay points, households, donors", admin),
        Op::command(
            post.clone(),
            "/api/associations",
            "distribution",
            "register_association",
            schema::<dist::RegisterAssociation>,
        )
        .doc("Register a member association", admin)
        .creates(),
        Op::command(
            post.clone(),
            "/api/associations/{association_id}/relay-points",
            "distribution",
            "add_relay_point",
            schema::<dist::AddRelayPoint>,
        )
        .doc("Add a relay point (address, commune, position, cold storage, weekly opening slots)", association)
        .creates(),
        Op::command(
            Method::PUT,
            "/api/associations/{association_id}/parcel-days",
            "distribution",
            "set_parcel_days",
            schema::<dist::SetParcelDays>,
        )
        .doc("Set how many days a parcel covers at this association (its distribution rhythm)", association),
        Op::command(
            Method::PUT,
            "/api/associations/{association_id}/relay-points/{relay_id}/opening",
            "distribution",
            "set_relay_opening",
            schema::<dist::SetRelayOpening>,
        )
        .doc("Replace a relay point's weekly opening slots", association),
        Op::query("/api/associations", "distribution", "list_associations", array::<dist::AssociationRow>)
            .doc("List member associations and their relay points", any),
        Op::query(
            "/api/associations/{association_id}",
            "distribution",
            "get_association",
            schema::<dist::AssociationRow>,
        )
        .doc("One association", any),
        Op::command(
            Method::PUT,
            "/api/associations/{association_id}/eligibility",
            "distribution",
            "set_eligibility_rule",
            schema::<dist::SetEligibilityRule>,
        )
        .doc("Set an association's own eligibility rule (reste à vivre threshold, validity)", admin),
        Op::command(
            post.clone(),
            "/api/households",
            "distribution",
            "register_household",
            schema::<dist::RegisterHousehold>,
        )
        .doc(
            "Register a household; names, birth date, phone and address are sealed with its own key",
            association,
        )
        .creates(),
        Op::command(
            post.clone(),
            "/api/households/import",
            "distribution",
            "import_households",
            schema::<dist::ImportHouseholds>,
        )
        .doc(
            "Import households (at most 1000) from a spreadsheet's CSV (; or , separated; French or English \
             columns: prenom, nom, \
             date_de_naissance, telephone, adresse, point_relais, adultes, ados, enfants, bebes, sans_porc, halal, \
             vegetarien, sans_cuisine, allergies, ressources, charges, consentement). Every line is checked first: \
             any error gives 422 invalid_import with details [{line, column, code, message}] and nothing is \
             written. A person already imported into the association is left as they are, so the same file sent \
             twice registers nobody twice",
            association,
        ),
        Op::command(
            Method::PATCH,
            "/api/households/{household_id}",
            "distribution",
            "update_household",
            schema::<dist::UpdateHousehold>,
        )
        .doc("Change a household's composition, diet, relay point or personal data", association),
        Op::command(
            post.clone(),
            "/api/households/{household_id}/assessments",
            "distribution",
            "assess_household",
            schema::<dist::AssessHousehold>,
        )
        .doc(
            "Assess eligibility (reste à vivre per person per day against the association's rule)",
            association,
        ),
        Op::command(
            post.clone(),
            "/api/households/{household_id}/consent",
            "distribution",
            "change_consent",
            schema::<dist::ConsentChange>,
        )
        .doc("Record consent given or withdrawn", association),
        Op::command(
            Method::DELETE,
            "/api/households/{household_id}",
            "distribution",
            "erase_household",
            schema::<dist::EraseHousehold>,
        )
        .doc(
            "Erase a household's personal data for good (its key is destroyed; the history stays)",
            association,
        ),
        Op::query("/api/households", "distribution", "list_households", array::<dist::HouseholdView>)
            .doc("An association's households, personal data opened", association)
            .params(&[("association_id", "whose households (an association's token implies its own)")]),
        Op::query("/api/households/{household_id}", "distribution", "get_household", schema::<dist::HouseholdView>)
            .doc(
                "One household, with possible duplicates in other associations",
                association.not_yours(NotFound("household_not_found")),
            ),
        Op::command(post.clone(), "/api/parcels", "distribution", "request_parcel", schema::<dist::RequestParcel>)
            .doc(
                "Request a parcel for an eligible household on a distribution day (one a day; id <household>-<date>)",
                association,
            )
            .creates(),
        Op::command(post.clone(), "/api/parcel-requests", "distribution", "request_parcels", schema::<dist::RequestParcels>)
            .doc(
                "Request parcels for a list of households on a distribution day: all checked first, none requested unless all can be (parcel_requests_rejected lists why, line by line)",
                association.not_yours(Rejected("parcel_requests_rejected")),
            ),
        Op::command(
            post.clone(),
            "/api/parcels/{parcel_id}/cancel",
            "distribution",
            "cancel_parcel",
            schema::<dist::CancelParcel>,
        )
        .doc("Cancel a parcel request", association),
        Op::command(post.clone(), "/api/waves", "distribution", "compose_wave", schema::<dist::ComposeWave>)
            .doc(
                "Compose every parcel requested for a day from a site's stock (fair across associations), reserving it in stock",
                admin,
            ),
        Op::command(post.clone(), "/api/parcels/{parcel_id}/pick", "distribution", "pick_parcel", schema::<dist::ParcelStep>)
            .doc("Record a parcel picked (its stock reservation is picked)", warehouse),
        Op::command(post.clone(), "/api/parcels/{parcel_id}/ship", "distribution", "ship_parcel", schema::<dist::ParcelStep>)
            .doc("Hand a parcel over for delivery: its lots record the household it goes to", warehouse),
        Op::command(
            post.clone(),
            "/api/parcels/{parcel_id}/at-relay",
            "distribution",
            "parcel_at_relay",
            schema::<dist::ParcelStep>,
        )
        .doc("Record a parcel arrived at its relay point", association)
        .dated_back(OFFLINE_DAYS),
        Op::command(
            post.clone(),
            "/api/parcels/{parcel_id}/collected",
            "distribution",
            "collect_parcel",
            schema::<dist::ParcelStep>,
        )
        .doc("Record a parcel collected by its household", association)
        .dated_back(OFFLINE_DAYS),
        Op::command(
            post.clone(),
            "/api/parcels/{parcel_id}/not-collected",
            "distribution",
            "parcel_not_collected",
            schema::<dist::ParcelStep>,
        )
        .doc("Record a parcel not collected by the deadline", association)
        .dated_back(OFFLINE_DAYS),
        Op::command(post.clone(), "/api/parcels/{parcel_id}/return", "distribution", "return_parcel", schema::<dist::ParcelStep>)
            .doc(
                "Take a parcel nobody collected back to the warehouse: ambient food within date goes back on the shelf, chilled and frozen food is written off",
                warehouse,
            ),
        Op::command(
            post.clone(),
            "/api/parcels/{parcel_id}/redistribute",
            "distribution",
            "redistribute_parcel",
            schema::<dist::RedistributeParcel>,
        )
        .doc(
            "Give a parcel nobody collected to another eligible household of the association (the recall trace follows it)",
            association,
        ),
        Op::command(
            post.clone(),
            "/api/distribution-days/{date}/close",
            "distribution",
            "close_distribution_day",
            schema::<dist::CloseDay>,
        )
        .doc(
            "Close a distribution day (today or before): its parcels still shipped or at the relay point are not collected (a job does it `policies.collection_days` after the day)",
            admin,
        ),
        Op::query("/api/reports", "distribution", "distribution_report", array::<dist::ReportRow>)
            .doc(
                "Monthly report per association and commune: parcels, households, people by age band, kg per food group, meals, fresh share, need coverage (aggregates only)",
                association,
            )
            .params(&[("month", "YYYY-MM"), ("association_id", "one association")]),
        Op::query("/api/reports/csv", "distribution", "distribution_report", array::<dist::ReportRow>)
            .doc("The monthly report as CSV (text/csv)", association)
            .params(&[("month", "YYYY-MM"), ("association_id", "one association")])
            .rendered("text/csv; charset=utf-8", |v| document(v, dist::report_csv)),
        Op::query("/api/fair-share", "distribution", "fair_share", array::<dist::ShareRow>)
            .doc("The fair-share ledger: need vs given per association, commune, month and food group", any)
            .params(&[("month", "YYYY-MM")]),
        Op::query("/api/parcels", "distribution", "list_parcels", array::<dist::ParcelRow>)
            .doc(
                "An association's parcels; or, without association_id, a whole day's parcels of every association \
                 (the pick list)",
                association.warehouse(),
            )
            .params(&[
                ("association_id", "whose parcels (an association's token implies its own)"),
                ("date", "one distribution day (required for a whole day)"),
            ]),
        Op::query("/api/parcels/{parcel_id}", "distribution", "get_parcel", schema::<dist::ParcelRow>)
            .doc("One parcel", association.not_yours(NotFound("parcel_not_found"))),
        Op::command(post.clone(), "/api/vehicles", "transport", "register_vehicle", schema::<tr::RegisterVehicle>)
            .doc("Register a vehicle", admin)
            .creates(),
        Op::command(
            post.clone(),
            "/api/vehicles/{vehicle_id}/retire",
            "transport",
            "retire_vehicle",
            schema::<tr::RetireVehicle>,
        )
        .doc("Retire a vehicle", admin),
        Op::command(
            Method::PUT,
            "/api/vehicles/{vehicle_id}/availability",
            "transport",
            "set_vehicle_availability",
            schema::<tr::VehicleAvailability>,
        )
        .doc("Say a vehicle is off the road on a day (or back on it)", admin),
        Op::query("/api/vehicles", "transport", "list_vehicles", array::<tr::VehicleRow>)
            .doc("List vehicles", warehouse.driver(All)),
        Op::command(post.clone(), "/api/drivers", "transport", "register_driver", schema::<tr::RegisterDriver>)
            .doc("Register a volunteer driver, the vehicles they may drive and their longest shift", admin)
            .creates(),
        Op::command(
            Method::PUT,
            "/api/drivers/{driver_id}/availability",
            "transport",
            "set_driver_availability",
            schema::<tr::DriverAvailability>,
        )
        .doc("Say when a driver is free on a day (no slot: not available)", admin),
        Op::command(
            post.clone(),
            "/api/drivers/{driver_id}/retire",
            "transport",
            "retire_driver",
            schema::<tr::RetireDriver>,
        )
        .doc("A driver no longer drives", admin),
        Op::query("/api/drivers", "transport", "list_drivers", array::<tr::DriverRow>)
            .doc("List drivers (a driver sees themself)", Access::ADMIN.driver(OwnRows)),
        Op::command(post.clone(), "/api/jobs", "transport", "schedule_job", schema::<tr::ScheduleJob>)
            .doc("Add a job: a pickup at a donor (address and position default to the donor's) or a delivery", admin)
            .creates(),
        Op::command(post.clone(), "/api/pickups", "transport", "schedule_pickups", schema::<tr::SchedulePickups>)
            .doc("Make a day's pickup jobs from donors' weekly collections now (a job is made once)", admin),
        Op::command(post.clone(), "/api/jobs/{job_id}/cancel", "transport", "cancel_job", schema::<tr::CancelJob>)
            .doc("Cancel a job", admin),
        Op::query("/api/jobs", "transport", "list_jobs", array::<tr::JobRow>)
            .doc("A day's jobs: pickups, and deliveries that shipped parcels joined", warehouse)
            .params(&[("date", "the day (required)"), ("site_id", "only this site's")]),
        Op::command(post.clone(), "/api/plans", "transport", "plan_routes", schema::<tr::PlanRoutes>)
            .doc(
                "Plan (or re-plan) a site's day: routes not started are replaced, stops done or on the road stay",
                admin,
            ),
        Op::query("/api/plans/{site_id}/{date}", "transport", "get_plan", schema::<tr::PlanRow>)
            .doc("A site's plan for a day: routes with their stops and progress, jobs left out and why", warehouse),
        Op::query("/api/routes", "transport", "list_routes", array::<tr::RouteRow>)
            .doc("Routes of a day: a driver's own, or any driver's for an admin", driver)
            .params(&[("date", "the day (required)"), ("driver_id", "one driver's (admin)")]),
        Op::command(post.clone(), "/api/routes/{route_id}/start", "transport", "start_route", schema::<tr::RouteAction>)
            .doc("Start a route (X-Occurred-At: when, if sent later)", driver)
            .dated_back(OFFLINE_DAYS),
        Op::command(post.clone(), "/api/routes/{route_id}/end", "transport", "end_route", schema::<tr::RouteAction>)
            .doc("End a route (stops not done go back to the next plan)", driver)
            .dated_back(OFFLINE_DAYS),
        Op::command(
            post.clone(),
            "/api/routes/{route_id}/stops/{job_id}/arrive",
            "transport",
            "arrive_stop",
            schema::<tr::StopBody>,
        )
        .doc("Arrived at a stop (loading or unloading starts)", driver)
        .dated_back(OFFLINE_DAYS),
        Op::command(
            post.clone(),
            "/api/routes/{route_id}/stops/{job_id}/complete",
            "transport",
            "complete_stop",
            schema::<tr::CompleteStop>,
        )
        .doc(
            "A stop done, with the kilograms actually loaded (fewer: a partial pickup); a pickup becomes an \
             incoming donation, a delivery puts its parcels at the relay point",
            driver,
        )
        .dated_back(OFFLINE_DAYS),
        Op::command(
            post,
            "/api/routes/{route_id}/stops/{job_id}/fail",
            "transport",
            "fail_stop",
            schema::<tr::FailStop>,
        )
        .doc("A stop that could not be done, and why", driver)
        .dated_back(OFFLINE_DAYS),
    ]
}

/// Schemas of the runtime's wire types, declared here because the runtime does not depend on
/// utoipa.
pub mod runtime_schema {
    use serde::Serialize;
    use utoipa::ToSchema;

    /// The answer to an accepted command.
    #[derive(Serialize, ToSchema)]
    pub struct CommandReply {
        /// The aggregate the command changed (or created).
        pub aggregate_id: String,
        /// Stream and sequence of the commit: pass `min_seq=<stream>:<seq>` to later queries to
        /// read your own write.
        pub stream: String,
        pub seq: u64,
        pub version: u64,
        /// True when this idempotency key had already been committed (this is the first answer).
        pub duplicate: bool,
        pub events: Vec<ReplyEvent>,
    }

    #[derive(Serialize, ToSchema)]
    pub struct ReplyEvent {
        #[serde(rename = "type")]
        pub event_type: String,
        pub data: serde_json::Value,
    }
}

pub fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for op in operations() {
        let filter = MethodFilter::try_from(op.method.clone()).expect("supported method");
        let path = op.path;
        let handler = move |state: State<AppState>,
                            actor: Option<Extension<Actor>>,
                            caller: Option<Extension<Caller>>,
                            request_id: Extension<RequestId>,
                            raw_path: RawPathParams,
                            query: Query<Vec<(String, String)>>,
                            headers: HeaderMap,
                            body: Bytes| {
            let op = op.clone();
            let path: BTreeMap<String, String> = raw_path.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
            let caller = caller.map(|Extension(c)| c);
            async move { forward(op, state, actor, caller, request_id, path, query, headers, body).await }
        };
        router = router.route(path, on(filter, handler));
    }
    router
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    op: Op,
    State(state): State<AppState>,
    actor: Option<Extension<Actor>>,
    caller: Option<Caller>,
    Extension(request_id): Extension<RequestId>,
    path: BTreeMap<String, String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(Extension(actor)) = actor else {
        return Err(ApiError::unauthenticated());
    };
    match op.kind {
        OpKind::Command => {
            let mut payload = parse_body(&body)?;
            for (k, v) in path {
                payload.insert(k, Value::String(v));
            }
            let command_id = match headers.get("idempotency-key") {
                Some(v) => v
                    .to_str()
                    .map_err(|_| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "invalid_idempotency_key",
                            "Idempotency-Key must be ASCII",
                        )
                    })?
                    .to_owned(),
                None => Uuid::now_v7().to_string(),
            };
            let occurred_at = match headers.get("x-occurred-at") {
                None => None,
                Some(v) => Some(
                    v.to_str()
                        .ok()
                        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                        .ok_or_else(|| {
                            ApiError::new(
                                StatusCode::BAD_REQUEST,
                                "invalid_occurred_at",
                                "X-Occurred-At must be an RFC 3339 date-time",
                            )
                        })?
                        .with_timezone(&chrono::Utc),
                ),
            };
            if let Some(at) = occurred_at {
                check_dated(&op, at)?;
            }
            let mut request = CommandRequest::new(command_id, actor, Value::Object(payload));
            request.correlation_id = Some(request_id.0);
            request.occurred_at = occurred_at;
            request.caller = caller.map(|c| c.0);
            let reply = state.services.command(op.service, op.name, &request).await?;
            // A retry gets the first answer, status included.
            let status = if op.creates { StatusCode::CREATED } else { StatusCode::OK };
            Ok((status, Json(reply)).into_response())
        }
        OpKind::Query => {
            let mut params = Map::new();
            let mut min_seq = BTreeMap::new();
            for (k, v) in query {
                // A parameter the table does not declare, or one given twice, is a client's
                // mistake that would otherwise be answered as if the rest were all it asked.
                if k != "min_seq" && !op.params.iter().any(|(name, _)| *name == k) {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "unknown_parameter",
                        format!("{} takes no parameter {k:?}; see /api/openapi.json", op.path),
                    ));
                }
                if params.contains_key(&k) {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "repeated_parameter",
                        format!("the parameter {k:?} is given more than once"),
                    ));
                }
                if k == "min_seq" {
                    let (stream, seq) = match v.split_once(':') {
                        Some((s, n)) => (s.to_owned(), n),
                        None => (op.service.to_owned(), v.as_str()),
                    };
                    let seq: u64 = seq.parse().map_err(|_| {
                        ApiError::new(StatusCode::BAD_REQUEST, "invalid_min_seq", "min_seq is <seq> or <stream>:<seq>")
                    })?;
                    // One per stream: a query may wait on several streams.
                    if min_seq.insert(stream, seq).is_some() {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "repeated_parameter",
                            "min_seq names the same stream more than once",
                        ));
                    }
                } else {
                    params.insert(k, Value::String(v));
                }
            }
            for (k, v) in path {
                params.insert(k, Value::String(v));
            }
            let mut request = QueryRequest::new(actor, Value::Object(params));
            request.min_seq = min_seq;
            request.correlation_id = Some(request_id.0);
            let answer: Value = state.services.query(op.service, op.name, &request).await?;
            match op.render {
                Render::Json => Ok(Json(answer).into_response()),
                Render::Document { content_type, render } => {
                    let text = render(&answer).map_err(|e| {
                        tracing::error!(error = %e, "rendering a document");
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "could not render the document")
                    })?;
                    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], text).into_response())
                }
            }
        }
    }
}

/// Refuses an `X-Occurred-At` the operation does not take, or beyond its bounds.
fn check_dated(op: &Op, at: chrono::DateTime<chrono::Utc>) -> Result<(), ApiError> {
    let now = chrono::Utc::now();
    if at > now + chrono::Duration::minutes(services::CLOCK_SKEW_MINUTES) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "occurred_in_future",
            format!("{at} has not come yet"),
        ));
    }
    match op.dated {
        Dated::Now => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "occurred_at_not_accepted",
            "this operation records what happens now: X-Occurred-At is for what is recorded late (a driver's \
             stops, a relay point's hand-overs, a donation received earlier)",
        )),
        Dated::DaysBack(days) if at < now - chrono::Duration::days(days) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "occurred_too_long_ago",
            format!("{at} is more than {days} days ago: record it with a coordinator"),
        )),
        Dated::DaysBack(_) => Ok(()),
    }
}

fn parse_body(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", "the body must be a JSON object")),
        Err(e) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("the body is not valid JSON: {e}")))
        }
    }
}
