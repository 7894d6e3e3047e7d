//! Money as the contract defines it: integer minor units within ±(2^53−1)
//! and three-letter ISO 4217 currency codes. No floats anywhere.

use std::fmt;

/// The largest amount a JSON number carries exactly (2^53 − 1).
pub const MAX_AMOUNT: i64 = (1 << 53) - 1;

/// A positive amount of minor units, at most [`MAX_AMOUNT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(i64);

impl Amount {
    /// `value` if it is in `1..=MAX_AMOUNT`.
    pub fn new(value: i64) -> Option<Self> {
        (1..=MAX_AMOUNT).contains(&value).then_some(Self(value))
    }

    /// The number of minor units.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `percent` % of `base`, rounded down, capped by `cap` and by
/// [`MAX_AMOUNT`]; `None` when that is zero (nothing to award).
///
/// Computed in 128-bit integers, so no intermediate product overflows.
pub fn percent_of(base: i64, percent: i64, cap: Option<i64>) -> Option<Amount> {
    if base <= 0 || percent <= 0 {
        return None;
    }
    let raw = i128::from(base) * i128::from(percent) / 100;
    let mut capped = raw.min(i128::from(MAX_AMOUNT));
    if let Some(cap) = cap {
        capped = capped.min(i128::from(cap));
    }
    i64::try_from(capped).ok().and_then(Amount::new)
}

/// `amount × multiplier`, saturating at [`MAX_AMOUNT`] (a requirement that
/// large is unreachable either way).
pub fn wagering_required(amount: Amount, multiplier: i32) -> i64 {
    let product = i128::from(amount.get()) * i128::from(multiplier.max(0));
    i64::try_from(product.min(i128::from(MAX_AMOUNT))).unwrap_or(MAX_AMOUNT)
}

/// A three-letter upper-case ISO 4217 code that exists.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Currency(String);

impl Currency {
    /// `code` if it is a known ISO 4217 code written in upper case.
    pub fn parse(code: &str) -> Option<Self> {
        let shaped = code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase());
        (shaped && ISO_4217.binary_search(&code).is_ok()).then(|| Self(code.to_owned()))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The active ISO 4217 codes, sorted (binary-searched above).
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
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_code_list_is_sorted_and_unique() {
        assert!(ISO_4217.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn currencies_must_be_known_upper_case_codes() {
        assert!(Currency::parse("EUR").is_some());
        assert!(Currency::parse("eur").is_none());
        assert!(Currency::parse("EURO").is_none());
        assert!(Currency::parse("ABC").is_none());
        assert!(Currency::parse("").is_none());
    }

    #[test]
    fn amounts_are_positive_and_json_safe() {
        assert!(Amount::new(0).is_none());
        assert!(Amount::new(-5).is_none());
        assert!(Amount::new(MAX_AMOUNT).is_some());
        assert!(Amount::new(MAX_AMOUNT + 1).is_none());
    }

    #[test]
    fn percent_rounds_down_and_caps() {
        assert_eq!(percent_of(999, 50, None).map(Amount::get), Some(499));
        assert_eq!(
            percent_of(10_000, 100, Some(2_500)).map(Amount::get),
            Some(2_500)
        );
        assert_eq!(percent_of(1, 50, None), None);
        assert_eq!(
            percent_of(MAX_AMOUNT, 1000, None).map(Amount::get),
            Some(MAX_AMOUNT)
        );
    }

    proptest! {
        #[test]
        fn percent_never_exceeds_its_bounds(
            base in 1i64..=MAX_AMOUNT,
            percent in 1i64..=1000,
            cap in proptest::option::of(1i64..=MAX_AMOUNT),
        ) {
            if let Some(award) = percent_of(base, percent, cap) {
                let exact = i128::from(base) * i128::from(percent);
                prop_assert!(i128::from(award.get()) * 100 <= exact);
                prop_assert!(award.get() <= MAX_AMOUNT);
                if let Some(cap) = cap {
                    prop_assert!(award.get() <= cap);
                }
            }
        }

        #[test]
        fn wagering_requirement_is_the_product_or_saturates(
            amount in 1i64..=MAX_AMOUNT,
            multiplier in 0i32..=1000,
        ) {
            let Some(amount) = Amount::new(amount) else { return Ok(()); };
            let required = wagering_required(amount, multiplier);
            let exact = i128::from(amount.get()) * i128::from(multiplier);
            prop_assert_eq!(i128::from(required), exact.min(i128::from(MAX_AMOUNT)));
        }
    }
}
