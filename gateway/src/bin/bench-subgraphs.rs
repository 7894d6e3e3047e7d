//! Serves the benchmark-shaped test subgraphs (accounts, inventory,
//! products, reviews) on `BENCH_SUBGRAPHS_PORT` (default 4101) and the
//! three ports after it, and prints the `GATEWAY_SUBGRAPHS` value to use.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base: u16 = match std::env::var("BENCH_SUBGRAPHS_PORT") {
        Ok(raw) => raw.parse()?,
        Err(_) => 4101,
    };
    let subgraphs = gateway::testing::BenchSubgraphs::spawn("127.0.0.1", Some(base)).await?;
    let list: Vec<String> = subgraphs
        .endpoints
        .iter()
        .map(|e| format!("{}={}", e.name, e.url))
        .collect();
    println!("GATEWAY_SUBGRAPHS={}", list.join(","));
    service_core::server::shutdown_signal().await;
    subgraphs.shutdown();
    Ok(())
}
