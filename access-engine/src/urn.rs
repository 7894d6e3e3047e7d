//! Permission URNs: parsing, canonical display and syntactic matching.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest segment accepted by [`Urn::parse`], in characters.
pub const MAX_SEGMENT_LEN: usize = 64;

/// The wildcard segment: matches every value in its position.
pub const WILDCARD: &str = "*";

/// One of the three positions of a URN, named in parse errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Segment {
    /// The first segment: what kind of thing is accessed (`wallet`).
    Resource,
    /// The second segment: what is done to it (`read`).
    Action,
    /// The third segment: which instances (`*`, `own`, `tenant` or an id).
    Target,
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Segment::Resource => "resource",
            Segment::Action => "action",
            Segment::Target => "target",
        })
    }
}

/// Why a string is not a valid URN.
///
/// Each malformation has its own variant so callers (and tests) can tell
/// them apart without matching on message text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrnError {
    /// The input does not have exactly three `:`-separated segments.
    #[error("expected 3 `:`-separated segments (resource:action:target), found {found}")]
    SegmentCount {
        /// How many segments the input had.
        found: usize,
    },
    /// A segment is the empty string.
    #[error("the {segment} segment is empty")]
    EmptySegment {
        /// Which segment is empty.
        segment: Segment,
    },
    /// A segment contains a character outside its alphabet.
    #[error("invalid character {ch:?} in the {segment} segment")]
    InvalidChar {
        /// Which segment holds the character.
        segment: Segment,
        /// The first offending character.
        ch: char,
    },
    /// A segment is longer than [`MAX_SEGMENT_LEN`] characters.
    #[error("the {segment} segment is {len} characters long, at most {max} are allowed", max = MAX_SEGMENT_LEN)]
    TooLong {
        /// Which segment is too long.
        segment: Segment,
        /// Its length in characters.
        len: usize,
    },
}

/// The target segment of a URN, interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target<'a> {
    /// `*`: every instance.
    Any,
    /// `own`: instances whose owner is the subject.
    Own,
    /// `tenant`: instances in the subject's tenant.
    Tenant,
    /// Any other value: the single instance with this id.
    Id(&'a str),
}

/// Target kind cached at parse time so matching never re-inspects the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetKind {
    Any,
    Own,
    Tenant,
    Id,
}

/// A validated permission URN `resource:action:target`.
///
/// Callers may rely on: every `Urn` passed validation, [`Display`](fmt::Display)
/// gives back the canonical string it was parsed from (and parsing that string
/// again gives an equal `Urn`), equality, hashing and ordering follow that
/// string, and cloning is cheap (the text is shared, not copied), so rules can
/// be reported in every decision without copying strings.
#[derive(Clone)]
pub struct Urn {
    text: Arc<str>,
    /// Byte offset of the action segment; the resource ends one byte earlier.
    action_start: usize,
    /// Byte offset of the target segment.
    target_start: usize,
    target: TargetKind,
}

impl Urn {
    /// Parses and validates `resource:action:target`.
    ///
    /// Input is taken as is: no trimming and no case folding, so what was
    /// written in a policy is exactly what is enforced.
    pub fn parse(input: &str) -> Result<Urn, UrnError> {
        let mut parts = input.split(':');
        let (Some(resource), Some(action), Some(target), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(UrnError::SegmentCount {
                found: input.split(':').count(),
            });
        };
        validate(Segment::Resource, resource)?;
        validate(Segment::Action, action)?;
        validate(Segment::Target, target)?;
        let kind = match target {
            WILDCARD => TargetKind::Any,
            "own" => TargetKind::Own,
            "tenant" => TargetKind::Tenant,
            _ => TargetKind::Id,
        };
        Ok(Urn {
            text: Arc::from(input),
            action_start: resource.len() + 1,
            target_start: resource.len() + action.len() + 2,
            target: kind,
        })
    }

    /// The resource segment (`*` or a name).
    pub fn resource(&self) -> &str {
        &self.text[..self.action_start - 1]
    }

    /// The action segment (`*` or a name).
    pub fn action(&self) -> &str {
        &self.text[self.action_start..self.target_start - 1]
    }

    /// The target segment, interpreted.
    pub fn target(&self) -> Target<'_> {
        match self.target {
            TargetKind::Any => Target::Any,
            TargetKind::Own => Target::Own,
            TargetKind::Tenant => Target::Tenant,
            TargetKind::Id => Target::Id(self.target_str()),
        }
    }

    /// The target segment as written.
    pub fn target_str(&self) -> &str {
        &self.text[self.target_start..]
    }

    /// The canonical string, as [`Display`](fmt::Display) writes it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this URN, read as a pattern, covers `other`: each segment of
    /// `self` is `*` or equal to the same segment of `other`.
    ///
    /// This is purely syntactic: `own` and `tenant` are compared as words, not
    /// resolved against a subject. Deciding access for a concrete subject and
    /// resource is [`AccessEngine::check`](crate::AccessEngine::check)'s job.
    pub fn covers(&self, other: &Urn) -> bool {
        fn segment(pattern: &str, value: &str) -> bool {
            pattern == WILDCARD || pattern == value
        }
        segment(self.resource(), other.resource())
            && segment(self.action(), other.action())
            && segment(self.target_str(), other.target_str())
    }
}

fn validate(segment: Segment, value: &str) -> Result<(), UrnError> {
    if value.is_empty() {
        return Err(UrnError::EmptySegment { segment });
    }
    if value == WILDCARD {
        return Ok(());
    }
    // Ids are chosen by other systems and may carry uppercase letters; names
    // of resources and actions are ours and kept lowercase so that a policy
    // cannot silently fail to match because of case.
    let allowed = |c: char| match segment {
        Segment::Target => c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'),
        Segment::Resource | Segment::Action => {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-')
        }
    };
    if let Some(ch) = value.chars().find(|&c| !allowed(c)) {
        return Err(UrnError::InvalidChar { segment, ch });
    }
    // Checked after the alphabet, so every character is ASCII and the byte
    // length is the character count.
    if value.len() > MAX_SEGMENT_LEN {
        return Err(UrnError::TooLong {
            segment,
            len: value.len(),
        });
    }
    Ok(())
}

impl FromStr for Urn {
    type Err = UrnError;

    fn from_str(s: &str) -> Result<Urn, UrnError> {
        Urn::parse(s)
    }
}

impl fmt::Display for Urn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Urn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Urn({:?})", &*self.text)
    }
}

// The canonical text determines every other field, so comparing it alone is
// both correct and the cheapest comparison.
impl PartialEq for Urn {
    fn eq(&self, other: &Urn) -> bool {
        self.text == other.text
    }
}

impl Eq for Urn {}

impl Hash for Urn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl PartialOrd for Urn {
    fn partial_cmp(&self, other: &Urn) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Urn {
    fn cmp(&self, other: &Urn) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

impl Serialize for Urn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Urn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Urn, D::Error> {
        let text = String::deserialize(deserializer)?;
        Urn::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urn(s: &str) -> Urn {
        Urn::parse(s).unwrap()
    }

    #[test]
    fn parses_segments_and_target_kinds() {
        let u = urn("wallet:read:own");
        assert_eq!(u.resource(), "wallet");
        assert_eq!(u.action(), "read");
        assert_eq!(u.target(), Target::Own);
        assert_eq!(urn("wallet:read:*").target(), Target::Any);
        assert_eq!(urn("wallet:read:tenant").target(), Target::Tenant);
        assert_eq!(urn("wallet:read:W-01.a_b").target(), Target::Id("W-01.a_b"));
        assert_eq!(urn("*:*:*").resource(), "*");
        assert_eq!(urn("*:*:*").action(), "*");
    }

    #[test]
    fn display_is_canonical_input() {
        for s in ["wallet:read:own", "*:*:*", "a.b-c_d:e:F9"] {
            assert_eq!(urn(s).to_string(), s);
            assert_eq!(s.parse::<Urn>().unwrap(), urn(s));
        }
    }

    #[test]
    fn segment_count_reports_what_was_found() {
        assert_eq!(Urn::parse(""), Err(UrnError::SegmentCount { found: 1 }));
        assert_eq!(
            Urn::parse("wallet:read"),
            Err(UrnError::SegmentCount { found: 2 })
        );
        assert_eq!(
            Urn::parse("wallet:read:own:x"),
            Err(UrnError::SegmentCount { found: 4 })
        );
    }

    #[test]
    fn empty_segments_are_named() {
        let empty = |segment| Err(UrnError::EmptySegment { segment });
        assert_eq!(Urn::parse(":read:own"), empty(Segment::Resource));
        assert_eq!(Urn::parse("wallet::own"), empty(Segment::Action));
        assert_eq!(Urn::parse("wallet:read:"), empty(Segment::Target));
    }

    #[test]
    fn invalid_characters_are_named() {
        let invalid = |segment, ch| Err(UrnError::InvalidChar { segment, ch });
        assert_eq!(
            Urn::parse("Wallet:read:own"),
            invalid(Segment::Resource, 'W')
        );
        assert_eq!(
            Urn::parse("wallet:re ad:own"),
            invalid(Segment::Action, ' ')
        );
        assert_eq!(Urn::parse("wallet:read:a/b"), invalid(Segment::Target, '/'));
        assert_eq!(Urn::parse("wal*:read:own"), invalid(Segment::Resource, '*'));
        assert_eq!(Urn::parse("wallet:read:**"), invalid(Segment::Target, '*'));
        assert_eq!(Urn::parse("wallet:read:é"), invalid(Segment::Target, 'é'));
    }

    #[test]
    fn segment_length_is_bounded() {
        let max = "a".repeat(MAX_SEGMENT_LEN);
        assert!(Urn::parse(&format!("{max}:{max}:{max}")).is_ok());
        let long = "a".repeat(MAX_SEGMENT_LEN + 1);
        assert_eq!(
            Urn::parse(&format!("wallet:{long}:own")),
            Err(UrnError::TooLong {
                segment: Segment::Action,
                len: MAX_SEGMENT_LEN + 1
            })
        );
    }

    #[test]
    fn covers_is_segmentwise() {
        assert!(urn("*:*:*").covers(&urn("wallet:read:own")));
        assert!(urn("wallet:*:own").covers(&urn("wallet:read:own")));
        assert!(!urn("wallet:*:own").covers(&urn("wallet:read:w1")));
        assert!(!urn("wallet:read:own").covers(&urn("wallet:read:*")));
    }

    #[test]
    fn serde_uses_the_string_form() {
        let u = urn("wallet:read:own");
        let json = serde_json::to_string(&u).unwrap();
        assert_eq!(json, "\"wallet:read:own\"");
        assert_eq!(serde_json::from_str::<Urn>(&json).unwrap(), u);
        assert!(serde_json::from_str::<Urn>("\"wallet:read\"").is_err());
    }
}
