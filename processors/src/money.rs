//! Money and quantities. Amounts are `rust_decimal::Decimal`, never floats; every amount carries
//! its ISO 4217 currency, and arithmetic across currencies is an error, not a conversion.
//! Nothing here rounds: values stay exact until an edge (an output format) says how to round.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Active ISO 4217 alphabetic codes (2024 list, funds and precious-metal codes excluded).
const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VED", "VES", "VND", "VUV", "WST", "XAF", "XCD", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// An ISO 4217 currency code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

/// Why a value is not acceptable as money, a currency or a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("{0:?} is not an active ISO 4217 currency code")]
    UnknownCurrency(String),
    #[error("cannot combine {left} with {right}: different currencies")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("quantity must not be negative, got {0}")]
    NegativeQuantity(Decimal),
    #[error("unit price must not be negative, got {0}")]
    NegativePrice(Decimal),
    #[error("amount overflowed the decimal range")]
    Overflow,
}

impl Currency {
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        match ISO_4217.binary_search(&code) {
            Ok(_) => {
                let b = code.as_bytes();
                Ok(Self([b[0], b[1], b[2]]))
            }
            Err(_) => Err(MoneyError::UnknownCurrency(code.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from an entry of ISO_4217, which is ASCII.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Decimal places of the currency's minor unit (ISO 4217): 2 for most, 0 for JPY and a
    /// few others, 3 for the Gulf dinars and rials.
    pub fn minor_units(&self) -> u32 {
        const ZERO: &[&str] = &[
            "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND",
            "VUV", "XAF", "XOF", "XPF",
        ];
        const THREE: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
        let code = self.as_str();
        if ZERO.contains(&code) {
            0
        } else if THREE.contains(&code) {
            3
        } else {
            2
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(code: String) -> Result<Self, Self::Error> {
        Self::parse(&code)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An exact amount of one currency. May be negative (a credit or a delta).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    pub fn new(amount: Decimal, currency: Currency) -> Self {
        Self { amount, currency }
    }

    pub fn zero(currency: Currency) -> Self {
        Self::new(Decimal::ZERO, currency)
    }

    pub fn amount(&self) -> Decimal {
        self.amount
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Adds two amounts of the same currency; different currencies are an error.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let amount = self
            .amount
            .checked_add(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency))
    }

    /// Subtracts an amount of the same currency; different currencies are an error.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let amount = self
            .amount
            .checked_sub(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency))
    }

    /// `quantity x self`, exact (no rounding).
    pub fn times(self, quantity: Quantity) -> Result<Money, MoneyError> {
        let amount = self
            .amount
            .checked_mul(quantity.value())
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency))
    }

    /// Rounded to the currency's minor unit, half away from zero ("half-up"): the one
    /// rounding the pipeline does, where an amount becomes payable.
    pub fn round_half_up(self) -> Money {
        Money::new(
            self.amount.round_dp_with_strategy(
                self.currency.minor_units(),
                rust_decimal::RoundingStrategy::MidpointAwayFromZero,
            ),
            self.currency,
        )
    }

    fn same_currency(&self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// A non-negative quantity of goods or service units.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(try_from = "Decimal", into = "Decimal")]
pub struct Quantity(Decimal);

impl Quantity {
    pub const ZERO: Quantity = Quantity(Decimal::ZERO);

    pub fn new(value: Decimal) -> Result<Self, MoneyError> {
        if value.is_sign_negative() && !value.is_zero() {
            Err(MoneyError::NegativeQuantity(value))
        } else {
            Ok(Self(value.normalize()))
        }
    }

    pub fn value(self) -> Decimal {
        self.0
    }

    /// `self + other`.
    pub fn plus(self, other: Quantity) -> Quantity {
        Quantity(self.0 + other.0)
    }

    /// `self - other`, floored at zero (a return can never take stock below nothing).
    pub fn saturating_minus(self, other: Quantity) -> Quantity {
        Quantity((self.0 - other.0).max(Decimal::ZERO))
    }
}

impl TryFrom<Decimal> for Quantity {
    type Error = MoneyError;
    fn try_from(value: Decimal) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Quantity> for Decimal {
    fn from(q: Quantity) -> Decimal {
        q.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A non-negative price per unit, in one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Money", into = "Money")]
pub struct UnitPrice(Money);

impl UnitPrice {
    pub fn new(price: Money) -> Result<Self, MoneyError> {
        if price.amount().is_sign_negative() && !price.amount().is_zero() {
            Err(MoneyError::NegativePrice(price.amount()))
        } else {
            Ok(Self(price))
        }
    }

    pub fn money(self) -> Money {
        self.0
    }

    pub fn currency(self) -> Currency {
        self.0.currency()
    }
}

impl TryFrom<Money> for UnitPrice {
    type Error = MoneyError;
    fn try_from(m: Money) -> Result<Self, Self::Error> {
        Self::new(m)
    }
}

impl From<UnitPrice> for Money {
    fn from(p: UnitPrice) -> Money {
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    #[test]
    fn the_iso_list_is_sorted_so_lookup_finds_every_code() {
        assert!(ISO_4217.windows(2).all(|w| w[0] < w[1]));
        for code in ISO_4217 {
            assert_eq!(Currency::parse(code).unwrap().as_str(), *code);
        }
    }

    #[test]
    fn an_unknown_or_lowercase_currency_is_rejected() {
        assert!(Currency::parse("EUX").is_err());
        assert!(Currency::parse("eur").is_err());
    }

    #[test]
    fn adding_different_currencies_is_an_error() {
        let usd = Currency::parse("USD").unwrap();
        let err = Money::new(dec!(1), eur())
            .checked_add(Money::new(dec!(1), usd))
            .unwrap_err();
        assert_eq!(
            err,
            MoneyError::CurrencyMismatch {
                left: eur(),
                right: usd
            }
        );
    }

    #[test]
    fn price_times_quantity_is_exact_to_the_last_digit() {
        let price = Money::new(dec!(19.99), eur());
        let total = price.times(Quantity::new(dec!(3.333)).unwrap()).unwrap();
        assert_eq!(total.amount(), dec!(66.62667));
    }

    #[test]
    fn rounding_is_half_up_to_the_currencys_minor_unit() {
        let m = |a, c| {
            Money::new(a, Currency::parse(c).unwrap())
                .round_half_up()
                .amount()
        };
        assert_eq!(m(dec!(2.345), "EUR"), dec!(2.35));
        assert_eq!(m(dec!(-2.345), "EUR"), dec!(-2.35));
        assert_eq!(m(dec!(2.5), "JPY"), dec!(3));
        assert_eq!(m(dec!(1.2345), "KWD"), dec!(1.235));
    }

    #[test]
    fn a_negative_quantity_is_rejected() {
        assert_eq!(
            Quantity::new(dec!(-1)),
            Err(MoneyError::NegativeQuantity(dec!(-1)))
        );
    }

    proptest! {
        #[test]
        fn adding_then_subtracting_gives_back_the_same_amount_to_the_cent(
            a in -1_000_000_000i64..1_000_000_000, b in -1_000_000_000i64..1_000_000_000
        ) {
            let x = Money::new(Decimal::new(a, 2), eur());
            let y = Money::new(Decimal::new(b, 2), eur());
            prop_assert_eq!(x.checked_add(y).unwrap().checked_sub(y).unwrap(), x);
        }
    }
}
