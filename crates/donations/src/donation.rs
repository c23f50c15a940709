use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use eventcore::{Aggregate, DomainEvent, Rejection};
use serde::{Deserialize, Serialize};
use values::limits::{MAX_CENTS, MAX_GRAMS, MAX_UNITS};
use values::{Calendar, DateKind, FoodGroup, PerGroup, ProductFacts, StorageClass};

/// The collective's reception rules (configured, then carried by each command so that the
/// decision stays pure and a replay decides nothing again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceptionRules {
    /// A use-by date closer than this is refused, unless the donor's agreement says otherwise.
    /// French décret 2016-1962 sets 48 h for retailers' donations.
    pub dlc_min_hours: u32,
    /// How many days past its best-before date a product is still accepted (then flagged).
    pub ddm_grace_days: PerGroup<u32>,
    /// Warmest accepted reception temperature of chilled products, °C.
    pub chilled_max_c: PerGroup<f64>,
    /// Warmest accepted reception temperature of frozen products, °C.
    pub frozen_max_c: PerGroup<f64>,
}

impl Default for ReceptionRules {
    fn default() -> Self {
        use FoodGroup::*;
        ReceptionRules {
            dlc_min_hours: 48,
            ddm_grace_days: PerGroup {
                default: 30,
                groups: [
                    (Starches, 90),
                    (FruitVegetables, 30),
                    (Dairy, 30),
                    (MeatFishEggs, 30),
                    (Fats, 60),
                    (SugarySalty, 60),
                    (Drinks, 90),
                    (BabyFood, 0),
                    (Hygiene, 365),
                ]
                .into(),
            },
            chilled_max_c: PerGroup { default: 4.0, groups: BTreeMap::new() },
            frozen_max_c: PerGroup { default: -18.0, groups: BTreeMap::new() },
        }
    }
}

/// One line of a donation as the volunteer entered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineInput {
    pub product: ProductFacts,
    pub quantity: u32,
    pub weight_g: u64,
    pub lot_number: Option<String>,
    /// The use-by or best-before date printed on the product.
    pub date: Option<NaiveDate>,
    /// Measured at reception; required for chilled and frozen products.
    pub temperature_c: Option<f64>,
    /// Value the donor declared (for its tax receipt), in euro cents.
    pub declared_value_cents: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DonationCommand {
    Record {
        donor_id: String,
        site_id: String,
        received_at: DateTime<Utc>,
        /// The donor's agreement's minimum remaining life for use-by products, if it has one.
        agreement_dlc_min_hours: Option<u32>,
        rules: ReceptionRules,
        /// The collective's days: a use-by date runs to its local midnight.
        calendar: Calendar,
        lines: Vec<LineInput>,
    },
    /// Goods a driver collected from the donor, on their way to the site: waiting there to be
    /// checked in (recorded line by line, as any donation).
    Expect(Incoming),
}

/// What a driver collected: weighed roughly on the road, checked in at the warehouse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incoming {
    pub donor_id: String,
    pub site_id: String,
    pub collected_at: DateTime<Utc>,
    pub grams: u64,
    pub chilled_grams: u64,
    /// The transport job that collected it.
    pub job_id: String,
    /// Why it must be inspected at check-in (chilled goods out of the cold too long).
    pub inspect: Option<String>,
}

/// Why a line was not taken into stock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Refusal {
    DlcPassed,
    DlcTooClose { hours_left: i64, min_hours: u32 },
    DdmBeyondGrace { days_past: i64, grace_days: u32 },
    ColdChainBreak { measured_c: f64, max_c: f64 },
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::DlcPassed => "dlc_passed",
            Refusal::DlcTooClose { .. } => "dlc_too_close",
            Refusal::DdmBeyondGrace { .. } => "ddm_beyond_grace",
            Refusal::ColdChainBreak { .. } => "cold_chain_break",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::DlcPassed => "use-by date passed".into(),
            Refusal::DlcTooClose { hours_left, min_hours } => {
                format!("use-by date {hours_left} h away, at least {min_hours} h required")
            }
            Refusal::DdmBeyondGrace { days_past, grace_days } => {
                format!("best-before date passed {days_past} days ago, grace is {grace_days} days")
            }
            Refusal::ColdChainBreak { measured_c, max_c } => {
                format!("received at {measured_c} °C, at most {max_c} °C allowed")
            }
        }
    }
}

/// A line as recorded: what came in, and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedLine {
    /// 1-based position in the donation.
    pub line: u32,
    /// As entered, the lot number trimmed.
    #[serde(flatten)]
    pub input: LineInput,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum DonationEvent {
    DonationExpected(Incoming),
    DonationRecorded {
        donor_id: String,
        site_id: String,
        received_at: DateTime<Utc>,
        lines: u32,
    },
    /// Taken into stock at the donation's site.
    LineAccepted {
        #[serde(flatten)]
        line: RecordedLine,
        /// A best-before product received past its date, within the grace period.
        past_best_before: bool,
    },
    LineRefused {
        #[serde(flatten)]
        line: RecordedLine,
        reason: Refusal,
    },
}

impl DomainEvent for DonationEvent {}

/// One reception of goods from one donor at one site. Recorded once; what follows happens to
/// the stock lots it created.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Donation {
    pub recorded: bool,
    /// Collected by a driver and waiting to be checked in.
    pub expected: Option<Incoming>,
}

/// Longest lot number accepted.
const MAX_LOT_NUMBER: usize = 64;
/// Most lines in one donation: a full truck of mixed goods stays well below.
const MAX_LINES: usize = 500;

impl Aggregate for Donation {
    const KIND: &'static str = "donation";
    type Command = DonationCommand;
    type Event = DonationEvent;

    fn decide(&self, command: &DonationCommand) -> Result<Vec<DonationEvent>, Rejection> {
        let (donor_id, site_id, received_at, agreement_dlc_min_hours, rules, calendar, lines) = match command {
            DonationCommand::Expect(_) if self.recorded || self.expected.is_some() => return Ok(vec![]),
            DonationCommand::Expect(incoming) => {
                if incoming.chilled_grams > incoming.grams || incoming.grams > MAX_GRAMS {
                    return Err(Rejection::validation("invalid_quantity", "chilled grams are part of the grams"));
                }
                return Ok(vec![DonationEvent::DonationExpected(incoming.clone())]);
            }
            DonationCommand::Record {
                donor_id,
                site_id,
                received_at,
                agreement_dlc_min_hours,
                rules,
                calendar,
                lines,
            } => (donor_id, site_id, received_at, agreement_dlc_min_hours, rules, calendar, lines),
        };
        if let Some(incoming) = self.expected.as_ref().filter(|i| i.donor_id != *donor_id) {
            return Err(Rejection::validation(
                "donor_mismatch",
                format!("this incoming donation is from donor {}", incoming.donor_id),
            ));
        }
        if self.recorded {
            return Err(Rejection::conflict("donation_already_recorded", "this donation is already recorded"));
        }
        if lines.is_empty() {
            return Err(Rejection::validation("no_lines", "a donation has at least one line"));
        }
        if lines.len() > MAX_LINES {
            return Err(Rejection::validation("too_many_lines", format!("a donation has at most {MAX_LINES} lines")));
        }
        for (i, line) in lines.iter().enumerate() {
            check_line(i + 1, line)?;
        }
        let dlc_min_hours = agreement_dlc_min_hours.unwrap_or(rules.dlc_min_hours);
        let mut events = vec![DonationEvent::DonationRecorded {
            donor_id: donor_id.clone(),
            site_id: site_id.clone(),
            received_at: *received_at,
            lines: lines.len() as u32,
        }];
        for (i, input) in lines.iter().enumerate() {
            let lot_number = input.lot_number.as_deref().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned);
            let line = RecordedLine { line: i as u32 + 1, input: LineInput { lot_number, ..input.clone() } };
            events.push(match judge(input, *received_at, dlc_min_hours, rules, calendar) {
                Ok(past_best_before) => DonationEvent::LineAccepted { line, past_best_before },
                Err(reason) => DonationEvent::LineRefused { line, reason },
            });
        }
        Ok(events)
    }

    fn apply(&mut self, event: &DonationEvent) {
        match event {
            DonationEvent::DonationExpected(incoming) => self.expected = Some(incoming.clone()),
            DonationEvent::DonationRecorded { .. } => self.recorded = true,
            DonationEvent::LineAccepted { .. } | DonationEvent::LineRefused { .. } => {}
        }
    }
}

/// Input errors: the whole command is refused and nothing is recorded.
fn check_line(n: usize, line: &LineInput) -> Result<(), Rejection> {
    let invalid = |code: &str, what: &str| Rejection::validation(code, format!("line {n}: {what}"));
    if line.quantity == 0 || line.quantity > MAX_UNITS {
        return Err(invalid("invalid_quantity", "quantity is 1 to 1,000,000 units"));
    }
    if line.weight_g == 0 || line.weight_g > MAX_GRAMS {
        return Err(invalid("invalid_weight", "weight is 1 g to 100 t"));
    }
    if line.declared_value_cents.is_some_and(|v| v > MAX_CENTS) {
        return Err(invalid("invalid_declared_value", "a declared value is at most 10,000,000 € (in cents)"));
    }
    if line.date.is_none() && line.product.date_kind != DateKind::None {
        return Err(invalid("date_required", "this product carries a use-by or best-before date: enter it"));
    }
    if line.temperature_c.is_none() && line.product.storage != StorageClass::Ambient {
        return Err(invalid("temperature_required", "measure and enter the temperature of chilled and frozen goods"));
    }
    if line.temperature_c.is_some_and(|t| !t.is_finite() || !(-60.0..=60.0).contains(&t)) {
        return Err(invalid("invalid_temperature", "temperature must be between -60 and 60 °C"));
    }
    if line.lot_number.as_ref().is_some_and(|l| l.trim().chars().count() > MAX_LOT_NUMBER) {
        return Err(invalid("invalid_lot_number", "lot number is at most 64 characters"));
    }
    Ok(())
}

/// Accepts a line (telling whether it is past its best-before date) or says why not.
fn judge(
    line: &LineInput,
    received_at: DateTime<Utc>,
    dlc_min_hours: u32,
    rules: &ReceptionRules,
    calendar: &Calendar,
) -> Result<bool, Refusal> {
    let group = line.product.food_group;
    if let Some(measured) = line.temperature_c {
        let max = match line.product.storage {
            StorageClass::Ambient => None,
            StorageClass::Chilled => Some(rules.chilled_max_c.get(group)),
            StorageClass::Frozen => Some(rules.frozen_max_c.get(group)),
        };
        if let Some(max) = max.filter(|max| measured > *max) {
            return Err(Refusal::ColdChainBreak { measured_c: measured, max_c: max });
        }
    }
    // The day it was received on, here: not the UTC day.
    let received_on = calendar.day_of(received_at);
    match (line.product.date_kind, line.date) {
        (DateKind::Dlc, Some(date)) => {
            if date < received_on {
                return Err(Refusal::DlcPassed);
            }
            // A use-by date runs to the end of its day, local midnight.
            let hours_left = (calendar.end_of(date) - received_at).num_hours();
            if hours_left < i64::from(dlc_min_hours) {
                return Err(Refusal::DlcTooClose { hours_left, min_hours: dlc_min_hours });
            }
            Ok(false)
        }
        (DateKind::Ddm, Some(date)) => {
            let days_past = (received_on - date).num_days();
            let grace_days = rules.ddm_grace_days.get(group);
            if days_past > i64::from(grace_days) {
                return Err(Refusal::DdmBeyondGrace { days_past, grace_days });
            }
            Ok(days_past > 0)
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use chrono::Utc;
    use eventcore::testing::given;

    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn product(group: FoodGroup, storage: StorageClass, date_kind: DateKind) -> ProductFacts {
        ProductFacts {
            product_id: format!("p-{group}"),
            name: format!("a {group} product"),
            gtin: None,
            food_group: group,
            storage,
            date_kind,
            allergens: Default::default(),
            traits: Default::default(),
        }
    }

    fn yoghurts(date: NaiveDate, temperature: f64) -> LineInput {
        LineInput {
            product: product(FoodGroup::Dairy, StorageClass::Chilled, DateKind::Dlc),
            quantity: 24,
            weight_g: 12_000,
            lot_number: Some(" L2311A ".into()),
            date: Some(date),
            temperature_c: Some(temperature),
            declared_value_cents: Some(3_600),
        }
    }

    fn pasta(date: NaiveDate) -> LineInput {
        LineInput {
            product: product(FoodGroup::Starches, StorageClass::Ambient, DateKind::Ddm),
            quantity: 40,
            weight_g: 20_000,
            lot_number: None,
            date: Some(date),
            temperature_c: None,
            declared_value_cents: None,
        }
    }

    fn record(lines: Vec<LineInput>, agreement: Option<u32>) -> DonationCommand {
        record_in(Calendar::utc(), at(2026, 11, 23, 10), lines, agreement)
    }

    fn record_in(
        calendar: Calendar,
        received_at: DateTime<Utc>,
        lines: Vec<LineInput>,
        agreement: Option<u32>,
    ) -> DonationCommand {
        DonationCommand::Record {
            donor_id: "carrefour-venissieux".into(),
            site_id: "gerland".into(),
            received_at,
            agreement_dlc_min_hours: agreement,
            rules: ReceptionRules::default(),
            calendar,
            lines,
        }
    }

    fn recorded(lines: u32) -> DonationEvent {
        DonationEvent::DonationRecorded {
            donor_id: "carrefour-venissieux".into(),
            site_id: "gerland".into(),
            received_at: at(2026, 11, 23, 10),
            lines,
        }
    }

    fn as_recorded(n: u32, input: &LineInput) -> RecordedLine {
        let lot_number = input.lot_number.as_ref().map(|l| l.trim().to_owned());
        RecordedLine { line: n, input: LineInput { lot_number, ..input.clone() } }
    }

    fn accepted(n: u32, input: &LineInput, past_best_before: bool) -> DonationEvent {
        DonationEvent::LineAccepted { line: as_recorded(n, input), past_best_before }
    }

    fn refused(n: u32, input: &LineInput, reason: Refusal) -> DonationEvent {
        DonationEvent::LineRefused { line: as_recorded(n, input), reason }
    }

    #[test]
    fn use_by_dates_need_48_hours_left_unless_the_agreement_says_less() {
        // Received on the 23rd at 10:00; a use-by date runs to the end of its day.
        let fine = yoghurts(day(2026, 11, 25), 3.0); // 62 h left
        let close = yoghurts(day(2026, 11, 24), 3.0); // 38 h left
        let today = yoghurts(day(2026, 11, 23), 3.0); // 14 h left
        let passed = yoghurts(day(2026, 11, 22), 3.0);
        given::<Donation>([])
            .when(record(vec![fine.clone(), close.clone(), today.clone(), passed.clone()], None))
            .then([
                recorded(4),
                accepted(1, &fine, false),
                refused(2, &close, Refusal::DlcTooClose { hours_left: 38, min_hours: 48 }),
                refused(3, &today, Refusal::DlcTooClose { hours_left: 14, min_hours: 48 }),
                refused(4, &passed, Refusal::DlcPassed),
            ]);
        // An agreement with a shorter delay lets the close line in; a passed date never is.
        given::<Donation>([]).when(record(vec![close.clone(), passed.clone()], Some(24))).then([
            recorded(2),
            accepted(1, &close, false),
            refused(2, &passed, Refusal::DlcPassed),
        ]);
    }

    #[test]
    fn a_use_by_date_ends_at_local_midnight() {
        let paris: Calendar = "Europe/Paris".parse().unwrap();
        let recorded_at = |at: DateTime<Utc>| DonationEvent::DonationRecorded {
            donor_id: "carrefour-venissieux".into(),
            site_id: "gerland".into(),
            received_at: at,
            lines: 1,
        };
        // 23:30 UTC on 31 December is 00:30 on New Year's Day in Paris: a use-by date of the
        // 31st has passed, though it is still the 31st in UTC.
        let new_year = Utc.with_ymd_and_hms(2026, 12, 31, 23, 30, 0).unwrap();
        let eve = yoghurts(day(2026, 12, 31), 3.0);
        given::<Donation>([])
            .when(record_in(paris, new_year, vec![eve.clone()], Some(0)))
            .then([recorded_at(new_year), refused(1, &eve, Refusal::DlcPassed)]);
        given::<Donation>([])
            .when(record_in(Calendar::utc(), new_year, vec![eve.clone()], Some(0)))
            .then([recorded_at(new_year), accepted(1, &eve, false)]);
        // The hours left run to Paris's midnight: at 09:00 UTC on 2 January (10:00 in Paris),
        // a use-by date of the 3rd leaves 38 hours (39 to UTC's midnight).
        let morning = Utc.with_ymd_and_hms(2027, 1, 2, 9, 0, 0).unwrap();
        let third = yoghurts(day(2027, 1, 3), 3.0);
        given::<Donation>([])
            .when(record_in(paris, morning, vec![third.clone()], None))
            .then([recorded_at(morning), refused(1, &third, Refusal::DlcTooClose { hours_left: 38, min_hours: 48 })]);
        // The night the clocks go back, a day lasts 25 hours: received at 08:00 UTC on
        // 24 October 2026 (10:00 in Paris), a use-by date of the 25th leaves 39 hours, not the
        // 38 that summer time's offset kept all along would give.
        let autumn = Utc.with_ymd_and_hms(2026, 10, 24, 8, 0, 0).unwrap();
        let sunday = yoghurts(day(2026, 10, 25), 3.0);
        given::<Donation>([])
            .when(record_in(paris, autumn, vec![sunday.clone()], None))
            .then([recorded_at(autumn), refused(1, &sunday, Refusal::DlcTooClose { hours_left: 39, min_hours: 48 })]);
    }

    #[test]
    fn best_before_dates_have_a_grace_per_food_group() {
        let fresh = pasta(day(2027, 3, 1));
        let a_month_past = pasta(day(2026, 10, 24)); // 30 days, starches allow 90
        let far_past = pasta(day(2026, 8, 1)); // 114 days
        let infant_milk = LineInput {
            product: product(FoodGroup::BabyFood, StorageClass::Ambient, DateKind::Ddm),
            ..pasta(day(2026, 11, 22))
        };
        given::<Donation>([])
            .when(record(vec![fresh.clone(), a_month_past.clone(), far_past.clone(), infant_milk.clone()], None))
            .then([
                recorded(4),
                accepted(1, &fresh, false),
                accepted(2, &a_month_past, true),
                refused(3, &far_past, Refusal::DdmBeyondGrace { days_past: 114, grace_days: 90 }),
                refused(4, &infant_milk, Refusal::DdmBeyondGrace { days_past: 1, grace_days: 0 }),
            ]);
    }

    #[test]
    fn the_cold_chain_is_checked_per_storage_class_and_food_group() {
        let warm = yoghurts(day(2026, 12, 1), 6.5);
        let cold_enough = yoghurts(day(2026, 12, 1), 4.0);
        let fish = |t: f64| LineInput {
            product: product(FoodGroup::MeatFishEggs, StorageClass::Frozen, DateKind::Dlc),
            temperature_c: Some(t),
            ..yoghurts(day(2027, 6, 1), 0.0)
        };
        given::<Donation>([])
            .when(record(vec![warm.clone(), cold_enough.clone(), fish(-15.0), fish(-20.0)], None))
            .then([
                recorded(4),
                refused(1, &warm, Refusal::ColdChainBreak { measured_c: 6.5, max_c: 4.0 }),
                accepted(2, &cold_enough, false),
                refused(3, &fish(-15.0), Refusal::ColdChainBreak { measured_c: -15.0, max_c: -18.0 }),
                accepted(4, &fish(-20.0), false),
            ]);
        // A stricter threshold for one group applies to it alone.
        let mut rules = ReceptionRules::default();
        rules.chilled_max_c.groups.insert(FoodGroup::Dairy, 3.0);
        let DonationCommand::Record { donor_id, site_id, received_at, .. } = record(vec![], None) else {
            unreachable!("record() records")
        };
        given::<Donation>([])
            .when(DonationCommand::Record {
                donor_id,
                site_id,
                received_at,
                agreement_dlc_min_hours: None,
                rules,
                calendar: Calendar::utc(),
                lines: vec![cold_enough.clone()],
            })
            .then([recorded(1), refused(1, &cold_enough, Refusal::ColdChainBreak { measured_c: 4.0, max_c: 3.0 })]);
    }

    #[test]
    fn a_collected_donation_waits_to_be_checked_in_by_its_donor() {
        let incoming = Incoming {
            donor_id: "carrefour-venissieux".into(),
            site_id: "gerland".into(),
            collected_at: at(2026, 11, 23, 9),
            grams: 80_000,
            chilled_grams: 20_000,
            job_id: "job-1".into(),
            inspect: None,
        };
        let expected = DonationEvent::DonationExpected(incoming.clone());
        given::<Donation>([]).when(DonationCommand::Expect(incoming.clone())).then([expected.clone()]);
        given::<Donation>([expected.clone()]).when(DonationCommand::Expect(incoming.clone())).then([]);
        let line = pasta(day(2027, 3, 1));
        let state = given::<Donation>([expected.clone()])
            .when(record(vec![line.clone()], None))
            .then([recorded(1), accepted(1, &line, false)]);
        assert!(state.recorded);
        let other = Incoming { donor_id: "lidl".into(), ..incoming.clone() };
        given::<Donation>([DonationEvent::DonationExpected(other)])
            .when(record(vec![line], None))
            .then_rejected("donor_mismatch");
        let odd = Incoming { chilled_grams: 90_000, ..incoming };
        given::<Donation>([]).when(DonationCommand::Expect(odd)).then_rejected("invalid_quantity");
    }

    #[test]
    fn bad_input_records_nothing() {
        let good = pasta(day(2027, 3, 1));
        let cases = [
            (LineInput { quantity: 0, ..good.clone() }, "invalid_quantity"),
            (LineInput { weight_g: 0, ..good.clone() }, "invalid_weight"),
            // Given/when/then at the arithmetic's edges: u32::MAX units, u64::MAX grams and
            // cents would overflow the statements' sums; they are typing errors, refused.
            (LineInput { quantity: u32::MAX, ..good.clone() }, "invalid_quantity"),
            (LineInput { quantity: MAX_UNITS + 1, ..good.clone() }, "invalid_quantity"),
            (LineInput { weight_g: u64::MAX, ..good.clone() }, "invalid_weight"),
            (LineInput { declared_value_cents: Some(u64::MAX), ..good.clone() }, "invalid_declared_value"),
            (LineInput { date: None, ..good.clone() }, "date_required"),
            (LineInput { temperature_c: None, ..yoghurts(day(2026, 12, 1), 2.0) }, "temperature_required"),
            (LineInput { temperature_c: Some(f64::NAN), ..yoghurts(day(2026, 12, 1), 2.0) }, "invalid_temperature"),
            (LineInput { lot_number: Some("L".repeat(65)), ..good.clone() }, "invalid_lot_number"),
        ];
        for (line, code) in cases {
            let rejection = given::<Donation>([]).when(record(vec![good.clone(), line], None)).then_rejected(code);
            assert!(rejection.message.starts_with("line 2:"), "{rejection}");
        }
        given::<Donation>([]).when(record(vec![], None)).then_rejected("no_lines");
        given::<Donation>([]).when(record(vec![good.clone(); 501], None)).then_rejected("too_many_lines");
        // Undated products need no date.
        let apples = LineInput {
            product: product(FoodGroup::FruitVegetables, StorageClass::Ambient, DateKind::None),
            date: None,
            ..good.clone()
        };
        given::<Donation>([]).when(record(vec![apples.clone()], None)).then([recorded(1), accepted(1, &apples, false)]);
    }

    #[test]
    fn a_donation_is_recorded_once() {
        let good = pasta(day(2027, 3, 1));
        given::<Donation>([recorded(1), accepted(1, &good, false)])
            .when(record(vec![good.clone()], None))
            .then_rejected("donation_already_recorded");
    }
}
