use chrono::NaiveDate;
use eventcore::{Aggregate, DomainEvent, Rejection};
use serde::{Deserialize, Serialize};
use values::limits::{too_long, MAX_REFERENCE};

/// Most lot numbers one recall names.
const MAX_LOT_NUMBERS: usize = 200;

/// Which lots a recall covers: one product, and its lot numbers or a range of dates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecallCriteria {
    pub product_id: String,
    /// Empty: every lot number.
    #[serde(default)]
    pub lot_numbers: Vec<String>,
    pub date_from: Option<NaiveDate>,
    pub date_to: Option<NaiveDate>,
}

impl RecallCriteria {
    /// Whether a lot of `product_id`, numbered `lot_number` and dated `date`, is covered.
    pub fn covers(&self, product_id: &str, lot_number: Option<&str>, date: Option<NaiveDate>) -> bool {
        let number = self.lot_numbers.is_empty()
            || lot_number.is_some_and(|n| self.lot_numbers.iter().any(|l| l.eq_ignore_ascii_case(n)));
        let from = self.date_from.is_none_or(|f| date.is_some_and(|d| d >= f));
        let to = self.date_to.is_none_or(|t| date.is_some_and(|d| d <= t));
        product_id == self.product_id && number && from && to
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RecallCommand {
    /// Records a recall (with the lots already held for it, if any).
    Issue { criteria: RecallCriteria, reason: String, lots: Vec<String> },
    /// Adds lots the recall holds: those found once it was recorded, and any lot received
    /// later that its criteria cover.
    Extend { lots: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum RecallEvent {
    RecallIssued { criteria: RecallCriteria, reason: String, lots: Vec<String> },
    RecallExtended { lots: Vec<String> },
}

impl DomainEvent for RecallEvent {}

/// A product recall (rappel conso): the lots it covers are blocked and traced, those that arrive
/// after it included.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recall {
    pub issued: Option<(RecallCriteria, String)>,
    /// Every lot it holds.
    pub lots: Vec<String>,
}

impl Aggregate for Recall {
    const KIND: &'static str = "recall";
    type Command = RecallCommand;
    type Event = RecallEvent;

    fn decide(&self, command: &RecallCommand) -> Result<Vec<RecallEvent>, Rejection> {
        let (criteria, reason, lots) = match command {
            RecallCommand::Issue { criteria, reason, lots } => (criteria, reason, lots),
            RecallCommand::Extend { lots } => {
                if self.issued.is_none() {
                    return Err(Rejection::not_found("recall_not_found", "no such recall"));
                }
                let mut seen = std::collections::BTreeSet::new();
                let new: Vec<String> =
                    lots.iter().filter(|l| !self.lots.contains(l) && seen.insert(l.as_str())).cloned().collect();
                return Ok(if new.is_empty() { vec![] } else { vec![RecallEvent::RecallExtended { lots: new }] });
            }
        };
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(Rejection::validation("invalid_reason", "say why, in 1 to 500 characters"));
        }
        if criteria.product_id.parse::<eventcore::AggregateId>().is_err() {
            return Err(Rejection::validation("invalid_product_id", "a product id is 1 to 64 of A-Z a-z 0-9 - _"));
        }
        if criteria.lot_numbers.len() > MAX_LOT_NUMBERS
            || criteria.lot_numbers.iter().any(|l| l.trim().is_empty() || too_long(l, MAX_REFERENCE))
        {
            return Err(Rejection::validation(
                "invalid_lot_numbers",
                format!("at most {MAX_LOT_NUMBERS} lot numbers, each 1 to {MAX_REFERENCE} characters"),
            ));
        }
        if criteria.lot_numbers.is_empty() && criteria.date_from.is_none() && criteria.date_to.is_none() {
            return Err(Rejection::validation(
                "recall_too_broad",
                "name the lot numbers or a range of dates (a whole product is recalled by its dates)",
            ));
        }
        if criteria.date_from.zip(criteria.date_to).is_some_and(|(f, t)| f > t) {
            return Err(Rejection::validation("invalid_dates", "date_from is after date_to"));
        }
        match &self.issued {
            Some((c, r)) if c == criteria && r == reason => Ok(vec![]),
            Some(_) => Err(Rejection::conflict("recall_exists", "this recall id is already used")),
            None => Ok(vec![RecallEvent::RecallIssued {
                criteria: criteria.clone(),
                reason: reason.to_owned(),
                lots: lots.clone(),
            }]),
        }
    }

    fn apply(&mut self, event: &RecallEvent) {
        match event {
            RecallEvent::RecallIssued { criteria, reason, lots } => {
                self.issued = Some((criteria.clone(), reason.clone()));
                self.lots = lots.clone();
            }
            RecallEvent::RecallExtended { lots } => self.lots.extend(lots.iter().cloned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use eventcore::testing::given;

    use super::*;

    fn criteria() -> RecallCriteria {
        RecallCriteria {
            product_id: "cheese".into(),
            lot_numbers: vec!["L2311".into()],
            date_from: None,
            date_to: None,
        }
    }

    #[test]
    fn a_recall_names_its_lots_or_dates() {
        let issue = RecallCommand::Issue { criteria: criteria(), reason: " Listeria ".into(), lots: vec!["a".into()] };
        let issued =
            RecallEvent::RecallIssued { criteria: criteria(), reason: "Listeria".into(), lots: vec!["a".into()] };
        given::<Recall>([]).when(issue.clone()).then([issued.clone()]);
        given::<Recall>([issued]).when(issue).then([]);
        let broad = RecallCriteria { lot_numbers: vec![], ..criteria() };
        given::<Recall>([])
            .when(RecallCommand::Issue { criteria: broad, reason: "x".into(), lots: vec![] })
            .then_rejected("recall_too_broad");
        given::<Recall>([])
            .when(RecallCommand::Issue { criteria: criteria(), reason: " ".into(), lots: vec![] })
            .then_rejected("invalid_reason");
        for (odd, code) in [
            (RecallCriteria { product_id: "a/b".into(), ..criteria() }, "invalid_product_id"),
            (RecallCriteria { product_id: ">".into(), ..criteria() }, "invalid_product_id"),
            (RecallCriteria { lot_numbers: vec!["L".repeat(10_000)], ..criteria() }, "invalid_lot_numbers"),
            (RecallCriteria { lot_numbers: vec!["L1".into(); 201], ..criteria() }, "invalid_lot_numbers"),
        ] {
            given::<Recall>([])
                .when(RecallCommand::Issue { criteria: odd, reason: "Listeria".into(), lots: vec![] })
                .then_rejected(code);
        }
    }

    #[test]
    fn a_recall_holds_lots_found_after_it() {
        let issued = RecallEvent::RecallIssued { criteria: criteria(), reason: "Listeria".into(), lots: vec![] };
        let extend = RecallCommand::Extend { lots: vec!["a".into(), "b".into()] };
        let extended = RecallEvent::RecallExtended { lots: vec!["a".into(), "b".into()] };
        given::<Recall>([issued.clone()]).when(extend.clone()).then([extended.clone()]);
        given::<Recall>([issued.clone(), extended.clone()])
            .when(RecallCommand::Extend { lots: vec!["b".into(), "c".into()] })
            .then([RecallEvent::RecallExtended { lots: vec!["c".into()] }]);
        given::<Recall>([issued.clone(), extended]).when(extend.clone()).then([]);
        given::<Recall>([]).when(extend).then_rejected("recall_not_found");
        // Retried once lots were added, the issue is still the same recall.
        let issue = RecallCommand::Issue { criteria: criteria(), reason: "Listeria".into(), lots: vec![] };
        given::<Recall>([issued, RecallEvent::RecallExtended { lots: vec!["a".into()] }]).when(issue).then([]);
    }

    #[test]
    fn criteria_cover_lot_numbers_and_dates() {
        let d = |day| NaiveDate::from_ymd_opt(2026, 12, day);
        assert!(criteria().covers("cheese", Some("l2311"), None));
        assert!(!criteria().covers("cheese", Some("L2312"), None));
        assert!(!criteria().covers("butter", Some("L2311"), None));
        let dated = RecallCriteria { lot_numbers: vec![], date_from: d(1), date_to: d(10), ..criteria() };
        assert!(dated.covers("cheese", None, d(5)));
        assert!(!dated.covers("cheese", None, d(11)));
        assert!(!dated.covers("cheese", None, None));
    }
}
