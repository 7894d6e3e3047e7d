//! The storage conformance suite: every test runs against both embedded
//! engines (journal and SQLite) and against a MongoDB wire server (`TEST_MONGODB_URI`, started by
//! `scripts/test.sh`), so both engines are held to the same semantics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;
mod harness;

/// Declares each conformance test once per engine.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod journal {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = crate::harness::open(crate::harness::Engine::Journal).await;
                    crate::conformance::$name(&db).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = crate::harness::open(crate::harness::Engine::Sqlite).await;
                    crate::conformance::$name(&db).await;
                }
            )*
        }
        mod mongo {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = crate::harness::open(crate::harness::Engine::Mongo).await;
                    crate::conformance::$name(&db).await;
                }
            )*
        }
    };
}

conformance!(
    atomic_transfer_moves_money_and_writes_the_ledger,
    failing_transaction_rolls_back_every_write,
    unique_index_violation_is_typed_and_rolls_back,
    a_duplicate_is_reported_once_the_winner_is_readable,
    concurrent_conditional_debits_never_overdraw,
    write_conflicts_are_retried_transparently,
    pagination_has_no_gaps_or_duplicates_while_inserting,
    union_pagination_merges_its_filters_in_order,
    retired_indexes_are_dropped_and_missing_ones_skipped,
    insert_by_key_is_idempotent,
    updates_return_the_document_after_the_change,
    filters_mean_the_same_on_every_engine,
    uncommitted_writes_are_invisible_outside_the_transaction,
    documents_round_trip_exactly,
    config_store_sits_between_defaults_and_environment,
    repository_caches_reads_and_stays_coherent,
    concurrent_transactions_with_failures_keep_the_books,
);
