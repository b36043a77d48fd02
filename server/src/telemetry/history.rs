//! The recent samples of one device: a ring buffer bounded by count and by age.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use gpulab_shared::TelemetrySample;

/// The samples of the last `window`, oldest first.
///
/// Two bounds keep it at the last `window`: at most `window / interval` samples, and none
/// taken more than `window` before the newest. Ages are measured on the monotonic clock, so
/// a wall clock that jumps (NTP, a changed time zone) neither empties nor overfills it.
#[derive(Debug)]
pub(super) struct History {
    capacity: usize,
    window: Duration,
    samples: VecDeque<(Instant, TelemetrySample)>,
}

impl History {
    pub(super) fn new(interval: Duration, window: Duration) -> Self {
        History {
            capacity: capacity(interval, window),
            window,
            samples: VecDeque::new(),
        }
    }

    /// Adds the sample taken at `taken` and drops what fell out of the window.
    pub(super) fn push(&mut self, taken: Instant, sample: TelemetrySample) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back((taken, sample));
        while let Some((oldest, _)) = self.samples.front() {
            if taken.saturating_duration_since(*oldest) <= self.window {
                break;
            }
            self.samples.pop_front();
        }
    }

    pub(super) fn latest(&self) -> Option<&TelemetrySample> {
        self.samples.back().map(|(_, sample)| sample)
    }

    /// Every sample, oldest first.
    pub(super) fn to_vec(&self) -> Vec<TelemetrySample> {
        self.samples
            .iter()
            .map(|(_, sample)| sample.clone())
            .collect()
    }
}

/// How many samples of `interval` fit in `window`: at least one.
fn capacity(interval: Duration, window: Duration) -> usize {
    if interval.is_zero() {
        return 1;
    }
    let count = window.as_nanos() / interval.as_nanos();
    usize::try_from(count).unwrap_or(usize::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn sample(second: i64) -> TelemetrySample {
        TelemetrySample {
            device: "cpu".to_owned(),
            at: Utc.timestamp_opt(1_700_000_000 + second, 0).unwrap(),
            cpu: None,
            gpu: None,
        }
    }

    fn seconds(history: &History) -> Vec<i64> {
        history
            .to_vec()
            .iter()
            .map(|s| s.at.timestamp() - 1_700_000_000)
            .collect()
    }

    #[test]
    fn keeps_at_most_window_over_interval_samples_oldest_first() {
        let mut history = History::new(Duration::from_secs(1), Duration::from_secs(5));
        let start = Instant::now();
        for second in 0..8 {
            history.push(start + Duration::from_secs(second as u64), sample(second));
        }
        assert_eq!(seconds(&history), [3, 4, 5, 6, 7]);
        assert_eq!(history.latest(), Some(&sample(7)));
    }

    #[test]
    fn ten_minutes_at_one_second_is_six_hundred_samples() {
        let mut history = History::new(Duration::from_secs(1), Duration::from_secs(600));
        let start = Instant::now();
        for second in 0..1000 {
            history.push(start + Duration::from_secs(second as u64), sample(second));
        }
        let kept = seconds(&history);
        assert_eq!(kept.len(), 600);
        assert_eq!((kept[0], kept[599]), (400, 999));
    }

    #[test]
    fn samples_older_than_the_window_are_dropped_after_a_gap() {
        // The sampler stalled for a minute (a suspended VM): the old samples are out of
        // the window although the count bound still has room for them.
        let mut history = History::new(Duration::from_secs(1), Duration::from_secs(10));
        let start = Instant::now();
        for second in 0..3 {
            history.push(start + Duration::from_secs(second as u64), sample(second));
        }
        history.push(start + Duration::from_secs(60), sample(60));
        assert_eq!(seconds(&history), [60]);
        history.push(start + Duration::from_secs(70), sample(70));
        assert_eq!(seconds(&history), [60, 70]);
    }

    #[test]
    fn an_empty_history_has_no_latest_sample() {
        let history = History::new(Duration::from_secs(1), Duration::from_secs(600));
        assert_eq!(history.latest(), None);
        assert!(history.to_vec().is_empty());
    }

    #[test]
    fn a_window_shorter_than_the_interval_keeps_the_latest_sample() {
        assert_eq!(capacity(Duration::from_secs(2), Duration::from_secs(1)), 1);
        assert_eq!(capacity(Duration::ZERO, Duration::from_secs(1)), 1);
        assert_eq!(
            capacity(Duration::from_millis(250), Duration::from_secs(600)),
            2400
        );
    }
}
