//! The notification subgraph binary: settings, logs, then the library's
//! [`Application`].

use notification_service::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    service_core::telemetry::init_tracing(settings.common.log_format);
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}
