//! Money: [`Amount`] (integer minor units) and [`Currency`] (ISO 4217).
//!
//! No floating point anywhere: amounts arrive as JSON numbers, and a number
//! that is not an exact integer is refused before it becomes an `Amount`.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};
use service_core::{ApiError, ApiResult};

use crate::codes;

/// The largest amount a client may send: 2^53 − 1, the largest integer a
/// JSON number holds exactly in every client language.
pub const MAX_AMOUNT: i64 = (1 << 53) - 1;

/// A quantity of money in minor units (cents). Amounts that come from a
/// client are positive and at most [`MAX_AMOUNT`]; balances built from them
/// with checked arithmetic may be zero.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Amount(i64);

impl Amount {
    /// Zero.
    pub const ZERO: Self = Self(0);

    /// A positive amount within [`MAX_AMOUNT`], or `MSPaymentInvalidAmount`.
    pub fn positive(minor: i64) -> ApiResult<Self> {
        if minor > 0 && minor <= MAX_AMOUNT {
            Ok(Self(minor))
        } else {
            Err(invalid_amount(
                "must be a positive integer of at most 2^53-1 minor units",
            ))
        }
    }

    /// Reads a client's JSON value: only an integral number within
    /// `1..=2^53-1` is accepted; fractions, strings, negatives and zero are
    /// `MSPaymentInvalidAmount`.
    pub fn from_json(value: &Value) -> ApiResult<Self> {
        match value {
            Value::Number(n) => Self::from_number(n),
            _ => Err(invalid_amount("must be a number of minor units")),
        }
    }

    /// See [`Amount::from_json`].
    pub fn from_number(n: &Number) -> ApiResult<Self> {
        match n.as_i64() {
            Some(minor) => Self::positive(minor),
            // A u64 above i64::MAX, or anything with a fraction or exponent.
            None if n.is_u64() => Err(invalid_amount("is larger than 2^53-1")),
            None => Err(invalid_amount("must be an integer number of minor units")),
        }
    }

    /// A stored value (a balance, which may be zero); `None` if negative.
    pub fn stored(minor: i64) -> Option<Self> {
        (minor >= 0).then_some(Self(minor))
    }

    /// The value in minor units.
    pub fn minor(self) -> i64 {
        self.0
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }

    /// `self − other`, or `None` when it would go below zero.
    pub fn checked_sub(self, other: Self) -> Option<Self> {
        self.0.checked_sub(other.0).filter(|v| *v >= 0).map(Self)
    }

    /// The smaller of the two.
    pub fn min(self, other: Self) -> Self {
        if self <= other {
            self
        } else {
            other
        }
    }

    /// Whether it is zero.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn invalid_amount(message: &'static str) -> ApiError {
    ApiError::new(codes::INVALID_AMOUNT, format!("amount {message}"))
        .with_extension("field", "amount")
}

/// A currency: three upper-case letters that are an active ISO 4217 code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses a client's code; anything else is `MSPaymentInvalidCurrency`.
    pub fn parse(raw: &str) -> ApiResult<Self> {
        let bytes = raw.as_bytes();
        let shaped = bytes.len() == 3 && bytes.iter().all(u8::is_ascii_uppercase);
        if shaped && ISO_4217.binary_search(&raw).is_ok() {
            Ok(Self([bytes[0], bytes[1], bytes[2]]))
        } else {
            Err(
                ApiError::new(codes::INVALID_CURRENCY, "currency must be an ISO 4217 code")
                    .with_extension("field", "currency"),
            )
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        // Only built from ASCII upper-case letters in `parse`.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Active ISO 4217 alphabetic codes (sorted, for binary search), plus the
/// precious-metal, testing and no-currency codes are left out on purpose:
/// a wallet holds money.
pub const ISO_4217: &[&str] = &[
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
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWL",
];

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn the_code_list_is_sorted_and_unique() {
        assert!(ISO_4217.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn currencies_are_validated() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        for bad in ["eur", "EU", "EURO", "XYZ", "", "E1R", "ÉUR"] {
            let err = Currency::parse(bad).unwrap_err();
            assert_eq!(err.code(), codes::INVALID_CURRENCY, "{bad}");
        }
    }

    #[test]
    fn client_amounts_are_validated() {
        assert_eq!(Amount::from_json(&json!(1)).unwrap().minor(), 1);
        assert_eq!(
            Amount::from_json(&json!(MAX_AMOUNT)).unwrap().minor(),
            MAX_AMOUNT
        );
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!(1.0),
            json!(MAX_AMOUNT + 1),
            json!(u64::MAX),
            json!(1e300),
            json!("100"),
            json!(null),
        ] {
            let err = Amount::from_json(&bad).unwrap_err();
            assert_eq!(err.code(), codes::INVALID_AMOUNT, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn addition_never_overflows_silently(a in 0..i64::MAX, b in 0..i64::MAX) {
            let (x, y) = (Amount::stored(a).unwrap(), Amount::stored(b).unwrap());
            match x.checked_add(y) {
                Some(sum) => prop_assert_eq!(sum.minor() as i128, a as i128 + b as i128),
                None => prop_assert!(a as i128 + b as i128 > i64::MAX as i128),
            }
        }

        #[test]
        fn subtraction_never_goes_negative(a in 0..i64::MAX, b in 0..i64::MAX) {
            let (x, y) = (Amount::stored(a).unwrap(), Amount::stored(b).unwrap());
            match x.checked_sub(y) {
                Some(rest) => {
                    prop_assert!(rest.minor() >= 0);
                    prop_assert_eq!(rest.checked_add(y), Some(x));
                }
                None => prop_assert!(b > a),
            }
        }

        #[test]
        fn positive_accepts_exactly_the_valid_range(v in any::<i64>()) {
            prop_assert_eq!(Amount::positive(v).is_ok(), v > 0 && v <= MAX_AMOUNT);
        }

        #[test]
        fn integers_round_trip_through_json(v in 1..=MAX_AMOUNT) {
            prop_assert_eq!(Amount::from_json(&json!(v)).unwrap().minor(), v);
        }

        #[test]
        fn min_is_never_larger(a in 0..i64::MAX, b in 0..i64::MAX) {
            let m = Amount::stored(a).unwrap().min(Amount::stored(b).unwrap());
            prop_assert!(m.minor() <= a && m.minor() <= b);
        }
    }
}
