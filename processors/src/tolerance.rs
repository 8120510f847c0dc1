//! Tolerances: how far an actual value may stray from the expected one and still match.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// A symmetric percentage tolerance: |actual - expected| / expected <= percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tolerance {
    /// As a fraction: 0.02 is 2%.
    fraction: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a tolerance must be between 0% and 100%, got {0}")]
pub struct ToleranceError(pub Decimal);

impl Tolerance {
    /// The default of DOMAIN.md: 2%.
    pub const DEFAULT_PERCENT: Decimal = Decimal::from_parts(2, 0, 0, false, 0);

    pub fn percent(percent: Decimal) -> Result<Self, ToleranceError> {
        if percent.is_sign_negative() || percent > Decimal::ONE_HUNDRED {
            return Err(ToleranceError(percent));
        }
        Ok(Self {
            fraction: percent / Decimal::ONE_HUNDRED,
        })
    }

    pub fn as_percent(&self) -> Decimal {
        (self.fraction * Decimal::ONE_HUNDRED).normalize()
    }

    /// True when `actual` is within the tolerance of `expected`. An expected value of zero
    /// admits only zero: no percentage of nothing is something.
    pub fn admits(&self, expected: Decimal, actual: Decimal) -> bool {
        let deviation = (actual - expected).abs();
        if expected.is_zero() {
            return deviation.is_zero();
        }
        deviation <= (expected.abs() * self.fraction)
    }

    /// True when `actual` exceeds `expected` by more than the tolerance (shortfalls are fine).
    pub fn exceeded_by(&self, expected: Decimal, actual: Decimal) -> bool {
        actual > expected && !self.admits(expected, actual)
    }
}

impl Default for Tolerance {
    fn default() -> Self {
        Self::percent(Self::DEFAULT_PERCENT).expect("2% is a valid tolerance")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn the_default_tolerance_is_two_percent() {
        assert_eq!(Tolerance::default().as_percent(), dec!(2));
    }

    #[test]
    fn exactly_two_percent_off_is_still_within_the_default() {
        let t = Tolerance::default();
        assert!(t.admits(dec!(100), dec!(102)));
        assert!(t.admits(dec!(100), dec!(98)));
        assert!(!t.admits(dec!(100), dec!(102.01)));
        assert!(!t.admits(dec!(100), dec!(97.99)));
    }

    #[test]
    fn nothing_expected_admits_only_nothing() {
        assert!(Tolerance::default().admits(dec!(0), dec!(0)));
        assert!(!Tolerance::default().admits(dec!(0), dec!(0.0001)));
    }

    #[test]
    fn a_tolerance_over_a_hundred_percent_is_rejected() {
        assert!(Tolerance::percent(dec!(101)).is_err());
        assert!(Tolerance::percent(dec!(-1)).is_err());
    }
}
