//! A per-second allowance of log lines, with a count of what was left out,
//! so a flood of refusals cannot become a logging storm.
//!
//! Lock-free and const-constructible (budgets live in statics). At a second
//! boundary a few threads may race, which only moves the count by those
//! few. (governor's limiters are neither const nor resizable, and the
//! allowance here follows `log.denied_lines_per_second` across reloads.)

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// One budgeted kind of line.
#[derive(Debug, Default)]
pub struct Budget {
    second: AtomicU64,
    used: AtomicUsize,
    left_out: AtomicU64,
}

impl Budget {
    pub const fn new() -> Budget {
        Budget { second: AtomicU64::new(0), used: AtomicUsize::new(0), left_out: AtomicU64::new(0) }
    }

    /// Whether one more line fits in this second's `per_second`; counts it
    /// as left out when not.
    pub fn take(&self, per_second: usize) -> bool {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let second = self.second.load(Ordering::Relaxed);
        if now != second && self.second.compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.used.store(0, Ordering::Relaxed);
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < per_second {
            return true;
        }
        self.left_out.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Lines left out since the last call.
    pub fn take_left_out(&self) -> u64 {
        self.left_out.swap(0, Ordering::Relaxed)
    }

    /// One line a second: `Some(left out since the last line)` when this
    /// one may be written.
    pub fn once_a_second(&self) -> Option<u64> {
        self.take(1).then(|| self.take_left_out())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_second() {
        let t = Budget::new();
        assert_eq!(t.once_a_second(), Some(0));
        for _ in 0..100 {
            assert_eq!(t.once_a_second(), None);
        }
    }

    #[test]
    fn per_second_allowance_counts_what_it_leaves_out() {
        let b = Budget::new();
        let allowed = (0..50).filter(|_| b.take(10)).count();
        // A second boundary during the loop can allow up to 10 more.
        assert!((10..=20).contains(&allowed), "{allowed}");
        assert_eq!(b.take_left_out() as usize, 50 - allowed);
        assert_eq!(b.take_left_out(), 0);
    }
}
