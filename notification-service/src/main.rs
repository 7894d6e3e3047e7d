use notification_service::{schema, DEFAULT_ADDR, ENV_PREFIX, SERVICE};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_core::app::run_subgraph(SERVICE, ENV_PREFIX, DEFAULT_ADDR, schema).await?;
    Ok(())
}
