//! Event type names, group names and subscription patterns.
//!
//! Type names become Redis keys and log fields, so they are checked once,
//! here, to a small alphabet that cannot reach into another key space.

use super::EventError;

/// The longest accepted event type name or pattern.
const MAX_TYPE_LEN: usize = 128;
/// The longest accepted consumer group name.
const MAX_GROUP_LEN: usize = 64;

/// Checks an event type: `[a-z0-9_.]+`, at most 128 characters, with no
/// empty segment (`payment..x`, `.x`, `x.` are refused).
pub fn validate_event_type(event_type: &str) -> Result<(), EventError> {
    let ok = !event_type.is_empty()
        && event_type.len() <= MAX_TYPE_LEN
        && event_type.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(EventError::InvalidType(event_type.to_owned()))
    }
}

/// Checks a consumer group name: `[A-Za-z0-9_.-]+`, at most 64 characters
/// (it names a Redis consumer group and appears in keys).
pub fn validate_group(group: &str) -> Result<(), EventError> {
    let ok = !group.is_empty()
        && group.len() <= MAX_GROUP_LEN
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(EventError::InvalidGroup(group.to_owned()))
    }
}

/// What a subscription listens to: one type, or a pattern over types.
///
/// `*` matches exactly one segment; `#`, allowed only as the last segment,
/// matches zero or more segments (`payment.#` matches `payment`,
/// `payment.deposit` and `payment.transfer.completed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypePattern {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One,
    Rest,
}

impl TypePattern {
    /// Parses a pattern; a plain event type is a pattern matching only itself.
    pub fn parse(pattern: &str) -> Result<Self, EventError> {
        let invalid = || EventError::InvalidPattern(pattern.to_owned());
        if pattern.is_empty() || pattern.len() > MAX_TYPE_LEN {
            return Err(invalid());
        }
        let parts: Vec<&str> = pattern.split('.').collect();
        let last = parts.len() - 1;
        let mut segments = Vec::with_capacity(parts.len());
        for (at, part) in parts.iter().enumerate() {
            segments.push(match *part {
                "*" => Segment::One,
                "#" if at == last => Segment::Rest,
                literal => {
                    validate_event_type(literal).map_err(|_| invalid())?;
                    Segment::Literal(literal.to_owned())
                }
            });
        }
        Ok(Self {
            source: pattern.to_owned(),
            segments,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The single type this pattern matches, when it has no wildcard.
    pub fn exact(&self) -> Option<&str> {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
            .then_some(self.source.as_str())
    }

    /// Whether `event_type` matches.
    pub fn matches(&self, event_type: &str) -> bool {
        let mut parts = event_type.split('.');
        for segment in &self.segments {
            match segment {
                Segment::Rest => return true,
                Segment::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(literal) => {
                    if parts.next() != Some(literal.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_checked() {
        for good in ["user.registered", "payment.transfer.completed", "a_1.b2"] {
            assert!(validate_event_type(good).is_ok(), "{good}");
        }
        let long = "a".repeat(129);
        for bad in [
            "",
            "User.registered",
            "a..b",
            ".a",
            "a.",
            "a:b",
            "a b",
            "a*",
            long.as_str(),
        ] {
            assert!(validate_event_type(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn group_names_are_checked() {
        assert!(validate_group("notification-service.email_1").is_ok());
        assert!(validate_group("").is_err());
        assert!(validate_group("a:b").is_err());
        assert!(validate_group(&"g".repeat(65)).is_err());
    }

    #[test]
    fn star_matches_exactly_one_segment() {
        let p = TypePattern::parse("payment.*").unwrap();
        assert!(p.matches("payment.deposit"));
        assert!(!p.matches("payment"));
        assert!(!p.matches("payment.transfer.completed"));
        assert!(!p.matches("user.registered"));
        let p = TypePattern::parse("payment.*.completed").unwrap();
        assert!(p.matches("payment.transfer.completed"));
        assert!(!p.matches("payment.transfer.failed"));
    }

    #[test]
    fn hash_matches_the_rest() {
        let p = TypePattern::parse("payment.#").unwrap();
        assert!(p.matches("payment"));
        assert!(p.matches("payment.deposit"));
        assert!(p.matches("payment.transfer.completed"));
        assert!(!p.matches("payments.deposit"));
        assert!(TypePattern::parse("#").unwrap().matches("anything.at.all"));
    }

    #[test]
    fn bad_patterns_are_refused_and_exact_ones_recognised() {
        for bad in ["", "#.payment", "pay*", "a..b", "A.*"] {
            assert!(TypePattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            TypePattern::parse("user.registered").unwrap().exact(),
            Some("user.registered")
        );
        assert_eq!(TypePattern::parse("user.*").unwrap().exact(), None);
    }
}
