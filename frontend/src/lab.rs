//! The arithmetic of the lab's pages, kept apart from the views so that it is tested on
//! the host: date ranges, totals per day, quotas and how device time reads.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Days, NaiveDate, TimeZone, Utc};
use gpulab_shared::lab::{Quota, QuotaPeriod, UsageRow};

/// The longest range the Usage page asks for at once.
pub const MAX_RANGE_DAYS: u64 = 366;

/// Today's date in UTC, the calendar the server's usage days use.
pub fn today_utc() -> NaiveDate {
    now().date_naive()
}

/// The browser's clock.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(js_sys::Date::now() as i64).unwrap_or_default()
}

/// The `days` days that end with `today`, both ends included: `(from, to)`.
pub fn last_days(today: NaiveDate, days: u64) -> (NaiveDate, NaiveDate) {
    let from = today
        .checked_sub_days(Days::new(days.saturating_sub(1)))
        .unwrap_or(today);
    (from, today)
}

/// The first day of `today`'s month to `today`.
pub fn this_month(today: NaiveDate) -> (NaiveDate, NaiveDate) {
    (today.with_day(1).unwrap_or(today), today)
}

/// The range the two date fields hold, or what is wrong with it, in words for the form.
pub fn parse_range(from: &str, to: &str) -> Result<(NaiveDate, NaiveDate), String> {
    let day = |text: &str, which: &str| {
        NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
            .map_err(|_| format!("Enter the {which} day as a date, such as 2026-12-01."))
    };
    let (from, to) = (day(from, "first")?, day(to, "last")?);
    if from > to {
        return Err("The first day must not be after the last.".to_owned());
    }
    let span = (to - from).num_days() as u64 + 1;
    if span > MAX_RANGE_DAYS {
        return Err(format!(
            "Choose at most {MAX_RANGE_DAYS} days at once (this range has {span})."
        ));
    }
    Ok((from, to))
}

/// One day of the usage report, summed over users, devices and kernels.
#[derive(Debug, Clone, PartialEq)]
pub struct DayTotal {
    pub day: String,
    pub jobs: u64,
    pub gpu_seconds: f64,
    pub cpu_seconds: f64,
}

impl DayTotal {
    /// GPU and CPU time together: what a quota counts.
    pub fn device_seconds(&self) -> f64 {
        self.gpu_seconds + self.cpu_seconds
    }
}

/// The rows summed per day, oldest first.
pub fn totals_per_day(rows: &[UsageRow]) -> Vec<DayTotal> {
    let mut days: BTreeMap<&str, DayTotal> = BTreeMap::new();
    for row in rows {
        let total = days.entry(&row.day).or_insert_with(|| DayTotal {
            day: row.day.clone(),
            jobs: 0,
            gpu_seconds: 0.0,
            cpu_seconds: 0.0,
        });
        total.jobs += row.jobs;
        total.gpu_seconds += row.gpu_seconds;
        total.cpu_seconds += row.cpu_seconds;
    }
    days.into_values().collect()
}

/// Every day from `from` to `to` (`YYYY-MM-DD`), with its total from `totals` or none, for
/// a chart whose bars stand at their dates; empty when the range cannot be read.
pub fn every_day(from: &str, to: &str, totals: &[DayTotal]) -> Vec<DayTotal> {
    let Ok((first, last)) = parse_range(from, to) else {
        return Vec::new();
    };
    first
        .iter_days()
        .take_while(|day| *day <= last)
        .map(|day| {
            let day = day.to_string();
            totals
                .iter()
                .find(|total| total.day == day)
                .cloned()
                .unwrap_or(DayTotal {
                    day,
                    jobs: 0,
                    gpu_seconds: 0.0,
                    cpu_seconds: 0.0,
                })
        })
        .collect()
}

/// When the quota period that holds `now` ends: the next 00:00 UTC for a daily quota, the
/// next Monday 00:00 UTC for a weekly one.
pub fn renews_at(period: QuotaPeriod, now: DateTime<Utc>) -> DateTime<Utc> {
    let today = now.date_naive();
    let days = match period {
        QuotaPeriod::Daily => 1,
        QuotaPeriod::Weekly => 7 - u64::from(today.weekday().num_days_from_monday()),
    };
    let next = today.checked_add_days(Days::new(days)).unwrap_or(today);
    Utc.from_utc_datetime(&next.and_hms_opt(0, 0, 0).unwrap_or_default())
}

/// Device seconds left of `quota` after `used`; never below zero.
pub fn remaining(quota: &Quota, used: f64) -> f64 {
    (quota.seconds - used).max(0.0)
}

/// A quota in words: `"1 h per day"`.
pub fn quota_words(quota: &Quota) -> String {
    let per = match quota.period {
        QuotaPeriod::Daily => "day",
        QuotaPeriod::Weekly => "week",
    };
    format!("{} per {per}", device_time(quota.seconds))
}

/// Device time as a person reads it: `"0.25 s"`, `"42.0 s"`, `"12 min 5 s"`, `"2 h"`.
pub fn device_time(seconds: f64) -> String {
    let seconds = if seconds.is_finite() {
        seconds.max(0.0)
    } else {
        0.0
    };
    if seconds < 60.0 {
        if seconds < 10.0 {
            format!("{seconds:.2} s")
        } else {
            format!("{seconds:.1} s")
        }
    } else if seconds < 3600.0 {
        let whole = seconds.round() as u64;
        match whole % 60 {
            0 => format!("{} min", whole / 60),
            s => format!("{} min {s} s", whole / 60),
        }
    } else {
        let minutes = (seconds / 60.0).round() as u64;
        match minutes % 60 {
            0 => format!("{} h", minutes / 60),
            m => format!("{} h {m} min", minutes / 60),
        }
    }
}

/// The seconds a quota form field holds: a positive number, with an optional unit `s`,
/// `min` or `h`, such as `"90"`, `"30 min"` or `"2 h"`.
pub fn parse_seconds(typed: &str) -> Result<f64, String> {
    let text = typed.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("min") {
        (n, 60.0)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3600.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        (text, 1.0)
    };
    match number.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n * scale),
        _ => Err("Enter the seconds as a number above 0, such as 3600, 30 min or 2 h.".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn ranges_end_today_and_include_both_ends() {
        let today = date("2026-03-02");
        assert_eq!(last_days(today, 7), (date("2026-02-24"), today));
        assert_eq!(last_days(today, 1), (today, today));
        assert_eq!(last_days(today, 0), (today, today));
        assert_eq!(this_month(today), (date("2026-03-01"), today));
    }

    #[test]
    fn a_typed_range_is_checked_before_it_is_asked_for() {
        assert_eq!(
            parse_range("2026-12-01", " 2026-12-03 "),
            Ok((date("2026-12-01"), date("2026-12-03")))
        );
        assert_eq!(
            parse_range("2026-12-03", "2026-12-03"),
            Ok((date("2026-12-03"), date("2026-12-03")))
        );
        assert_eq!(
            parse_range("2026-12-04", "2026-12-03"),
            Err("The first day must not be after the last.".to_owned())
        );
        assert!(parse_range("", "2026-12-03")
            .unwrap_err()
            .contains("first day"));
        assert!(parse_range("2026-12-01", "12/03/2026")
            .unwrap_err()
            .contains("last day"));
        assert!(parse_range("2026-02-30", "2026-03-01").is_err());
        assert!(parse_range("2025-01-01", "2026-01-02")
            .unwrap_err()
            .contains("this range has 367"));
        assert!(parse_range("2025-01-01", "2026-01-01").is_ok());
    }

    #[test]
    fn totals_per_day_sum_users_devices_and_kernels_oldest_first() {
        let row = |day: &str, user: &str, jobs, gpu, cpu| UsageRow {
            day: day.to_owned(),
            user: Some(user.to_owned()),
            device: "cpu".to_owned(),
            kernel: "saxpy".to_owned(),
            jobs,
            gpu_seconds: gpu,
            cpu_seconds: cpu,
        };
        let rows = [
            row("2026-12-02", "ada", 2, 1.5, 0.0),
            row("2026-12-01", "bob", 1, 0.0, 4.0),
            row("2026-12-02", "bob", 3, 0.5, 2.0),
        ];
        let totals = totals_per_day(&rows);
        assert_eq!(totals.len(), 2);
        assert_eq!(totals[0].day, "2026-12-01");
        assert_eq!((totals[0].jobs, totals[0].device_seconds()), (1, 4.0));
        assert_eq!(totals[1].day, "2026-12-02");
        assert_eq!(totals[1].jobs, 5);
        assert_eq!((totals[1].gpu_seconds, totals[1].cpu_seconds), (2.0, 2.0));
        assert!(totals_per_day(&[]).is_empty());
    }

    #[test]
    fn the_chart_has_a_place_for_every_day_of_the_range() {
        let busy = DayTotal {
            day: "2026-12-02".to_owned(),
            jobs: 3,
            gpu_seconds: 1.0,
            cpu_seconds: 2.0,
        };
        let days = every_day("2026-11-30", "2026-12-03", std::slice::from_ref(&busy));
        let names: Vec<&str> = days.iter().map(|d| d.day.as_str()).collect();
        assert_eq!(
            names,
            ["2026-11-30", "2026-12-01", "2026-12-02", "2026-12-03"]
        );
        assert_eq!(days[2], busy);
        assert_eq!((days[0].jobs, days[0].device_seconds()), (0, 0.0));
        assert!(every_day("2026-12-03", "2026-12-01", &[busy]).is_empty());
    }

    #[test]
    fn quotas_renew_at_midnight_utc_and_on_mondays() {
        // 2026-12-03 is a Thursday.
        let thursday = at("2026-12-03T14:05:00Z");
        assert_eq!(
            renews_at(QuotaPeriod::Daily, thursday),
            at("2026-12-04T00:00:00Z")
        );
        assert_eq!(
            renews_at(QuotaPeriod::Weekly, thursday),
            at("2026-12-07T00:00:00Z")
        );
        // A Monday's period runs a whole week; the last second of Sunday renews next.
        assert_eq!(
            renews_at(QuotaPeriod::Weekly, at("2026-12-07T00:00:00Z")),
            at("2026-12-14T00:00:00Z")
        );
        assert_eq!(
            renews_at(QuotaPeriod::Weekly, at("2026-12-06T23:59:59Z")),
            at("2026-12-07T00:00:00Z")
        );
    }

    #[test]
    fn what_is_left_of_a_quota_never_goes_below_zero() {
        let quota = Quota {
            period: QuotaPeriod::Daily,
            seconds: 3600.0,
        };
        assert_eq!(remaining(&quota, 600.0), 3000.0);
        assert_eq!(remaining(&quota, 4000.0), 0.0);
        assert_eq!(quota_words(&quota), "1 h per day");
    }

    #[test]
    fn device_time_reads_in_the_largest_sensible_unit() {
        assert_eq!(device_time(0.0), "0.00 s");
        assert_eq!(device_time(0.254), "0.25 s");
        assert_eq!(device_time(42.04), "42.0 s");
        assert_eq!(device_time(725.0), "12 min 5 s");
        assert_eq!(device_time(1800.0), "30 min");
        assert_eq!(device_time(12_000.0), "3 h 20 min");
        assert_eq!(device_time(7200.0), "2 h");
        assert_eq!(device_time(-3.0), "0.00 s");
        assert_eq!(device_time(f64::NAN), "0.00 s");
    }

    #[test]
    fn a_quota_field_takes_seconds_minutes_or_hours() {
        assert_eq!(parse_seconds("90"), Ok(90.0));
        assert_eq!(parse_seconds(" 30 min"), Ok(1800.0));
        assert_eq!(parse_seconds("2h"), Ok(7200.0));
        assert_eq!(parse_seconds("1.5 s"), Ok(1.5));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-5").is_err());
        assert!(parse_seconds("lots").is_err());
        assert!(parse_seconds("").is_err());
        assert!(parse_seconds("inf").is_err());
    }
}
