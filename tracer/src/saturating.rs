//! Totals over a trace saturate instead of overflowing.
//!
//! A trace file is untrusted input: a corrupt or hostile one can carry any
//! u64 as a byte count, a duration or a loss counter. Adding two of them
//! must neither panic (debug builds, the fuzzer) nor wrap into a
//! plausible-looking small number (release builds); a total pinned at
//! u64::MAX is visibly wrong instead.

/// `sum()` for u64 iterators, saturating at u64::MAX.
pub trait SaturatingSum: Iterator<Item = u64> + Sized {
    fn saturating_sum(self) -> u64 {
        self.fold(0, u64::saturating_add)
    }
}

impl<I: Iterator<Item = u64>> SaturatingSum for I {}

#[cfg(test)]
mod tests {
    use super::SaturatingSum as _;

    #[test]
    fn pins_at_the_maximum() {
        assert_eq!([u64::MAX, 1, 2].into_iter().saturating_sum(), u64::MAX);
        assert_eq!([1, 2, 3].into_iter().saturating_sum(), 6);
        assert_eq!(std::iter::empty().saturating_sum(), 0);
    }
}
