//! How a service's database is named.

use serde::Deserialize;

/// Which of brand, tenant and service decide the database name. A name is
/// always lower-case letters, digits and `_`, at most 63 characters (a
/// limit MongoDB and file systems both accept).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NamingStrategy {
    /// One database for everything: `core_service`.
    Shared,
    /// One per service: `payment_service` (the default).
    #[default]
    PerService,
    /// One per brand: `brand_acme`.
    PerBrand,
    /// One per brand and service: `acme_payment_service`.
    PerBrandService,
    /// One per tenant: `tenant_t1`.
    PerTenant,
    /// One per shard of a tenant's data: `shard_t1` (the tenant names the shard).
    PerShard,
}

impl NamingStrategy {
    /// Parses the configuration value (`per-service`, ...).
    pub fn parse(value: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(value.to_owned())).ok()
    }

    /// The database name for this brand, tenant and service.
    pub fn database_name(self, brand: &str, tenant: &str, service: &str) -> String {
        let name = match self {
            Self::Shared => "core_service".to_owned(),
            Self::PerService => format!("{service}_service"),
            Self::PerBrand => format!("brand_{brand}"),
            Self::PerBrandService => format!("{brand}_{service}_service"),
            Self::PerTenant => format!("tenant_{tenant}"),
            Self::PerShard => format!("shard_{tenant}"),
        };
        sanitize(&name)
    }
}

/// Database names come from configuration; anything outside a safe alphabet
/// becomes `_`, so a brand like `acme.eu` cannot escape a directory or
/// address another database.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .take(63)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_strategy_names_its_database() {
        let name = |s: NamingStrategy| s.database_name("acme", "t1", "payment");
        assert_eq!(name(NamingStrategy::Shared), "core_service");
        assert_eq!(name(NamingStrategy::PerService), "payment_service");
        assert_eq!(name(NamingStrategy::PerBrand), "brand_acme");
        assert_eq!(
            name(NamingStrategy::PerBrandService),
            "acme_payment_service"
        );
        assert_eq!(name(NamingStrategy::PerTenant), "tenant_t1");
        assert_eq!(name(NamingStrategy::PerShard), "shard_t1");
        assert_eq!(
            NamingStrategy::parse("per-brand-service"),
            Some(NamingStrategy::PerBrandService)
        );
        assert_eq!(NamingStrategy::parse("nope"), None);
    }

    #[test]
    fn names_cannot_escape_their_alphabet() {
        let name = NamingStrategy::PerBrand.database_name("../Acme.EU/$x", "t", "s");
        assert_eq!(name, "brand____acme_eu__x");
        assert!(
            NamingStrategy::PerBrand
                .database_name(&"a".repeat(100), "t", "s")
                .len()
                <= 63
        );
    }
}
