//! Quotas: a daily or weekly allowance of device time per user, and the decision whether
//! a job fits in what is left. The clock is a parameter, so that a period's end can be
//! tested without waiting for it.
//!
//! A job "would exceed" the quota when the time used in the period, plus the timeouts of
//! the user's jobs queued and running now, plus the new job's timeout, is over the quota:
//! each job counts at its worst case, the longest it may hold a device before it is
//! killed. An expected time would let a user queue more than the quota and overrun it;
//! with worst cases the quota is never overrun, and what a job does not use comes back
//! as soon as it ends.

use chrono::{DateTime, Datelike, Duration, NaiveTime, Utc};
use gpulab_shared::lab::{Quota, QuotaPeriod};

/// When the period that holds `now` began: 00:00 UTC today, or Monday 00:00 UTC this week.
pub fn period_start(period: QuotaPeriod, now: DateTime<Utc>) -> DateTime<Utc> {
    let today = now.date_naive();
    let day = match period {
        QuotaPeriod::Daily => today,
        QuotaPeriod::Weekly => {
            today - Duration::days(today.weekday().num_days_from_monday().into())
        }
    };
    day.and_time(NaiveTime::MIN).and_utc()
}

/// When the period that holds `now` ends and the quota renews.
pub fn renews_at(period: QuotaPeriod, now: DateTime<Utc>) -> DateTime<Utc> {
    let length = match period {
        QuotaPeriod::Daily => Duration::days(1),
        QuotaPeriod::Weekly => Duration::weeks(1),
    };
    period_start(period, now) + length
}

/// A job refused by its owner's quota.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "this job could take {asked_s:.3} device seconds (its timeout), and your {period} quota of \
     {quota_s} s has {remaining_s:.1} s left ({used_s:.1} s used, {held_s:.1} s held by your \
     queued and running jobs); it renews at {renews_at}. Lower `timeout_s`, or wait"
)]
pub struct QuotaExceeded {
    pub period: &'static str,
    pub quota_s: f64,
    pub used_s: f64,
    pub held_s: f64,
    pub asked_s: f64,
    /// What is left of the quota now, not counting the refused job (never below 0).
    pub remaining_s: f64,
    pub renews_at: DateTime<Utc>,
    /// Seconds from now to the renewal, rounded up (for `Retry-After`).
    pub retry_after_s: u64,
}

/// Whether a job that may take `asked_s` fits: `used_s` is what ended in the period,
/// `held_s` the timeouts of what is queued and running.
pub fn check(
    quota: &Quota,
    used_s: f64,
    held_s: f64,
    asked_s: f64,
    now: DateTime<Utc>,
) -> Result<(), QuotaExceeded> {
    let remaining_s = (quota.seconds - used_s - held_s).max(0.0);
    if asked_s <= remaining_s {
        return Ok(());
    }
    let renews_at = renews_at(quota.period, now);
    let retry_after_ms = (renews_at - now).num_milliseconds().max(0) as u64;
    Err(QuotaExceeded {
        period: match quota.period {
            QuotaPeriod::Daily => "daily",
            QuotaPeriod::Weekly => "weekly",
        },
        quota_s: quota.seconds,
        used_s,
        held_s,
        asked_s,
        remaining_s,
        renews_at,
        retry_after_s: retry_after_ms.div_ceil(1000),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, s).unwrap()
    }

    #[test]
    fn daily_periods_renew_at_midnight_and_weekly_ones_on_monday() {
        // Thursday 3 December 2026.
        let now = at(2026, 12, 3, 14, 30, 0);
        assert_eq!(
            period_start(QuotaPeriod::Daily, now),
            at(2026, 12, 3, 0, 0, 0)
        );
        assert_eq!(renews_at(QuotaPeriod::Daily, now), at(2026, 12, 4, 0, 0, 0));
        assert_eq!(
            period_start(QuotaPeriod::Weekly, now),
            at(2026, 11, 30, 0, 0, 0)
        );
        assert_eq!(
            renews_at(QuotaPeriod::Weekly, now),
            at(2026, 12, 7, 0, 0, 0)
        );
        // The first instant of a period belongs to it.
        let monday = at(2026, 12, 7, 0, 0, 0);
        assert_eq!(period_start(QuotaPeriod::Weekly, monday), monday);
        assert_eq!(
            renews_at(QuotaPeriod::Daily, monday),
            at(2026, 12, 8, 0, 0, 0)
        );
        // Across a year's end.
        let sunday = at(2027, 1, 3, 23, 59, 59);
        assert_eq!(
            period_start(QuotaPeriod::Weekly, sunday),
            at(2026, 12, 28, 0, 0, 0)
        );
    }

    #[test]
    fn a_job_is_refused_when_its_timeout_would_pass_the_quota() {
        let quota = Quota {
            period: QuotaPeriod::Daily,
            seconds: 100.0,
        };
        let now = at(2026, 12, 3, 23, 59, 0);
        assert!(
            check(&quota, 60.0, 20.0, 20.0, now).is_ok(),
            "exactly full fits"
        );
        let refused = check(&quota, 60.0, 20.0, 20.5, now).unwrap_err();
        assert_eq!(refused.remaining_s, 20.0);
        assert_eq!(refused.renews_at, at(2026, 12, 4, 0, 0, 0));
        assert_eq!(refused.retry_after_s, 60);
        assert!(refused.to_string().contains("20.0 s left"), "{refused}");
        // Over the quota already (a job ran past what was left): nothing is left.
        assert_eq!(
            check(&quota, 130.0, 0.0, 1.0, now).unwrap_err().remaining_s,
            0.0
        );
    }
}
