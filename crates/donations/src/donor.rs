use eventcore::{Aggregate, DomainEvent, Rejection};
use serde::{Deserialize, Serialize};
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
    Register { kind: DonorKind, name: Name, address: String, position: Option<GeoPoint> },
    Update { name: Option<Name>, address: Option<String>, position: Option<GeoPoint> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum DonorEvent {
    DonorRegistered { kind: DonorKind, name: Name, address: String, position: Option<GeoPoint> },
    DonorUpdated { name: Name, address: String, position: Option<GeoPoint> },
}

impl DomainEvent for DonorEvent {}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Donor {
    pub registered: Option<DonorDetails>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DonorDetails {
    pub kind: DonorKind,
    pub name: Name,
    pub address: String,
    pub position: Option<GeoPoint>,
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
            (DonorCommand::Register { kind, name, address, position }, None) => Ok(vec![DonorEvent::DonorRegistered {
                kind: *kind,
                name: name.clone(),
                address: address.trim().to_owned(),
                position: *position,
            }]),
            (DonorCommand::Update { .. }, None) => Err(Rejection::not_found("donor_not_found", "no such donor")),
            (DonorCommand::Update { name, address, position }, Some(current)) => {
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
    fn a_new_donor_is_registered_once() {
        let cmd = DonorCommand::Register {
            kind: DonorKind::Retailer,
            name: name("Carrefour Vénissieux"),
            address: " Bd Ambroise Croizat, 69200 Vénissieux ".into(),
            position: Some(GeoPoint::new(45.70, 4.88).unwrap()),
        };
        given::<Donor>([]).when(cmd.clone()).then([registered()]);
        given::<Donor>([registered()]).when(cmd).then_rejected("donor_already_registered");
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
}
