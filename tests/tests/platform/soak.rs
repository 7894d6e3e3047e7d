//! The soak in its short CI form: 25 s of mixed traffic on the embedded
//! store with one subgraph stopped and restarted, held to the same checks
//! as the documented `soak` command (books, error budget, fault codes,
//! feeds delivering after the fault, memory growth). Never timings.

use e2e::soak::{self, SoakConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_soak_with_a_subgraph_fault_keeps_the_books_and_the_error_budget(
) -> anyhow::Result<()> {
    let summary = soak::run(SoakConfig::short()).await?;
    println!("{summary}");
    assert!(summary.passed(), "{summary}");
    assert_eq!(summary.faults.len(), 1, "{summary}");
    // The run exercised every kind, refusals and the fault's window.
    for kind in &summary.kinds {
        assert!(kind.ok > 0, "no {} succeeded: {summary}", kind.kind);
    }
    let transfers = summary
        .kinds
        .iter()
        .find(|kind| kind.kind == "transfer")
        .map(|kind| kind.refused)
        .unwrap_or_default();
    assert!(transfers > 0, "no transfer was refused: {summary}");
    assert!(summary.books.acknowledged_transfers > 0, "{summary}");
    for feed in &summary.feeds {
        assert!(feed.connects >= 1 && feed.delivered > 0, "{summary}");
    }
    Ok(())
}
