//! The run's overall progress: how many (seed, learning rate) blocks of cleaning are done
//! and the estimated time left.

use std::fmt;
use std::time::{Duration, Instant};

/// Progress over the blocks of a run (one block: every method at one position of the
/// learning-rate grid for one seed). Shown as `k/N … ETA …`.
pub(super) struct Progress {
    total: usize,
    done: usize,
    /// Blocks cleaned in this process (not taken from the cache) and their time: the ETA is
    /// their mean time per block times the blocks left.
    cleaned: usize,
    cleaning: Duration,
    start: Instant,
}

impl Progress {
    /// Progress over `total` blocks, none done.
    pub fn new(total: usize) -> Self {
        Progress {
            total,
            done: 0,
            cleaned: 0,
            cleaning: Duration::ZERO,
            start: Instant::now(),
        }
    }

    /// A block cleaned in `took`.
    pub fn finished(&mut self, took: Duration) {
        self.done += 1;
        self.cleaned += 1;
        self.cleaning += took;
    }

    /// A block taken from the cache.
    pub fn skipped(&mut self) {
        self.done += 1;
    }

    /// Estimated time left: the mean time of the blocks cleaned so far times the blocks
    /// left (`None` before the first cleaned block).
    pub fn eta(&self) -> Option<Duration> {
        (self.cleaned > 0)
            .then(|| self.cleaning / self.cleaned as u32 * (self.total - self.done) as u32)
    }
}

/// `1h 02m`, `4m 10s`, `9s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s:02}s"),
        (h, m, _) => format!("{h}h {m:02}m"),
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} (seed, learning rate) blocks done, {} elapsed",
            self.done,
            self.total,
            human(self.start.elapsed())
        )?;
        match self.eta() {
            Some(eta) => write!(f, ", ETA {}", human(eta)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_is_the_mean_cleaned_block_time_times_the_blocks_left() {
        let mut p = Progress::new(5);
        assert_eq!(p.eta(), None);
        p.skipped();
        assert_eq!(p.eta(), None, "a cached block says nothing about time");
        p.finished(Duration::from_secs(10));
        p.finished(Duration::from_secs(30));
        // 2 cleaned, mean 20 s; 2 of 5 left.
        assert_eq!(p.eta(), Some(Duration::from_secs(40)));
        p.finished(Duration::from_secs(20));
        p.finished(Duration::from_secs(20));
        assert_eq!(p.eta(), Some(Duration::ZERO));
        assert!(
            p.to_string()
                .starts_with("5/5 (seed, learning rate) blocks done")
        );
    }

    #[test]
    fn durations_read_as_hours_minutes_seconds() {
        assert_eq!(human(Duration::from_secs(9)), "9s");
        assert_eq!(human(Duration::from_secs(250)), "4m 10s");
        assert_eq!(human(Duration::from_secs(3720)), "1h 02m");
    }
}
