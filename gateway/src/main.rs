//! `gateway dev`: run the whole platform in one process.

fn usage() -> ! {
    eprintln!("usage: gateway dev    run every service in one process on loopback ports");
    std::process::exit(2);
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("dev") => gateway::launcher::run_dev().await?,
        _ => usage(),
    }
    Ok(())
}
