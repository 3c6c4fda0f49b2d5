//! CronJob schedules, pure: parsing a five-field cron expression (or `@hourly` and its
//! kin) in a time zone, and finding the run times between two instants. Parsing is the
//! `croner` crate's; time zones are the IANA database's, through `chrono-tz`.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    zone: Tz,
}

/// How many run times [`Schedule::latest_between`] walks before it jumps ahead.
const WALK: usize = 1000;

fn to_chrono(t: jiff::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.as_second(), u32::try_from(t.subsec_nanosecond()).ok()?)
}

fn to_jiff(t: DateTime<Utc>) -> Option<jiff::Timestamp> {
    jiff::Timestamp::new(
        t.timestamp(),
        i32::try_from(t.timestamp_subsec_nanos()).ok()?,
    )
    .ok()
}

impl Schedule {
    /// Parses `schedule` to run in `time_zone` (UTC when `None`).
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Schedule, String> {
        if schedule.trim_start().starts_with("TZ=") || schedule.trim_start().starts_with("CRON_TZ=")
        {
            return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
        }
        let zone = match time_zone {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name).map_err(|_| format!("unknown time zone {name:?}"))?,
        };
        let cron = croner::Cron::from_str(schedule)
            .map_err(|e| format!("unparseable schedule {schedule:?}: {e}"))?;
        Ok(Schedule { cron, zone })
    }

    /// The first run time strictly after `after`.
    pub fn next_after(&self, after: jiff::Timestamp) -> Option<jiff::Timestamp> {
        let local = self.zone.from_utc_datetime(&to_chrono(after)?.naive_utc());
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        to_jiff(next.with_timezone(&Utc))
    }

    /// The latest run time in `(earliest, now]`, and how many run times that span holds
    /// (counted up to a thousand; beyond, the count is only "more").
    pub fn latest_between(
        &self,
        earliest: jiff::Timestamp,
        now: jiff::Timestamp,
    ) -> (Option<jiff::Timestamp>, usize) {
        let mut latest = None;
        let mut count = 0;
        let mut cursor = earliest;
        while let Some(next) = self.next_after(cursor).filter(|n| *n <= now) {
            count += 1;
            if count > WALK {
                // Far behind: jump to just before now by the last gap, twice over.
                let gap = next.duration_since(cursor);
                let restart = now.checked_sub(gap * 2).unwrap_or(next).max(next);
                let (recent, _) = self.latest_between(restart, now);
                return (recent.or(Some(next)), count);
            }
            latest = Some(next);
            cursor = next;
        }
        (latest, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn next_and_latest_run_times() {
        let every_five = Schedule::parse("*/5 * * * *", None).unwrap();
        assert_eq!(
            every_five.next_after(at("2026-01-01T10:02:30Z")),
            Some(at("2026-01-01T10:05:00Z"))
        );
        assert_eq!(
            every_five.next_after(at("2026-01-01T10:05:00Z")),
            Some(at("2026-01-01T10:10:00Z")),
            "strictly after"
        );
        let (latest, count) =
            every_five.latest_between(at("2026-01-01T10:00:00Z"), at("2026-01-01T10:17:00Z"));
        assert_eq!((latest, count), (Some(at("2026-01-01T10:15:00Z")), 3));
        let (none, zero) =
            every_five.latest_between(at("2026-01-01T10:00:00Z"), at("2026-01-01T10:04:00Z"));
        assert_eq!((none, zero), (None, 0));
        let (far, many) =
            every_five.latest_between(at("2025-01-01T00:00:00Z"), at("2026-01-01T10:17:00Z"));
        assert_eq!(far, Some(at("2026-01-01T10:15:00Z")));
        assert!(many > 1000);
    }

    #[test]
    fn zones_and_descriptors() {
        let nine_in_berlin = Schedule::parse("0 9 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            nine_in_berlin.next_after(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-01T08:00:00Z"))
        );
        let hourly = Schedule::parse("@hourly", None).unwrap();
        assert_eq!(
            hourly.next_after(at("2026-01-01T00:30:00Z")),
            Some(at("2026-01-01T01:00:00Z"))
        );
        assert!(Schedule::parse("61 * * * *", None).is_err());
        assert!(Schedule::parse("* * * * *", Some("Mars/Olympus")).is_err());
        assert!(Schedule::parse("TZ=UTC * * * * *", None).is_err());
    }
}
