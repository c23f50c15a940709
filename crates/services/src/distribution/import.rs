//! Households imported from a spreadsheet (CSV, as exported by a spreadsheet program, `;` or
//! `,` separated, French or English column names). Every line is checked first, and every
//! error is reported with its line and column: one bad line and nothing is written.
//!
//! Each household's id derives from the association and a keyed hash of who it is (names and
//! birth date), and each command's id from the import's idempotency key: the same file sent
//! again, after a failure half-way or by mistake, registers nobody twice.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use distribution::{Composition, Diet};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use values::Allergen;

use super::households::PersonalData;

/// At most this many households per import.
pub const MAX_LINES: usize = 1000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportHouseholds {
    /// Whose households (an association's token implies its own).
    pub association_id: Option<String>,
    /// The spreadsheet as CSV text: a header line, then one household per line.
    pub csv: String,
}

/// One error of an import, where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LineError {
    /// 1 is the header line.
    pub line: usize,
    /// The column's name as the file has it; empty for the whole line.
    pub column: String,
    pub code: String,
    pub message: String,
}

/// A line read and checked, ready to register.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportLine {
    pub line: usize,
    pub personal: PersonalData,
    pub relay_point_id: String,
    pub composition: Composition,
    pub diet: Diet,
    /// Monthly resources and charges, euro cents, when the file gives them.
    pub assessment: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Column {
    FirstName,
    LastName,
    BirthDate,
    Phone,
    Address,
    RelayPoint,
    Adults,
    Teens,
    Children,
    Infants,
    NoPork,
    Halal,
    Vegetarian,
    NoKitchen,
    Allergies,
    Resources,
    Charges,
    Consent,
}

/// Column names accepted, after [`normalise`]: French first, then English.
const COLUMNS: [(Column, &[&str]); 18] = [
    (Column::FirstName, &["prenom", "first_name"]),
    (Column::LastName, &["nom", "nom_de_famille", "last_name"]),
    (Column::BirthDate, &["date_de_naissance", "date_naissance", "naissance", "birth_date"]),
    (Column::Phone, &["telephone", "tel", "phone"]),
    (Column::Address, &["adresse", "address"]),
    (Column::RelayPoint, &["point_relais", "relais", "relay_point", "relay_point_id"]),
    (Column::Adults, &["adultes", "adults"]),
    (Column::Teens, &["ados", "adolescents", "teens"]),
    (Column::Children, &["enfants", "children"]),
    (Column::Infants, &["bebes", "nourrissons", "infants"]),
    (Column::NoPork, &["sans_porc", "no_pork"]),
    (Column::Halal, &["halal"]),
    (Column::Vegetarian, &["vegetarien", "vegetarian"]),
    (Column::NoKitchen, &["sans_cuisine", "no_kitchen"]),
    (Column::Allergies, &["allergies"]),
    (Column::Resources, &["ressources", "resources"]),
    (Column::Charges, &["charges"]),
    (Column::Consent, &["consentement", "consent"]),
];

const REQUIRED: [Column; 5] = [Column::FirstName, Column::LastName, Column::BirthDate, Column::Adults, Column::Consent];

/// Allergens by their French names (the codes are accepted too).
const ALLERGENS_FR: [(&str, Allergen); 14] = [
    ("gluten", Allergen::Gluten),
    ("crustaces", Allergen::Crustaceans),
    ("oeufs", Allergen::Eggs),
    ("poisson", Allergen::Fish),
    ("arachides", Allergen::Peanuts),
    ("soja", Allergen::Soybeans),
    ("lait", Allergen::Milk),
    ("fruits_a_coque", Allergen::Nuts),
    ("celeri", Allergen::Celery),
    ("moutarde", Allergen::Mustard),
    ("sesame", Allergen::Sesame),
    ("sulfites", Allergen::Sulphites),
    ("lupin", Allergen::Lupin),
    ("mollusques", Allergen::Molluscs),
];

/// Lower case, French accents and œ taken off, spaces and dashes as `_`.
fn normalise(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.trim().chars().flat_map(char::to_lowercase) {
        match c {
            'à' | 'â' | 'ä' => out.push('a'),
            'é' | 'è' | 'ê' | 'ë' => out.push('e'),
            'î' | 'ï' => out.push('i'),
            'ô' | 'ö' => out.push('o'),
            'ù' | 'û' | 'ü' => out.push('u'),
            'ç' => out.push('c'),
            'œ' => out.push_str("oe"),
            ' ' | '-' | '\'' | '’' => out.push('_'),
            c => out.push(c),
        }
    }
    out
}

struct Problems(Vec<LineError>);

impl Problems {
    fn add(&mut self, line: usize, column: &str, code: &str, message: impl Into<String>) {
        self.0.push(LineError { line, column: column.to_owned(), code: code.to_owned(), message: message.into() });
    }
}

/// Reads and checks every line against the association's relay points (`(id, name)`); all the
/// lines, or every error found.
pub fn parse(csv_text: &str, relays: &[(String, String)]) -> Result<Vec<ImportLine>, Vec<LineError>> {
    let text = csv_text.strip_prefix('\u{feff}').unwrap_or(csv_text);
    let header = text.lines().next().unwrap_or_default();
    let delimiter = if header.matches(';').count() > header.matches(',').count() { b';' } else { b',' };
    let mut reader = csv::ReaderBuilder::new().delimiter(delimiter).flexible(true).from_reader(text.as_bytes());
    let mut problems = Problems(Vec::new());

    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            problems.add(1, "", "unreadable_file", format!("the file is not CSV: {e}"));
            return Err(problems.0);
        }
    };
    let mut columns: BTreeMap<Column, (usize, String)> = BTreeMap::new();
    for (i, name) in headers.iter().enumerate() {
        let key = normalise(name);
        if key.is_empty() {
            continue;
        }
        match COLUMNS.iter().find(|(_, names)| names.contains(&key.as_str())) {
            Some((column, _)) if columns.contains_key(column) => {
                problems.add(1, name, "duplicate_column", format!("column {name} appears twice"))
            }
            Some((column, _)) => {
                columns.insert(*column, (i, name.to_owned()));
            }
            None => {
                let known: Vec<&str> = COLUMNS.iter().map(|(_, names)| names[0]).collect();
                problems.add(
                    1,
                    name,
                    "unknown_column",
                    format!("unknown column {name}: remove or rename it (columns: {})", known.join(", ")),
                );
            }
        }
    }
    for column in REQUIRED {
        if !columns.contains_key(&column) {
            let name = COLUMNS.iter().find(|(c, _)| *c == column).map(|(_, n)| n[0]).unwrap_or_default();
            problems.add(1, name, "missing_column", format!("the column {name} is required"));
        }
    }
    if !problems.0.is_empty() {
        return Err(problems.0);
    }

    let mut lines = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (n, record) in reader.records().enumerate() {
        if n == MAX_LINES {
            problems.add(n + 2, "", "too_many_lines", format!("at most {MAX_LINES} households per import"));
            break;
        }
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(n + 2, |p| line_at(text, p.byte()));
                problems.add(line, "", "unreadable_line", e.to_string());
                continue;
            }
        };
        // The line in the file, blank lines and quoted line breaks counted.
        let line = record.position().map_or(n + 2, |p| line_at(text, p.byte()));
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let before = problems.0.len();
        let cell = |c: Column| columns.get(&c).map(|(i, name)| (record.get(*i).unwrap_or("").trim(), name.as_str()));
        let text = |c: Column| cell(c).map(|(v, _)| v.to_owned()).unwrap_or_default();
        let count = |c: Column, problems: &mut Problems| -> u8 {
            match cell(c) {
                None | Some(("", _)) => 0,
                Some((v, name)) => v.parse().unwrap_or_else(|_| {
                    problems.add(line, name, "invalid_number", format!("{v:?} is not a whole number"));
                    0
                }),
            }
        };
        let composition = Composition {
            adults: count(Column::Adults, &mut problems),
            teens: count(Column::Teens, &mut problems),
            children: count(Column::Children, &mut problems),
            infants: count(Column::Infants, &mut problems),
        };
        if problems.0.len() == before {
            if let Err(r) = composition.check() {
                problems.add(line, &columns[&Column::Adults].1, &r.code, r.message);
            }
        }
        let flag = |c: Column, problems: &mut Problems| -> bool {
            match cell(c) {
                None => false,
                Some((v, name)) => match normalise(v).as_str() {
                    "" | "non" | "n" | "no" | "0" | "faux" | "false" => false,
                    "oui" | "o" | "yes" | "y" | "x" | "1" | "vrai" | "true" => true,
                    _ => {
                        problems.add(line, name, "invalid_yes_no", format!("{v:?}: write oui or non"));
                        false
                    }
                },
            }
        };
        let consent = flag(Column::Consent, &mut problems);
        let mut diet = Diet {
            no_pork: flag(Column::NoPork, &mut problems),
            halal: flag(Column::Halal, &mut problems),
            vegetarian: flag(Column::Vegetarian, &mut problems),
            no_kitchen: flag(Column::NoKitchen, &mut problems),
            ..Diet::default()
        };
        if let Some((v, name)) = cell(Column::Allergies) {
            for word in v.split([',', '|', '/', '+']).map(normalise).filter(|w| !w.is_empty()) {
                let code = ALLERGENS_FR.iter().find(|(fr, _)| *fr == word).map(|(_, a)| *a);
                match code.or_else(|| serde_json::from_value(serde_json::Value::String(word.clone())).ok()) {
                    Some(a) => {
                        diet.allergies.insert(a);
                    }
                    None => problems.add(line, name, "invalid_allergen", format!("unknown allergen {word:?}")),
                }
            }
        }
        if !consent {
            let name = &columns[&Column::Consent].1;
            problems.add(line, name, "consent_required", "without the household's consent nothing is kept");
        }
        let birth_date = match cell(Column::BirthDate) {
            Some((v, name)) => date(v).unwrap_or_else(|| {
                problems.add(line, name, "invalid_date", format!("{v:?}: write 1985-03-14 or 14/03/1985"));
                NaiveDate::MIN
            }),
            None => NaiveDate::MIN,
        };
        let personal = PersonalData {
            first_name: text(Column::FirstName),
            last_name: text(Column::LastName),
            birth_date,
            phone: text(Column::Phone),
            address: text(Column::Address),
        };
        if let Err(e) = personal.check() {
            problems.add(line, "", &e.code, e.message);
        }
        let relay_point_id = match cell(Column::RelayPoint) {
            Some((v, name)) if !v.is_empty() => {
                let wanted = normalise(v);
                match relays.iter().find(|(id, label)| normalise(id) == wanted || normalise(label) == wanted) {
                    Some((id, _)) => id.clone(),
                    None => {
                        problems.add(line, name, "relay_point_not_found", format!("no relay point {v:?}"));
                        String::new()
                    }
                }
            }
            _ if relays.len() == 1 => relays[0].0.clone(),
            _ => {
                problems.add(line, "", "relay_point_required", "say which relay point (the association has several)");
                String::new()
            }
        };
        let euros = |c: Column, problems: &mut Problems| -> Option<u64> {
            let (v, name) = cell(c)?;
            if v.is_empty() {
                return None;
            }
            let cleaned: String = v.chars().filter(|c| !c.is_whitespace() && *c != '€').collect();
            match cleaned.replace(',', ".").parse::<f64>() {
                // The domain's bound, checked here with the rest of the file: an assessment
                // refused after its household was registered would leave the import half done.
                Ok(x) if (0.0..=distribution::MAX_MONTHLY_CENTS as f64 / 100.0).contains(&x) => {
                    Some((x * 100.0).round() as u64)
                }
                _ => {
                    problems.add(line, name, "invalid_amount", format!("{v:?} is not an amount in euros"));
                    None
                }
            }
        };
        let assessment = match (euros(Column::Resources, &mut problems), euros(Column::Charges, &mut problems)) {
            (Some(r), Some(c)) => Some((r, c)),
            (None, None) => None,
            _ => {
                problems.add(line, "", "incomplete_assessment", "give both resources and charges, or neither");
                None
            }
        };
        // The same person as the vault will see it, whose household id derives from it.
        if let Some(first) = seen.insert(vault::normalise_identity(&personal.identity()), line) {
            problems.add(line, "", "duplicate_in_file", format!("the same person as line {first}"));
        }
        if problems.0.len() == before {
            lines.push(ImportLine { line, personal, relay_point_id, composition, diet, assessment });
        }
    }
    if lines.is_empty() && problems.0.is_empty() {
        problems.add(2, "", "no_lines", "the file has no household");
    }
    if problems.0.is_empty() {
        Ok(lines)
    } else {
        Err(problems.0)
    }
}

/// The line (from 1) where a record starting at `byte` is: the reader reports the start of
/// the blank lines it skipped before it.
fn line_at(text: &str, byte: u64) -> usize {
    let bytes = text.as_bytes();
    let mut end = (byte as usize).min(bytes.len());
    while end < bytes.len() && (bytes[end] == b'\n' || bytes[end] == b'\r') {
        end += 1;
    }
    1 + bytes[..end].iter().filter(|b| **b == b'\n').count()
}

/// `1985-03-14` or `14/03/1985` (also with `-` or `.`).
fn date(v: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(v, "%d/%m/%Y"))
        .or_else(|_| NaiveDate::parse_from_str(v, "%d-%m-%Y"))
        .or_else(|_| NaiveDate::parse_from_str(v, "%d.%m.%Y"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relays() -> Vec<(String, String)> {
        vec![("rp-centre".into(), "Centre social Peyri".into()), ("rp-mas".into(), "Mas du Taureau".into())]
    }

    #[test]
    fn a_french_spreadsheet_export_is_read() {
        let csv = "\u{feff}Nom;Prénom;Date de naissance;Téléphone;Point relais;Adultes;Enfants;Bébés;Sans porc;Allergies;\
                   Ressources;Charges;Consentement\n\
                   Diallo;Awa;14/03/1985;06 00 00 00 01;Centre social Peyri;2;1;0;oui;arachides, lait;1 234,50;900;oui\n\
                   \n\
                   Martin;Luc;1970-01-02;;rp-mas;1;;;non;;;;x\n";
        let lines = parse(csv, &relays()).unwrap();
        assert_eq!(lines.len(), 2);
        let awa = &lines[0];
        assert_eq!((awa.line, awa.personal.first_name.as_str()), (2, "Awa"));
        assert_eq!(awa.personal.birth_date, NaiveDate::from_ymd_opt(1985, 3, 14).unwrap());
        assert_eq!(awa.relay_point_id, "rp-centre");
        assert_eq!((awa.composition.adults, awa.composition.children), (2, 1));
        assert!(awa.diet.no_pork && !awa.diet.halal);
        assert_eq!(awa.diet.allergies.iter().copied().collect::<Vec<_>>(), vec![Allergen::Peanuts, Allergen::Milk]);
        assert_eq!(awa.assessment, Some((123_450, 90_000)));
        assert_eq!((lines[1].line, lines[1].relay_point_id.as_str(), lines[1].assessment), (4, "rp-mas", None));
    }

    #[test]
    fn every_error_is_listed_with_its_line_and_column() {
        let csv = "first_name,last_name,birth_date,adults,relay_point,consent,resources\n\
                   Awa,Diallo,1985-03-14,2,rp-centre,yes,900\n\
                   ,Martin,31/02/1970,deux,nowhere,no,\n\
                   Awa,Diallo,1985-03-14,1,rp-centre,yes,\n";
        let errors = parse(csv, &relays()).unwrap_err();
        let found: Vec<(usize, &str, &str)> =
            errors.iter().map(|e| (e.line, e.column.as_str(), e.code.as_str())).collect();
        assert_eq!(
            found,
            vec![
                (2, "", "incomplete_assessment"),
                (3, "adults", "invalid_number"),
                (3, "consent", "consent_required"),
                (3, "birth_date", "invalid_date"),
                (3, "", "invalid_personal_data"),
                (3, "relay_point", "relay_point_not_found"),
                (4, "", "duplicate_in_file"),
            ],
            "{errors:#?}"
        );
    }

    #[test]
    fn the_columns_are_checked_before_any_line() {
        let errors = parse("nom;prenom;n° dossier\nDiallo;Awa;12\n", &relays()).unwrap_err();
        let codes: Vec<&str> = errors.iter().map(|e| e.code.as_str()).collect();
        assert_eq!(codes, ["unknown_column", "missing_column", "missing_column", "missing_column"], "{errors:#?}");
        assert!(errors.iter().all(|e| e.line == 1));
    }

    #[test]
    fn a_household_needs_consent_an_adult_and_a_relay_point_when_there_are_several() {
        let csv = "prenom;nom;date_naissance;adultes;enfants;consentement\nAwa;Diallo;1985-03-14;0;2;oui\n\
                   Luc;Martin;1970-01-02;1;0;non\n";
        let errors = parse(csv, &relays()).unwrap_err();
        let found: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.code.as_str())).collect();
        assert_eq!(
            found,
            [
                (2, "invalid_composition"),
                (2, "relay_point_required"),
                (3, "consent_required"),
                (3, "relay_point_required")
            ]
        );
        let one = [("rp-centre".to_owned(), "Centre".to_owned())];
        assert_eq!(
            parse("prenom;nom;date_naissance;adultes;consentement\nAwa;D;1985-03-14;1;oui", &one).unwrap().len(),
            1
        );
    }
}
