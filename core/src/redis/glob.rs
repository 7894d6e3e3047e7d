//! Redis glob patterns (`*`, `?`, `[a-z]`, `[^x]`, `\` escapes), matched in
//! process so the L1 cache drops exactly the keys a Redis SCAN MATCH would.

/// Escapes every glob metacharacter so `literal` matches only itself.
pub(crate) fn escape(literal: &str) -> String {
    let mut escaped = String::with_capacity(literal.len() + 2);
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Whether `text` matches `pattern` with Redis `stringmatch` semantics.
pub(crate) fn matches(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    // Where to resume after a mismatch: just past the last `*`, one byte
    // further into the text each time. One backtrack point suffices because a
    // later `*` can absorb anything an earlier one could.
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                resume = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match_class(pattern, p + 1, text[t]),
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == text[t]).then_some(p + 2),
            Some(&c) => (c == text[t]).then_some(p + 1),
            None => None,
        };
        match (step, resume) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((star_p, star_t))) => {
                p = star_p;
                t = star_t + 1;
                resume = Some((star_p, star_t + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `start` (just past `[`); returns
/// the pattern index after the closing `]` on a match. An unterminated class
/// runs to the end of the pattern, as in Redis.
fn match_class(pattern: &[u8], start: usize, c: u8) -> Option<usize> {
    let mut p = start;
    let negate = pattern.get(p) == Some(&b'^');
    if negate {
        p += 1;
    }
    let mut found = false;
    while p < pattern.len() && pattern[p] != b']' {
        if pattern[p] == b'\\' && p + 1 < pattern.len() {
            found |= pattern[p + 1] == c;
            p += 2;
        } else if p + 2 < pattern.len() && pattern[p + 1] == b'-' && pattern[p + 2] != b']' {
            let (low, high) = (
                pattern[p].min(pattern[p + 2]),
                pattern[p].max(pattern[p + 2]),
            );
            found |= (low..=high).contains(&c);
            p += 3;
        } else {
            found |= pattern[p] == c;
            p += 1;
        }
    }
    let next = (p + 1).min(pattern.len());
    (found != negate).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_question_marks() {
        assert!(matches("user:*", "user:1"));
        assert!(matches("user:*", "user:"));
        assert!(!matches("user:*", "users:1"));
        assert!(matches("*", ""));
        assert!(matches("*:list:*", "order:list:abc"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "axxbyy"));
        assert!(matches("u?er", "user"));
        assert!(!matches("u?er", "uer"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
    }

    #[test]
    fn classes_and_escapes() {
        assert!(matches("h[ae]llo", "hallo"));
        assert!(!matches("h[ae]llo", "hillo"));
        assert!(matches("h[^e]llo", "hallo"));
        assert!(!matches("h[^e]llo", "hello"));
        assert!(matches("id:[0-9]", "id:7"));
        assert!(!matches("id:[0-9]", "id:x"));
        assert!(matches(r"a\*b", "a*b"));
        assert!(!matches(r"a\*b", "axb"));
    }

    #[test]
    fn escaped_literals_match_only_themselves() {
        let literal = r"we*ird[1]?\";
        assert!(matches(&escape(literal), literal));
        assert!(!matches(&escape(literal), "weXird[1]?\\"));
        assert!(matches(&format!("{}*", escape("a*b:")), "a*b:key"));
    }
}
