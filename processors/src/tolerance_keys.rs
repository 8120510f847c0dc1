//! Tolerance keys, as SAP invoice verification and Ariba keep them: for each of price,
//! quantity and amount, a lower limit past which the outcome carries a warning, and an upper
//! limit past which the invoice is blocked for payment. Each limit is an absolute deviation
//! and/or a percentage of the expected value, combined with AND (within both) or OR (within
//! either). Set per org; a supplier may narrow them, never widen them.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// How an absolute and a percentage limit combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Combine {
    /// Within only if within both (the stricter reading).
    And,
    /// Within if within either.
    Or,
}

/// One limit on the deviation |actual - expected|. No number at all admits no deviation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub absolute: Option<Decimal>,
    pub percent: Option<Decimal>,
    pub combine: Combine,
}

impl Limit {
    pub const EXACT: Limit = Limit {
        absolute: None,
        percent: None,
        combine: Combine::And,
    };

    pub fn percent(percent: Decimal) -> Limit {
        Limit {
            absolute: None,
            percent: Some(percent),
            combine: Combine::And,
        }
    }

    /// True when `actual` deviates from `expected` by no more than this limit allows.
    pub fn admits(&self, expected: Decimal, actual: Decimal) -> bool {
        let deviation = (actual - expected).abs();
        let within_absolute = self.absolute.map(|a| deviation <= a);
        let within_percent = self.percent.map(|p| {
            if expected.is_zero() {
                deviation.is_zero()
            } else {
                deviation * Decimal::ONE_HUNDRED <= expected.abs() * p
            }
        });
        match (within_absolute, within_percent) {
            (None, None) => deviation.is_zero(),
            (Some(a), None) => a,
            (None, Some(p)) => p,
            (Some(a), Some(p)) => match self.combine {
                Combine::And => a && p,
                Combine::Or => a || p,
            },
        }
    }
}

/// The verdict of one comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Verdict {
    Within,
    /// Past the lower limit: recorded on the outcome, nothing blocked.
    Warning,
    /// Past the upper limit: the invoice is blocked for payment.
    Blocked,
}

/// A lower (warning) and an upper (blocking) limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToleranceRule {
    pub warn: Limit,
    pub block: Limit,
}

impl ToleranceRule {
    pub fn verdict(&self, expected: Decimal, actual: Decimal) -> Verdict {
        if !self.block.admits(expected, actual) {
            Verdict::Blocked
        } else if !self.warn.admits(expected, actual) {
            Verdict::Warning
        } else {
            Verdict::Within
        }
    }
}

/// An org's (or a supplier's) tolerances for the three comparisons of the match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToleranceKeys {
    pub price: ToleranceRule,
    pub quantity: ToleranceRule,
    pub amount: ToleranceRule,
}

impl ToleranceKeys {
    /// DOMAIN.md's default: 2% blocks, any deviation below that is a warning.
    pub fn defaults() -> ToleranceKeys {
        ToleranceKeys::blocking_past(Decimal::TWO)
    }

    /// Any deviation warns; past `percent` of the expected value, price, quantity and amount
    /// alike block. What an org that published no keys of its own gets, with the pipeline's
    /// configured percent.
    pub fn blocking_past(percent: Decimal) -> ToleranceKeys {
        let rule = ToleranceRule {
            warn: Limit::EXACT,
            block: Limit::percent(percent),
        };
        ToleranceKeys {
            price: rule,
            quantity: rule,
            amount: rule,
        }
    }
}

/// Which comparison a verdict is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Measure {
    Price,
    Quantity,
    Amount,
}

/// The tolerances in force for one invoice: the org's, narrowed by its supplier's if any.
/// Narrowing keeps both and takes the stricter verdict, so a supplier's keys can only ever
/// make the match stricter, whatever numbers they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveTolerances {
    pub org: ToleranceKeys,
    pub supplier: Option<ToleranceKeys>,
}

impl Default for EffectiveTolerances {
    fn default() -> Self {
        EffectiveTolerances {
            org: ToleranceKeys::defaults(),
            supplier: None,
        }
    }
}

impl EffectiveTolerances {
    /// Over-billing judged against what was expected: billing less is never a deviation
    /// (the rest may come on a later invoice).
    pub fn excess_verdict(&self, measure: Measure, expected: Decimal, actual: Decimal) -> Verdict {
        if actual <= expected {
            Verdict::Within
        } else {
            self.verdict(measure, expected, actual)
        }
    }

    pub fn verdict(&self, measure: Measure, expected: Decimal, actual: Decimal) -> Verdict {
        let rule = |keys: &ToleranceKeys| match measure {
            Measure::Price => keys.price,
            Measure::Quantity => keys.quantity,
            Measure::Amount => keys.amount,
        };
        let org = rule(&self.org).verdict(expected, actual);
        match &self.supplier {
            Some(supplier) => org.max(rule(supplier).verdict(expected, actual)),
            None => org,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn limit(absolute: Option<Decimal>, percent: Option<Decimal>, combine: Combine) -> Limit {
        Limit {
            absolute,
            percent,
            combine,
        }
    }

    #[test]
    fn the_default_warns_on_any_deviation_and_blocks_past_two_percent() {
        let price = ToleranceKeys::defaults().price;
        assert_eq!(price.verdict(dec!(100), dec!(100)), Verdict::Within);
        assert_eq!(price.verdict(dec!(100), dec!(101)), Verdict::Warning);
        assert_eq!(price.verdict(dec!(100), dec!(102)), Verdict::Warning);
        assert_eq!(price.verdict(dec!(100), dec!(102.01)), Verdict::Blocked);
        assert_eq!(price.verdict(dec!(100), dec!(97.99)), Verdict::Blocked);
    }

    #[test]
    fn and_needs_both_limits_or_needs_either() {
        // 5 EUR or 1%: a 3 EUR deviation on 100 is within 5 EUR but not within 1%.
        let and = limit(Some(dec!(5)), Some(dec!(1)), Combine::And);
        let or = limit(Some(dec!(5)), Some(dec!(1)), Combine::Or);
        assert!(!and.admits(dec!(100), dec!(103)));
        assert!(or.admits(dec!(100), dec!(103)));
        // On 10,000 the same 3 EUR is within both.
        assert!(and.admits(dec!(10000), dec!(10003)));
    }

    #[test]
    fn an_absolute_limit_alone_ignores_the_size_of_the_order() {
        let abs = limit(Some(dec!(0.50)), None, Combine::And);
        assert!(abs.admits(dec!(1), dec!(1.50)));
        assert!(!abs.admits(dec!(1000000), dec!(1000000.51)));
    }

    #[test]
    fn a_supplier_can_narrow_but_never_widen_the_orgs_tolerances() {
        let mut loose = ToleranceKeys::defaults();
        loose.price.block = limit(Some(dec!(1000)), Some(dec!(50)), Combine::Or);
        let widened = EffectiveTolerances {
            org: ToleranceKeys::defaults(),
            supplier: Some(loose),
        };
        assert_eq!(
            widened.verdict(Measure::Price, dec!(100), dec!(110)),
            Verdict::Blocked
        );
        let mut tight = ToleranceKeys::defaults();
        tight.price.block = Limit::percent(dec!(0.5));
        let narrowed = EffectiveTolerances {
            org: ToleranceKeys::defaults(),
            supplier: Some(tight),
        };
        assert_eq!(
            narrowed.verdict(Measure::Price, dec!(100), dec!(101)),
            Verdict::Blocked
        );
        // The supplier's keys for price say nothing about quantity.
        assert_eq!(
            narrowed.verdict(Measure::Quantity, dec!(100), dec!(101)),
            Verdict::Warning
        );
    }

    proptest! {
        /// A limit with both numbers set never admits under AND what it refuses under OR.
        #[test]
        fn and_is_never_looser_than_or(
            abs in 0u32..50, pct in 0u32..10, expected in 1u32..1000, actual in 0u32..1100,
        ) {
            let (e, x) = (Decimal::from(expected), Decimal::from(actual));
            let and = limit(Some(Decimal::from(abs)), Some(Decimal::from(pct)), Combine::And);
            let or = limit(Some(Decimal::from(abs)), Some(Decimal::from(pct)), Combine::Or);
            prop_assert!(!and.admits(e, x) || or.admits(e, x));
        }
    }
}
