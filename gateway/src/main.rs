//! `gateway dev`: run the whole platform in one process.
//! `gateway serve [--supergraph <path>] [--subgraphs name=url,...]`: run the
//! gateway alone, from a supergraph file or in front of a subgraph list.

fn usage() -> ! {
    eprintln!(
        "usage: gateway dev      run every service and the gateway in one process on loopback ports\n       \
         gateway serve [--supergraph <path>] [--subgraphs name=url,...]\n                \
         run the gateway from a supergraph file (watched, reloaded on change) or in front of\n                \
         the listed subgraphs; the flags override GATEWAY_SUPERGRAPH_PATH and GATEWAY_SUBGRAPHS"
    );
    std::process::exit(2);
}

async fn serve(flags: gateway::StartFlags) -> anyhow::Result<()> {
    let common = service_core::config::CommonConfig::from_env()?;
    service_core::telemetry::init_tracing(common.log_format);
    let mut settings = gateway::GatewaySettings::from_env()?;
    flags.apply(&mut settings);
    if settings.subgraphs.is_empty() && settings.supergraph_path.is_none() {
        anyhow::bail!(
            "give --supergraph <path> or --subgraphs name=url,... (or set GATEWAY_SUPERGRAPH_PATH / GATEWAY_SUBGRAPHS)"
        );
    }
    // Session revocations come from the auth service over the shared bus;
    // without Redis there is no channel between processes to hear them on.
    let redis = service_core::redis::RedisUrls::from_env()?;
    if redis.state.is_none() {
        tracing::warn!(
            "no REDIS_STATE_URL/REDIS_URL: session revocations cannot reach this gateway; \
             tokens of ended sessions pass here until they expire"
        );
    }
    let bus = service_core::events::EventBus::connect(
        redis.state.as_ref(),
        &common.brand,
        service_core::events::BusConfig::default(),
    )
    .await?;
    let deps = gateway::GatewayDeps::from_common(&common)
        .await?
        .follow_revocations(&bus)
        .await?;
    let app = gateway::Application::start(settings, deps).await?;
    tracing::info!(addr = %app.local_addr()?, "gateway ready");
    let served = app.run_until_stopped().await;
    bus.shutdown().await;
    served?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("dev") => gateway::launcher::run_dev().await?,
        Some("serve") => match gateway::StartFlags::parse(args) {
            Ok(flags) => serve(flags).await?,
            Err(reason) => {
                eprintln!("{reason}");
                usage()
            }
        },
        _ => usage(),
    }
    Ok(())
}
