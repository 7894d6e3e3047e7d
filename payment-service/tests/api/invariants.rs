//! The money rules, checked straight on the store after a test.

use std::collections::HashMap;

use serde_json::Value;
use service_core::db::{Filter, FindOptions};

use crate::helpers::TestApp;

/// What a run did, for the checks.
pub(crate) struct Expected {
    /// Money that entered from outside (deposits minus withdrawals).
    pub(crate) total: i64,
    /// Transfers that reported success.
    pub(crate) completed: usize,
    /// Ledger entries other than transfer ones (deposits...).
    pub(crate) other_entries: u64,
}

fn int(doc: &serde_json::Map<String, Value>, field: &str) -> i64 {
    doc.get(field).and_then(Value::as_i64).unwrap()
}

fn text<'a>(doc: &'a serde_json::Map<String, Value>, field: &str) -> &'a str {
    doc.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// No negative balance, balances sum to what came in, every wallet equals
/// its ledger, every completed transfer has one DEBIT and one CREDIT of its
/// amount, and nothing else was written.
pub(crate) async fn check(app: &TestApp, expected: &Expected) {
    let db = app.service.db();
    let wallets = db
        .find("wallets", &Filter::all(), &FindOptions::by_id())
        .await
        .unwrap();
    let mut sum = 0i64;
    for w in &wallets {
        assert!(int(w, "balance") >= 0, "negative balance: {w:?}");
        assert!(int(w, "bonusBalance") >= 0, "negative bonus: {w:?}");
        sum += int(w, "balance");
    }
    assert_eq!(sum, expected.total, "the sum of balances changed");

    let report = app.service.reconcile().await.unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    assert_eq!(report.wallets_checked, wallets.len() as u64);

    let transfers = db
        .find("transfers", &Filter::all(), &FindOptions::by_id())
        .await
        .unwrap();
    assert_eq!(transfers.len(), expected.completed, "transfer records");
    let entries = db
        .find("transactions", &Filter::all(), &FindOptions::by_id())
        .await
        .unwrap();
    let mut by_transfer: HashMap<&str, Vec<&serde_json::Map<String, Value>>> = HashMap::new();
    for e in &entries {
        if text(e, "objectModel") == "Transfer" {
            by_transfer.entry(text(e, "objectId")).or_default().push(e);
        }
    }
    for t in &transfers {
        assert_eq!(text(t, "status"), "COMPLETED");
        let legs = by_transfer
            .remove(text(t, "_id"))
            .unwrap_or_else(|| panic!("transfer without entries: {t:?}"));
        assert_eq!(legs.len(), 2, "{legs:?}");
        let debit = legs
            .iter()
            .filter(|e| text(e, "direction") == "DEBIT")
            .count();
        let credit = legs
            .iter()
            .filter(|e| text(e, "direction") == "CREDIT")
            .count();
        assert_eq!((debit, credit), (1, 1), "{legs:?}");
        for leg in legs {
            assert_eq!(int(leg, "amount"), int(t, "amount"));
        }
    }
    assert!(
        by_transfer.is_empty(),
        "entries of transfers that do not exist: {by_transfer:?}"
    );
    assert_eq!(
        entries.len() as u64,
        expected.other_entries + 2 * expected.completed as u64,
        "ledger entries"
    );
}
