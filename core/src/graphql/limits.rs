//! Query limits: how much work one operation may ask for.

use serde::Deserialize;

/// Limits applied before an operation runs. The gateway enforces them for
/// clients; subgraphs apply the same numbers as a second line of defence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct QueryLimits {
    /// Highest allowed complexity score.
    pub max_complexity: usize,
    /// Deepest allowed selection nesting.
    pub max_depth: usize,
    /// Most aliases in one operation.
    pub max_aliases: usize,
    /// Most operations in one JSON array batch.
    pub max_batch: usize,
    /// What a list field multiplies its children by when it has no `first`/`last`.
    pub list_multiplier: usize,
}

impl QueryLimits {
    /// For public, anonymous traffic.
    pub const fn strict() -> Self {
        Self {
            max_complexity: 500,
            max_depth: 5,
            ..Self::standard()
        }
    }

    /// The default for signed-in clients.
    pub const fn standard() -> Self {
        Self {
            max_complexity: 1000,
            max_depth: 10,
            max_aliases: 30,
            max_batch: 10,
            list_multiplier: 10,
        }
    }

    /// For admin tools and internal callers.
    pub const fn relaxed() -> Self {
        Self {
            max_complexity: 5000,
            max_depth: 15,
            ..Self::standard()
        }
    }

    /// A preset by name (`strict`, `standard`, `relaxed`).
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "strict" => Some(Self::strict()),
            "standard" => Some(Self::standard()),
            "relaxed" => Some(Self::relaxed()),
            _ => None,
        }
    }
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self::standard()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_the_contract() {
        assert_eq!(
            QueryLimits::preset("strict").map(|l| (l.max_complexity, l.max_depth)),
            Some((500, 5))
        );
        assert_eq!(QueryLimits::default().max_complexity, 1000);
        assert_eq!(QueryLimits::relaxed().max_depth, 15);
        assert!(QueryLimits::preset("lax").is_none());
    }
}
