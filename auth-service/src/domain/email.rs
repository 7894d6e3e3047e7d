//! Email addresses: parsed at the edge into a normalised [`Email`], so the
//! store and its unique index only ever see one lower-case spelling.

use std::fmt;

/// Longest address accepted (RFC 5321's path limit).
pub const MAX_LEN: usize = 254;
const MAX_LOCAL: usize = 64;
const MAX_LABEL: usize = 63;

/// A syntactically sane, lower-cased email address.
///
/// Deliberately stricter than RFC 5322: a dot-atom local part of letters,
/// digits and `._%+-`, and a dotted domain of letters, digits and hyphens
/// with an alphabetic top-level label. Quoting, comments and IP literals are
/// refused; they are rare in real sign-ups and common in injection attempts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);

/// Why an address was refused (the message never echoes it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("must be a valid email address")]
pub struct InvalidEmail;

impl Email {
    /// Parses and normalises (trims, lower-cases) `raw`.
    pub fn parse(raw: &str) -> Result<Self, InvalidEmail> {
        let email = raw.trim();
        if email.is_empty() || email.len() > MAX_LEN {
            return Err(InvalidEmail);
        }
        let (local, domain) = email.split_once('@').ok_or(InvalidEmail)?;
        if !valid_local(local) || !valid_domain(domain) {
            return Err(InvalidEmail);
        }
        Ok(Self(email.to_ascii_lowercase()))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn valid_local(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= MAX_LOCAL
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-'))
}

fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_white_space() {
        assert_eq!(
            Email::parse("  Alice.Smith+pay@Example.COM ")
                .unwrap()
                .as_str(),
            "alice.smith+pay@example.com"
        );
    }

    #[test]
    fn refuses_malformed_and_injection_shaped_input() {
        let long = format!("{}@example.com", "a".repeat(250));
        for bad in [
            "",
            "plainaddress",
            "@example.com",
            "alice@",
            "alice@example",
            "alice@@example.com",
            "alice@example..com",
            ".alice@example.com",
            "al..ice@example.com",
            "alice@-example.com",
            "alice@example.c0m",
            r#"{"$gt": ""}"#,
            "' OR 1=1 --",
            "admin'--@example.com",
            "alice@example.com'; DROP TABLE users; --",
            "\"alice\"@example.com",
            "alice@[127.0.0.1]",
            long.as_str(),
        ] {
            assert_eq!(Email::parse(bad), Err(InvalidEmail), "{bad}");
        }
    }
}
