use eventcore::{Aggregate, DomainEvent, Rejection};
use serde::{Deserialize, Serialize};
use values::limits::{too_long, MAX_KG, MAX_TEXT};
use values::{GeoPoint, Name};

/// Who gives: the kind matters for tax statements and for planning pickups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DonorKind {
    /// Supermarkets and other retailers (ramasse).
    Retailer,
    /// Farmers and growers.
    Producer,
    /// Wholesalers and manufacturers.
    Wholesaler,
    /// Food banks and public programmes (e.g. EU FSE+).
    PublicProgramme,
    /// Collections in shops, schools, companies.
    FoodDrive,
    Individual,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DonorCommand {
    Register {
        kind: DonorKind,
        name: Name,
        address: String,
        position: Option<GeoPoint>,
    },
    Update {
        name: Option<Name>,
        address: Option<String>,
        position: Option<GeoPoint>,
    },
    /// Records a signed donation agreement (convention), replacing any earlier one.
    SignAgreement(Agreement),
    EndAgreement,
    /// Replaces the donor's weekly collections (none: the donor brings its gifts itself).
    SetCollections(Vec<Collection>),
}

/// A weekly collection at the donor's: a driver comes that day within the window, for about
/// this many kilograms, and takes them to the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collection {
    pub day: chrono::Weekday,
    pub opens: chrono::NaiveTime,
    pub closes: chrono::NaiveTime,
    /// Expected kilograms, and the chilled or frozen ones among them.
    pub kg: u32,
    #[serde(default)]
    pub chilled_kg: u32,
    pub site_id: String,
}

/// At most this many collections a week (two a day).
const MAX_COLLECTIONS: usize = 14;

/// A donation agreement (convention de don) with the donor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// The agreement's own reference, as written on it.
    pub reference: String,
    /// Minimum remaining life of use-by products it allows, in hours; replaces the collective's
    /// default (48 h) for this donor's donations.
    pub dlc_min_hours: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum DonorEvent {
    DonorRegistered { kind: DonorKind, name: Name, address: String, position: Option<GeoPoint> },
    DonorUpdated { name: Name, address: String, position: Option<GeoPoint> },
    AgreementSigned(Agreement),
    AgreementEnded {},
    CollectionsSet { collections: Vec<Collection> },
}

impl DomainEvent for DonorEvent {}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Donor {
    pub registered: Option<DonorDetails>,
    pub agreement: Option<Agreement>,
    pub collections: Vec<Collection>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DonorDetails {
    pub kind: DonorKind,
    pub name: Name,
    pub address: String,
    pub position: Option<GeoPoint>,
}

fn check_address(address: &str) -> Result<(), Rejection> {
    if too_long(address, MAX_TEXT) {
        return Err(Rejection::validation("invalid_address", format!("an address is at most {MAX_TEXT} characters")));
    }
    Ok(())
}

impl Aggregate for Donor {
    const KIND: &'static str = "donor";
    type Command = DonorCommand;
    type Event = DonorEvent;

    fn decide(&self, command: &DonorCommand) -> Result<Vec<DonorEvent>, Rejection> {
        match (command, &self.registered) {
            (DonorCommand::Register { .. }, Some(_)) => {
                Err(Rejection::conflict("donor_already_registered", "this donor is already registered"))
            }
            (DonorCommand::Register { kind, name, address, position }, None) => {
                check_address(address)?;
                Ok(vec![DonorEvent::DonorRegistered {
                    kind: *kind,
                    name: name.clone(),
                    address: address.trim().to_owned(),
                    position: *position,
                }])
            }
            (_, None) => Err(Rejection::not_found("donor_not_found", "no such donor")),
            (DonorCommand::SignAgreement(agreement), Some(_)) => {
                let reference = agreement.reference.trim();
                if reference.is_empty() || reference.chars().count() > 100 {
                    return Err(Rejection::validation(
                        "invalid_agreement_reference",
                        "an agreement reference is 1 to 100 characters",
                    ));
                }
                if agreement.dlc_min_hours > 24 * 30 {
                    return Err(Rejection::validation(
                        "invalid_dlc_min_hours",
                        "an agreement's minimum remaining life is at most 720 h",
                    ));
                }
                let agreement = Agreement { reference: reference.to_owned(), dlc_min_hours: agreement.dlc_min_hours };
                if self.agreement.as_ref() == Some(&agreement) {
                    return Ok(vec![]);
                }
                Ok(vec![DonorEvent::AgreementSigned(agreement)])
            }
            (DonorCommand::SetCollections(collections), Some(_)) => {
                if collections.len() > MAX_COLLECTIONS {
                    return Err(Rejection::validation(
                        "invalid_collections",
                        format!("at most {MAX_COLLECTIONS} collections a week"),
                    ));
                }
                for c in collections {
                    if c.opens >= c.closes {
                        return Err(Rejection::validation("invalid_collections", "a window closes after it opens"));
                    }
                    if c.kg == 0 || c.kg > MAX_KG || c.chilled_kg > c.kg {
                        return Err(Rejection::validation(
                            "invalid_collections",
                            "a collection expects some kilograms, the chilled ones among them",
                        ));
                    }
                    if c.site_id.parse::<eventcore::AggregateId>().is_err() {
                        return Err(Rejection::validation(
                            "invalid_collections",
                            "a collection goes to a site (its id)",
                        ));
                    }
                }
                let mut sorted = collections.clone();
                sorted.sort_by_key(|c| (c.day.num_days_from_monday(), c.opens, c.site_id.clone()));
                if sorted == self.collections {
                    return Ok(vec![]);
                }
                Ok(vec![DonorEvent::CollectionsSet { collections: sorted }])
            }
            (DonorCommand::EndAgreement, Some(_)) => match self.agreement {
                Some(_) => Ok(vec![DonorEvent::AgreementEnded {}]),
                None => Err(Rejection::conflict("no_agreement", "this donor has no agreement")),
            },
            (DonorCommand::Update { name, address, position }, Some(current)) => {
                if let Some(address) = address {
                    check_address(address)?;
                }
                let next = DonorDetails {
                    kind: current.kind,
                    name: name.clone().unwrap_or_else(|| current.name.clone()),
                    address: address
                        .as_deref()
                        .map(str::trim)
                        .map(str::to_owned)
                        .unwrap_or_else(|| current.address.clone()),
                    position: position.or(current.position),
                };
                if &next == current {
                    return Ok(vec![]);
                }
                Ok(vec![DonorEvent::DonorUpdated { name: next.name, address: next.address, position: next.position }])
            }
        }
    }

    fn apply(&mut self, event: &DonorEvent) {
        match event {
            DonorEvent::DonorRegistered { kind, name, address, position } => {
                self.registered = Some(DonorDetails {
                    kind: *kind,
                    name: name.clone(),
                    address: address.clone(),
                    position: *position,
                })
            }
            DonorEvent::DonorUpdated { name, address, position } => {
                if let Some(d) = &mut self.registered {
                    d.name = name.clone();
                    d.address = address.clone();
                    d.position = *position;
                }
            }
            DonorEvent::AgreementSigned(agreement) => self.agreement = Some(agreement.clone()),
            DonorEvent::AgreementEnded {} => self.agreement = None,
            DonorEvent::CollectionsSet { collections } => self.collections = collections.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use eventcore::testing::given;

    use super::*;

    fn name(s: &str) -> Name {
        Name::try_from(s).unwrap()
    }

    fn registered() -> DonorEvent {
        DonorEvent::DonorRegistered {
            kind: DonorKind::Retailer,
            name: name("Carrefour Vénissieux"),
            address: "Bd Ambroise Croizat, 69200 Vénissieux".into(),
            position: Some(GeoPoint::new(45.70, 4.88).unwrap()),
        }
    }

    #[test]
    fn weekly_collections_are_replaced_whole_and_must_make_sense() {
        let at = |h: u32| chrono::NaiveTime::from_hms_opt(h, 0, 0).unwrap();
        let collection = |day: chrono::Weekday, kg: u32, chilled_kg: u32| Collection {
            day,
            opens: at(9),
            closes: at(11),
            kg,
            chilled_kg,
            site_id: "gerland".into(),
        };
        let (tue, fri) = (collection(chrono::Weekday::Tue, 150, 40), collection(chrono::Weekday::Fri, 200, 0));
        let set = DonorEvent::CollectionsSet { collections: vec![tue.clone(), fri.clone()] };
        let state = given::<Donor>([registered()])
            .when(DonorCommand::SetCollections(vec![fri.clone(), tue.clone()]))
            .then([set.clone()]);
        assert_eq!(state.collections, [tue.clone(), fri.clone()]);
        given::<Donor>([registered(), set.clone()]).when(DonorCommand::SetCollections(vec![fri, tue])).then([]);
        given::<Donor>([registered(), set])
            .when(DonorCommand::SetCollections(vec![]))
            .then([DonorEvent::CollectionsSet { collections: vec![] }]);
        let backwards = Collection { opens: at(12), ..collection(chrono::Weekday::Mon, 10, 0) };
        given::<Donor>([registered()])
            .when(DonorCommand::SetCollections(vec![backwards]))
            .then_rejected("invalid_collections");
        given::<Donor>([registered()])
            .when(DonorCommand::SetCollections(vec![collection(chrono::Weekday::Mon, 10, 20)]))
            .then_rejected("invalid_collections");
        given::<Donor>([]).when(DonorCommand::SetCollections(vec![])).then_rejected("donor_not_found");
        // Given a donor, when a collection expects u32::MAX kilograms or goes to a site whose
        // id would be NATS wildcards, then the collections are refused.
        for odd in [
            collection(chrono::Weekday::Mon, u32::MAX, 0),
            Collection { site_id: "*".into(), ..collection(chrono::Weekday::Mon, 10, 0) },
            Collection { site_id: "a.b".into(), ..collection(chrono::Weekday::Mon, 10, 0) },
        ] {
            given::<Donor>([registered()])
                .when(DonorCommand::SetCollections(vec![odd]))
                .then_rejected("invalid_collections");
        }
    }

    #[test]
    fn a_new_donor_is_registered_once() {
        let cmd = DonorCommand::Register {
            kind: DonorKind::Retailer,
            name: name("Carrefour Vénissieux"),
            address: " Bd Ambroise Croizat, 69200 Vénissieux ".into(),
            position: Some(GeoPoint::new(45.70, 4.88).unwrap()),
        };
        given::<Donor>([]).when(cmd.clone()).then([registered()]);
        given::<Donor>([registered()]).when(cmd).then_rejected("donor_already_registered");
        let long = DonorCommand::Register {
            kind: DonorKind::Retailer,
            name: name("Carrefour"),
            address: "Bd Ambroise Croizat ".repeat(500),
            position: None,
        };
        given::<Donor>([]).when(long).then_rejected("invalid_address");
    }

    #[test]
    fn an_update_keeps_what_it_does_not_mention() {
        let update =
            DonorCommand::Update { name: Some(name("Carrefour Vénissieux Sud")), address: None, position: None };
        given::<Donor>([registered()]).when(update.clone()).then([DonorEvent::DonorUpdated {
            name: name("Carrefour Vénissieux Sud"),
            address: "Bd Ambroise Croizat, 69200 Vénissieux".into(),
            position: Some(GeoPoint::new(45.70, 4.88).unwrap()),
        }]);
        given::<Donor>([]).when(update).then_rejected("donor_not_found");
        let same = DonorCommand::Update { name: Some(name("Carrefour Vénissieux")), address: None, position: None };
        given::<Donor>([registered()]).when(same).then([]);
    }

    #[test]
    fn an_agreement_is_signed_replaced_and_ended() {
        let signed = Agreement { reference: "CONV-2026-014".into(), dlc_min_hours: 24 };
        let sign = DonorCommand::SignAgreement(Agreement { reference: " CONV-2026-014 ".into(), dlc_min_hours: 24 });
        given::<Donor>([registered()]).when(sign.clone()).then([DonorEvent::AgreementSigned(signed.clone())]);
        given::<Donor>([registered(), DonorEvent::AgreementSigned(signed.clone())]).when(sign.clone()).then([]);
        given::<Donor>([]).when(sign).then_rejected("donor_not_found");
        let blank = DonorCommand::SignAgreement(Agreement { reference: " ".into(), dlc_min_hours: 24 });
        given::<Donor>([registered()]).when(blank).then_rejected("invalid_agreement_reference");
        let state = given::<Donor>([registered(), DonorEvent::AgreementSigned(signed)])
            .when(DonorCommand::EndAgreement)
            .then([DonorEvent::AgreementEnded {}]);
        assert_eq!(state.agreement, None);
        given::<Donor>([registered()]).when(DonorCommand::EndAgreement).then_rejected("no_agreement");
    }
}
