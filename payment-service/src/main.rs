//! The payment subgraph binary: settings, logs, then the library's
//! [`Application`]. `payment-service reconcile` checks every wallet against
//! its ledger once, prints the report as JSON and exits non-zero on a
//! mismatch.

use payment_service::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    service_core::telemetry::init_tracing(settings.common.log_format);
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => {
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await?;
            Ok(())
        }
        Some("reconcile") => {
            let report = payment_service::reconcile_once(&settings)
                .await
                .map_err(|err| anyhow::anyhow!(err))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if report.mismatches.is_empty() {
                Ok(())
            } else {
                anyhow::bail!("{} mismatches", report.mismatches.len())
            }
        }
        Some(other) => anyhow::bail!("unknown command {other:?}; use `serve` or `reconcile`"),
    }
}
