use std::collections::BTreeSet;

use chrono::NaiveDate;
use eventcore::{Aggregate, DomainEvent, Rejection};
use serde::{Deserialize, Serialize};
use values::Allergen;

/// Who lives in the household, by the age bands needs are counted in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Composition {
    /// 18 and over.
    pub adults: u8,
    /// 14 to 17.
    pub teens: u8,
    /// 3 to 13.
    pub children: u8,
    /// Under 3: baby food and hygiene.
    pub infants: u8,
}

impl Composition {
    /// What registering a household checks of its composition.
    pub fn check(&self) -> Result<(), Rejection> {
        check_composition(self)
    }

    pub fn people(&self) -> u32 {
        u32::from(self.adults) + u32::from(self.teens) + u32::from(self.children) + u32::from(self.infants)
    }
}

/// What the household can and cannot eat: applied strictly by the parcel composer.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Diet {
    #[serde(default)]
    pub no_pork: bool,
    #[serde(default)]
    pub halal: bool,
    #[serde(default)]
    pub vegetarian: bool,
    /// No kitchen (homeless, hotel room): ready-to-eat products only.
    #[serde(default)]
    pub no_kitchen: bool,
    #[serde(default)]
    pub allergies: BTreeSet<Allergen>,
}

/// A "reste à vivre" assessment: what is left per person per day once fixed charges are paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    pub assessed_on: NaiveDate,
    /// Monthly resources, euro cents.
    pub resources_cents: u64,
    /// Monthly fixed charges (rent, energy, insurance...), euro cents.
    pub charges_cents: u64,
    /// What is left per person per day, euro cents (can be negative).
    pub per_person_per_day_cents: i64,
    /// The association's threshold at the time, per person per day.
    pub threshold_cents: i64,
    pub eligible: bool,
    pub valid_until: NaiveDate,
}

/// Personal data sealed with the household's own key (held outside the event streams): the
/// events carry only this ciphertext, which destroying the key makes unreadable for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub nonce: String,
    pub ciphertext: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HouseholdCommand {
    Register {
        association_id: String,
        relay_point_id: String,
        composition: Composition,
        diet: Diet,
        consent: bool,
        personal: Sealed,
    },
    Update {
        relay_point_id: Option<String>,
        composition: Option<Composition>,
        diet: Option<Diet>,
        personal: Option<Sealed>,
    },
    /// Records an assessment against the association's rule (`threshold_cents` per person per
    /// day, valid `validity_days`).
    Assess {
        assessed_on: NaiveDate,
        resources_cents: u64,
        charges_cents: u64,
        threshold_cents: i64,
        validity_days: u32,
    },
    GiveConsent,
    WithdrawConsent,
    /// Right to erasure: the key is destroyed by the service; this records that it was.
    Erase,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum HouseholdEvent {
    HouseholdRegistered {
        association_id: String,
        relay_point_id: String,
        composition: Composition,
        diet: Diet,
        consent: bool,
        personal: Sealed,
    },
    HouseholdUpdated {
        relay_point_id: String,
        composition: Composition,
        diet: Diet,
        personal: Sealed,
    },
    EligibilityAssessed(Assessment),
    ConsentGiven {},
    ConsentWithdrawn {},
    HouseholdErased {},
}

impl DomainEvent for HouseholdEvent {}

/// A household followed by one association. Its id is pseudonymous; who they are is sealed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Household {
    pub association_id: Option<String>,
    pub relay_point_id: String,
    pub composition: Composition,
    pub diet: Diet,
    pub consent: bool,
    pub personal: Option<Sealed>,
    pub assessment: Option<Assessment>,
    pub erased: bool,
}

/// Largest monthly resources or charges an assessment takes, cents (1,000,000 €): more is a
/// typing error (cents typed as euros twice over), never a household asking for food aid.
pub const MAX_MONTHLY_CENTS: u64 = 100_000_000;

/// Largest household counted (per band).
const MAX_PER_BAND: u8 = 20;

fn check_composition(c: &Composition) -> Result<(), Rejection> {
    if c.people() == 0 {
        return Err(Rejection::validation("invalid_composition", "a household has at least one person"));
    }
    if [c.adults, c.teens, c.children, c.infants].iter().any(|n| *n > MAX_PER_BAND) {
        return Err(Rejection::validation(
            "invalid_composition",
            format!("at most {MAX_PER_BAND} people per age band"),
        ));
    }
    if c.adults == 0 && c.teens == 0 {
        return Err(Rejection::validation("invalid_composition", "a household has an adult or a teenager"));
    }
    Ok(())
}

fn check_diet(d: &Diet) -> Result<(), Rejection> {
    if d.vegetarian && d.halal {
        // Not contradictory in itself, but halal only constrains meat: say what is meant.
        return Err(Rejection::validation("invalid_diet", "vegetarian already excludes all meat: drop halal"));
    }
    Ok(())
}

impl Aggregate for Household {
    const KIND: &'static str = "household";
    type Command = HouseholdCommand;
    type Event = HouseholdEvent;

    fn decide(&self, command: &HouseholdCommand) -> Result<Vec<HouseholdEvent>, Rejection> {
        if self.erased {
            return Err(Rejection::conflict("household_erased", "this household's data was erased"));
        }
        match (command, &self.association_id) {
            (HouseholdCommand::Register { .. }, Some(_)) => {
                Err(Rejection::conflict("household_already_registered", "this household is already registered"))
            }
            (
                HouseholdCommand::Register { association_id, relay_point_id, composition, diet, consent, personal },
                None,
            ) => {
                check_composition(composition)?;
                check_diet(diet)?;
                Ok(vec![HouseholdEvent::HouseholdRegistered {
                    association_id: association_id.clone(),
                    relay_point_id: relay_point_id.clone(),
                    composition: *composition,
                    diet: diet.clone(),
                    consent: *consent,
                    personal: personal.clone(),
                }])
            }
            (_, None) => Err(Rejection::not_found("household_not_found", "no such household")),
            (HouseholdCommand::Update { relay_point_id, composition, diet, personal }, Some(_)) => {
                let composition = composition.unwrap_or(self.composition);
                let diet = diet.clone().unwrap_or_else(|| self.diet.clone());
                check_composition(&composition)?;
                check_diet(&diet)?;
                let relay_point_id = relay_point_id.clone().unwrap_or_else(|| self.relay_point_id.clone());
                let personal =
                    personal.clone().or_else(|| self.personal.clone()).expect("registered households are sealed");
                if relay_point_id == self.relay_point_id
                    && composition == self.composition
                    && diet == self.diet
                    && Some(&personal) == self.personal.as_ref()
                {
                    return Ok(vec![]);
                }
                Ok(vec![HouseholdEvent::HouseholdUpdated { relay_point_id, composition, diet, personal }])
            }
            (
                HouseholdCommand::Assess {
                    assessed_on,
                    resources_cents,
                    charges_cents,
                    threshold_cents,
                    validity_days,
                },
                Some(_),
            ) => {
                if *validity_days == 0 || *validity_days > 366 * 2 {
                    return Err(Rejection::validation("invalid_validity", "an assessment is valid 1 day to 2 years"));
                }
                if *resources_cents > MAX_MONTHLY_CENTS || *charges_cents > MAX_MONTHLY_CENTS {
                    return Err(Rejection::validation(
                        "invalid_amount",
                        "monthly resources and charges are at most 1,000,000 € (amounts are in cents)",
                    ));
                }
                let valid_until =
                    assessed_on.checked_add_days(chrono::Days::new(u64::from(*validity_days))).ok_or_else(|| {
                        Rejection::validation("date_out_of_range", "the assessment would end beyond the calendar")
                    })?;
                let people = i128::from(self.composition.people().max(1));
                // Wide enough for any u64 amounts: the bound above is a rule, not what keeps
                // the sign right.
                let left = i128::from(*resources_cents) - i128::from(*charges_cents);
                // Per day over an average month (365.25 / 12 days).
                let per_day = (left * 12 * 100) / (people * 36525);
                let per_person_per_day_cents =
                    i64::try_from(per_day).unwrap_or(if per_day < 0 { i64::MIN } else { i64::MAX });
                Ok(vec![HouseholdEvent::EligibilityAssessed(Assessment {
                    assessed_on: *assessed_on,
                    resources_cents: *resources_cents,
                    charges_cents: *charges_cents,
                    per_person_per_day_cents,
                    threshold_cents: *threshold_cents,
                    eligible: per_person_per_day_cents <= *threshold_cents,
                    valid_until,
                })])
            }
            (HouseholdCommand::GiveConsent, Some(_)) if self.consent => Ok(vec![]),
            (HouseholdCommand::GiveConsent, Some(_)) => Ok(vec![HouseholdEvent::ConsentGiven {}]),
            (HouseholdCommand::WithdrawConsent, Some(_)) if !self.consent => Ok(vec![]),
            (HouseholdCommand::WithdrawConsent, Some(_)) => Ok(vec![HouseholdEvent::ConsentWithdrawn {}]),
            (HouseholdCommand::Erase, Some(_)) => Ok(vec![HouseholdEvent::HouseholdErased {}]),
        }
    }

    fn apply(&mut self, event: &HouseholdEvent) {
        match event {
            HouseholdEvent::HouseholdRegistered {
                association_id,
                relay_point_id,
                composition,
                diet,
                consent,
                personal,
            } => {
                self.association_id = Some(association_id.clone());
                self.relay_point_id = relay_point_id.clone();
                self.composition = *composition;
                self.diet = diet.clone();
                self.consent = *consent;
                self.personal = Some(personal.clone());
            }
            HouseholdEvent::HouseholdUpdated { relay_point_id, composition, diet, personal } => {
                self.relay_point_id = relay_point_id.clone();
                self.composition = *composition;
                self.diet = diet.clone();
                self.personal = Some(personal.clone());
            }
            HouseholdEvent::EligibilityAssessed(a) => self.assessment = Some(a.clone()),
            HouseholdEvent::ConsentGiven {} => self.consent = true,
            HouseholdEvent::ConsentWithdrawn {} => self.consent = false,
            HouseholdEvent::HouseholdErased {} => {
                self.erased = true;
                self.personal = None;
            }
        }
    }
}

impl Household {
    /// Whether a parcel may be composed for it on `day`: registered, consenting, assessed
    /// eligible and still valid.
    pub fn may_receive(&self, day: NaiveDate) -> bool {
        self.association_id.is_some()
            && !self.erased
            && self.consent
            && self.assessment.as_ref().is_some_and(|a| a.eligible && day <= a.valid_until)
    }
}

#[cfg(test)]
mod tests {
    use eventcore::testing::given;

    use super::*;

    fn sealed(text: &str) -> Sealed {
        Sealed { nonce: "bm9uY2U=".into(), ciphertext: text.into() }
    }

    fn family() -> Composition {
        Composition { adults: 1, teens: 0, children: 2, infants: 1 }
    }

    fn registered() -> HouseholdEvent {
        HouseholdEvent::HouseholdRegistered {
            association_id: "asso-restos".into(),
            relay_point_id: "rp-vaulx".into(),
            composition: family(),
            diet: Diet { no_pork: true, ..Default::default() },
            consent: true,
            personal: sealed("c1"),
        }
    }

    fn register(composition: Composition, diet: Diet) -> HouseholdCommand {
        HouseholdCommand::Register {
            association_id: "asso-restos".into(),
            relay_point_id: "rp-vaulx".into(),
            composition,
            diet,
            consent: true,
            personal: sealed("c1"),
        }
    }

    #[test]
    fn a_household_is_registered_with_a_sensible_composition() {
        given::<Household>([])
            .when(register(family(), Diet { no_pork: true, ..Default::default() }))
            .then([registered()]);
        given::<Household>([registered()])
            .when(register(family(), Diet::default()))
            .then_rejected("household_already_registered");
        given::<Household>([])
            .when(register(Composition::default(), Diet::default()))
            .then_rejected("invalid_composition");
        let children_alone = Composition { children: 2, ..Default::default() };
        given::<Household>([]).when(register(children_alone, Diet::default())).then_rejected("invalid_composition");
        let both = Diet { vegetarian: true, halal: true, ..Default::default() };
        given::<Household>([]).when(register(family(), both)).then_rejected("invalid_diet");
    }

    #[test]
    fn the_reste_a_vivre_decides_eligibility_until_it_expires() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        // 1,400 € in, 1,100 € of charges, 4 people: 300 € / 4 / 30.44 days = 2.46 € a day.
        let assess = HouseholdCommand::Assess {
            assessed_on: day,
            resources_cents: 140_000,
            charges_cents: 110_000,
            threshold_cents: 1_000,
            validity_days: 180,
        };
        let state =
            given::<Household>([registered()]).when(assess).then([HouseholdEvent::EligibilityAssessed(Assessment {
                assessed_on: day,
                resources_cents: 140_000,
                charges_cents: 110_000,
                per_person_per_day_cents: 246,
                threshold_cents: 1_000,
                eligible: true,
                valid_until: day + chrono::Duration::days(180),
            })]);
        assert!(state.may_receive(day));
        assert!(!state.may_receive(day + chrono::Duration::days(181)), "an old assessment no longer counts");
        let rich = HouseholdCommand::Assess {
            assessed_on: day,
            resources_cents: 600_000,
            charges_cents: 100_000,
            threshold_cents: 1_000,
            validity_days: 180,
        };
        let state = given::<Household>([registered()]).when(rich).outcome().unwrap();
        assert!(
            matches!(&state[0], HouseholdEvent::EligibilityAssessed(a) if !a.eligible && a.per_person_per_day_cents == 4106)
        );
    }

    #[test]
    fn absurd_amounts_and_dates_are_refused_and_never_wrap() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let assess = |resources_cents, charges_cents, assessed_on| HouseholdCommand::Assess {
            assessed_on,
            resources_cents,
            charges_cents,
            threshold_cents: 1_000,
            validity_days: 180,
        };
        // Given a registered household, when 10^17 cents of resources are entered (cast to i64
        // and multiplied, they once wrapped into a negative "reste à vivre", and eligible),
        // then the amount is refused, as is the largest amount a u64 holds.
        for (resources, charges) in [(10u64.pow(17), 0), (u64::MAX, 0), (0, u64::MAX), (MAX_MONTHLY_CENTS + 1, 0)] {
            given::<Household>([registered()]).when(assess(resources, charges, day)).then_rejected("invalid_amount");
        }
        // The largest amounts taken give a large positive (not eligible) or negative figure.
        let state = given::<Household>([registered()]).when(assess(MAX_MONTHLY_CENTS, 0, day)).outcome().unwrap();
        assert!(
            matches!(&state[0], HouseholdEvent::EligibilityAssessed(a) if !a.eligible && a.per_person_per_day_cents == 821_355)
        );
        let state = given::<Household>([registered()]).when(assess(0, MAX_MONTHLY_CENTS, day)).outcome().unwrap();
        assert!(
            matches!(&state[0], HouseholdEvent::EligibilityAssessed(a) if a.eligible && a.per_person_per_day_cents == -821_355)
        );
        // Given the last day chrono knows, when an assessment is dated there (it once panicked
        // computing its end, and the request hung until its time-out), then it is refused.
        given::<Household>([registered()])
            .when(assess(140_000, 110_000, NaiveDate::MAX))
            .then_rejected("date_out_of_range");
    }

    #[test]
    fn consent_and_erasure() {
        let state = given::<Household>([registered()])
            .when(HouseholdCommand::WithdrawConsent)
            .then([HouseholdEvent::ConsentWithdrawn {}]);
        assert!(!state.consent);
        given::<Household>([registered(), HouseholdEvent::ConsentWithdrawn {}])
            .when(HouseholdCommand::WithdrawConsent)
            .then([]);
        let state =
            given::<Household>([registered()]).when(HouseholdCommand::Erase).then([HouseholdEvent::HouseholdErased {}]);
        assert_eq!(state.personal, None);
        given::<Household>([registered(), HouseholdEvent::HouseholdErased {}])
            .when(HouseholdCommand::GiveConsent)
            .then_rejected("household_erased");
        given::<Household>([]).when(HouseholdCommand::Erase).then_rejected("household_not_found");
    }

    #[test]
    fn an_update_keeps_what_it_does_not_mention() {
        let update = HouseholdCommand::Update {
            relay_point_id: None,
            composition: Some(Composition { infants: 0, ..family() }),
            diet: None,
            personal: None,
        };
        given::<Household>([registered()]).when(update).then([HouseholdEvent::HouseholdUpdated {
            relay_point_id: "rp-vaulx".into(),
            composition: Composition { infants: 0, ..family() },
            diet: Diet { no_pork: true, ..Default::default() },
            personal: sealed("c1"),
        }]);
    }
}
