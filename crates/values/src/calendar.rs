//! The collective's calendar: its time zone, for every rule that speaks of days, months, years
//! or times of day. Instants are kept in UTC; a "day" is always a day of this calendar.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A time zone of the IANA database (`Europe/Paris`), as the collective lives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calendar {
    tz: Tz,
}

impl Default for Calendar {
    fn default() -> Self {
        Calendar { tz: chrono_tz::Europe::Paris }
    }
}

impl Calendar {
    pub fn utc() -> Calendar {
        Calendar { tz: chrono_tz::UTC }
    }

    pub fn name(&self) -> &'static str {
        self.tz.name()
    }

    /// The day `at` falls on, here.
    pub fn day_of(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.tz).date_naive()
    }

    /// The time of day `at` reads on a clock here.
    pub fn time_of(&self, at: DateTime<Utc>) -> NaiveTime {
        at.with_timezone(&self.tz).time()
    }

    /// The instant the clock here reads `time` on `day`. A time the clock skips (spring forward)
    /// is the instant just after the gap; a time it reads twice (fall back), the first.
    pub fn at(&self, day: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
        let local = NaiveDateTime::new(day, time);
        match self.tz.from_local_datetime(&local) {
            LocalResult::Single(t) => t.with_timezone(&Utc),
            LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
            LocalResult::None => {
                // In a gap: the clock jumps forward by at most a few hours.
                (1..=240)
                    .find_map(|m| match self.tz.from_local_datetime(&(local + Duration::minutes(m))) {
                        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
                        LocalResult::None => None,
                    })
                    .unwrap_or_else(|| local.and_utc())
            }
        }
    }

    /// When `day` starts here (its local midnight).
    pub fn start_of(&self, day: NaiveDate) -> DateTime<Utc> {
        self.at(day, NaiveTime::MIN)
    }

    /// When `day` ends here: the next day's start (a use-by date runs to it).
    pub fn end_of(&self, day: NaiveDate) -> DateTime<Utc> {
        match day.succ_opt() {
            Some(next) => self.start_of(next),
            None => DateTime::<Utc>::MAX_UTC,
        }
    }

    /// The month (`YYYY-MM`) `at` falls in, here.
    pub fn month_of(&self, at: DateTime<Utc>) -> String {
        let day = self.day_of(at);
        format!("{:04}-{:02}", day.year(), day.month())
    }

    /// The year `at` falls in, here.
    pub fn year_of(&self, at: DateTime<Utc>) -> i32 {
        self.day_of(at).year()
    }

    /// A number that changes with the time zone, stable across builds (FNV-1a of its name, under
    /// a thousand): read models keyed by local days carry it in their version, so that a change of
    /// `time_zone` rebuilds them.
    pub fn digest(&self) -> u32 {
        let hash = self.name().bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
        hash % 1000
    }

    /// Hours in `day` here: 23 or 25 on the days the clocks change.
    pub fn hours_in(&self, day: NaiveDate) -> i64 {
        (self.end_of(day) - self.start_of(day)).num_hours()
    }
}

impl FromStr for Calendar {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        name.trim()
            .parse::<Tz>()
            .map(|tz| Calendar { tz })
            .map_err(|_| format!("unknown time zone {name:?} (an IANA name such as Europe/Paris)"))
    }
}

impl fmt::Display for Calendar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Calendar {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Calendar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn days_change_at_local_midnight_not_utc() {
        let paris = Calendar::default();
        // 23:30 UTC on 31 December is already New Year's Day in Paris.
        assert_eq!(paris.day_of(utc("2026-12-31T23:30:00Z")), day(2027, 1, 1));
        assert_eq!(paris.month_of(utc("2026-12-31T23:30:00Z")), "2027-01");
        assert_eq!(paris.year_of(utc("2026-12-31T23:30:00Z")), 2027);
        assert_eq!(paris.start_of(day(2027, 1, 1)), utc("2026-12-31T23:00:00Z"));
        // Summer time: two hours ahead.
        assert_eq!(paris.end_of(day(2026, 7, 14)), utc("2026-07-14T22:00:00Z"));
        assert_eq!(paris.time_of(utc("2026-07-14T08:00:00Z")), NaiveTime::from_hms_opt(10, 0, 0).unwrap());
        assert_eq!(Calendar::utc().day_of(utc("2026-12-31T23:30:00Z")), day(2026, 12, 31));
        assert_ne!(paris.digest(), Calendar::utc().digest());
        assert_eq!(paris.digest(), Calendar::default().digest());
    }

    #[test]
    fn the_days_the_clocks_change_have_23_and_25_hours() {
        let paris = Calendar::default();
        assert_eq!(paris.hours_in(day(2026, 3, 29)), 23);
        assert_eq!(paris.hours_in(day(2026, 10, 25)), 25);
        assert_eq!(paris.hours_in(day(2026, 10, 26)), 24);
        // 02:30 does not exist on 29 March: the instant after the gap.
        let skipped = paris.at(day(2026, 3, 29), NaiveTime::from_hms_opt(2, 30, 0).unwrap());
        assert_eq!(skipped, utc("2026-03-29T01:00:00Z"));
        // 02:30 happens twice on 25 October: the first.
        let twice = paris.at(day(2026, 10, 25), NaiveTime::from_hms_opt(2, 30, 0).unwrap());
        assert_eq!(twice, utc("2026-10-25T00:30:00Z"));
    }

    #[test]
    fn a_time_zone_is_named_as_the_iana_database_names_it() {
        assert_eq!("America/Cayenne".parse::<Calendar>().unwrap().name(), "America/Cayenne");
        assert!("Paris".parse::<Calendar>().is_err());
        let read: Calendar = serde_json::from_str("\"Indian/Reunion\"").unwrap();
        assert_eq!(serde_json::to_string(&read).unwrap(), "\"Indian/Reunion\"");
    }
}
