//! `gateway dev`: run the whole platform in one process.
//! `gateway serve`: run the gateway alone in front of `GATEWAY_SUBGRAPHS`.

fn usage() -> ! {
    eprintln!(
        "usage: gateway dev      run every service and the gateway in one process on loopback ports\n       gateway serve    run the gateway in front of GATEWAY_SUBGRAPHS (name=url,...)"
    );
    std::process::exit(2);
}

async fn serve() -> anyhow::Result<()> {
    let common = service_core::config::CommonConfig::from_env()?;
    service_core::telemetry::init_tracing(common.log_format);
    let settings = gateway::GatewaySettings::from_env()?;
    if settings.subgraphs.is_empty() && settings.supergraph_path.is_none() {
        anyhow::bail!(
            "set GATEWAY_SUBGRAPHS (name=url,...) or GATEWAY_SUPERGRAPH_PATH (a supergraph SDL file)"
        );
    }
    let deps = gateway::GatewayDeps::from_common(&common).await?;
    let gateway = gateway::Gateway::build(settings, deps).await?;
    let app = gateway::Application::bind(gateway).await?;
    tracing::info!(addr = %app.local_addr()?, "gateway ready");
    app.run_until_stopped().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("dev") => gateway::launcher::run_dev().await?,
        Some("serve") => serve().await?,
        _ => usage(),
    }
    Ok(())
}
