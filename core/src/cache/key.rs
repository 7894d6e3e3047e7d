//! Key factories, so every service spells entity keys the same way and one
//! pattern per entity reaches its single-item and list entries alike.

use std::fmt::Display;

use serde::Serialize;

use crate::redis::glob;

/// Builds cache keys: `{entity}:{id}`, `{entity}:list:{hash}`, `{entity}:*`.
#[derive(Debug, Clone, Copy)]
pub struct CacheKey;

impl CacheKey {
    /// The key of one entity: `user:42`.
    pub fn one(entity: &str, id: impl Display) -> String {
        format!("{entity}:{id}")
    }

    /// The key of a list query result: `user:list:{params_hash}`.
    pub fn list(entity: &str, params_hash: impl Display) -> String {
        format!("{entity}:list:{params_hash}")
    }

    /// The glob that matches every key of `entity` (for `delete_pattern`).
    /// The entity name is escaped, so only `*` after it is a wildcard.
    pub fn pattern(entity: &str) -> String {
        format!("{}:*", glob::escape(entity))
    }

    /// A short, stable hash of list parameters for [`CacheKey::list`]: FNV-1a
    /// over their JSON, identical on every instance and every build (unlike
    /// std's hasher). `None` if the parameters cannot be serialised.
    pub fn params_hash<T: Serialize + ?Sized>(params: &T) -> Option<String> {
        let json = serde_json::to_vec(params).ok()?;
        let hash = json.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        Some(format!("{hash:016x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factories_share_the_entity_namespace() {
        assert_eq!(CacheKey::one("user", 42), "user:42");
        assert_eq!(CacheKey::list("user", "ab12"), "user:list:ab12");
        assert_eq!(CacheKey::pattern("user"), "user:*");
        let pattern = CacheKey::pattern("user");
        assert!(glob::matches(&pattern, &CacheKey::one("user", 42)));
        assert!(glob::matches(&pattern, &CacheKey::list("user", "x")));
        assert!(!glob::matches(&pattern, &CacheKey::one("users", 42)));
    }

    #[test]
    fn pattern_escapes_glob_characters_in_the_entity() {
        assert_eq!(CacheKey::pattern("a*"), r"a\*:*");
        assert!(!glob::matches(&CacheKey::pattern("a*"), "abc:1"));
    }

    #[test]
    fn params_hash_is_stable_and_discriminating() {
        let a = CacheKey::params_hash(&("active", 10)).unwrap();
        assert_eq!(a, CacheKey::params_hash(&("active", 10)).unwrap());
        assert_ne!(a, CacheKey::params_hash(&("active", 11)).unwrap());
        assert_eq!(a.len(), 16);
    }
}
