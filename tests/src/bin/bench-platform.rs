//! `bench-platform`: the platform benchmarks `scripts/bench.sh` runs and
//! parses. The platform runs as a child process (the release `gateway dev`
//! launcher: four subgraphs and the gateway in one process on the embedded
//! store, the production-like single-machine mode), so its memory and CPU
//! are measured apart from the load generator's.
//!
//! ```text
//! bench-platform transfers --wallets random|hot --concurrency N --duration SECS [--users N]
//! bench-platform subscriptions --ws N --sse N --duration SECS [--users N] [--rate OPS]
//! ```
//!
//! Both take `--gateway-bin PATH` (default: the `gateway` binary next to
//! this one). Result lines go to standard output; progress and details to
//! standard error. Each subscriber holds a file descriptor here and more in
//! the platform: the caller raises the limit (`ulimit -n`) first.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use e2e::bench::books::check_payments;
use e2e::bench::launcher::{gateway_binary, ChildPlatform};
use e2e::bench::{fanout, payments};
use e2e::GatewayClient;

const USAGE: &str = "usage: bench-platform transfers --wallets random|hot --concurrency N --duration SECS [--users N] [--gateway-bin PATH]
       bench-platform subscriptions --ws N --sse N --duration SECS [--users N] [--rate OPS] [--gateway-bin PATH]";

/// How long one request of the benchmarks may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// File descriptors kept free for everything but the subscriptions.
const SPARE_DESCRIPTORS: u64 = 256;

/// Descriptors one subscription takes in the platform, which inherits this
/// process's limit: the client's socket, and the gateway's upstream
/// connection to the subgraph at both ends.
const DESCRIPTORS_PER_SUBSCRIPTION: u64 = 3;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("bench-platform: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<ExitCode> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let flags = Flags::parse(args)?;
    match command.as_str() {
        "transfers" => transfers(flags).await,
        "subscriptions" => subscriptions(flags).await,
        _ => bail!("{USAGE}"),
    }
}

/// `--name value` pairs; each name at most once, every one used.
struct Flags(BTreeMap<String, String>);

impl Flags {
    fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut flags = BTreeMap::new();
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            let name = arg
                .strip_prefix("--")
                .ok_or_else(|| anyhow!("unexpected `{arg}`\n{USAGE}"))?;
            let value = args
                .next()
                .ok_or_else(|| anyhow!("--{name} needs a value\n{USAGE}"))?;
            if flags.insert(name.to_owned(), value).is_some() {
                bail!("--{name} given twice");
            }
        }
        Ok(Self(flags))
    }

    fn take(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }

    fn number(&mut self, name: &str, default: Option<u64>) -> anyhow::Result<u64> {
        match (self.take(name), default) {
            (Some(value), _) => value
                .parse()
                .with_context(|| format!("--{name} must be a whole number, got `{value}`")),
            (None, Some(default)) => Ok(default),
            (None, None) => bail!("--{name} is required\n{USAGE}"),
        }
    }

    /// Fails on any flag nobody asked for.
    fn done(self) -> anyhow::Result<()> {
        match self.0.keys().next() {
            Some(name) => bail!("unknown flag --{name}\n{USAGE}"),
            None => Ok(()),
        }
    }
}

/// Starts the platform and signs its admin in.
async fn start(
    gateway_bin: Option<String>,
    connections: usize,
) -> anyhow::Result<(ChildPlatform, GatewayClient, e2e::Session)> {
    let binary = gateway_binary(gateway_bin.map(PathBuf::from))?;
    eprintln!("starting {} dev", binary.display());
    let platform = ChildPlatform::start(&binary).await?;
    let api = platform.gateway().with_pool(connections, REQUEST_TIMEOUT)?;
    let admin = api.admin().await?;
    eprintln!("platform ready at {}", api.graphql_url());
    Ok((platform, api, admin))
}

async fn transfers(mut flags: Flags) -> anyhow::Result<ExitCode> {
    let wallets = match flags.take("wallets").as_deref() {
        Some("random") => payments::Wallets::Random,
        Some("hot") => payments::Wallets::Hot,
        other => bail!("--wallets must be random or hot, got {other:?}\n{USAGE}"),
    };
    let settings = payments::Settings {
        wallets,
        concurrency: usize::try_from(flags.number("concurrency", None)?)?,
        duration: Duration::from_secs(flags.number("duration", None)?),
        users: usize::try_from(flags.number("users", Some(32))?)?,
    };
    let gateway_bin = flags.take("gateway-bin");
    flags.done()?;

    let (platform, api, admin) = start(gateway_bin, settings.concurrency).await?;
    let cpu_before = platform.cpu_seconds()?;
    let began = Instant::now();
    let run = payments::run(&api, &admin, settings).await?;
    let cpu = platform.cpu_seconds()? - cpu_before;
    let label = format!("payments-e2e {}", wallets.name());
    println!("{}", run.report.line(&label));
    eprintln!(
        "{label}: refused (insufficient balance) {}, no answer {}, platform CPU {:.1} cores over set-up and load ({:.1} s), RSS {} MiB",
        run.refused,
        run.movements.uncertain,
        cpu / began.elapsed().as_secs_f64(),
        began.elapsed().as_secs_f64(),
        platform.rss_kib()? / 1024,
    );
    for sample in &run.error_samples {
        eprintln!("{label}: error: {sample}");
    }

    let checked = Instant::now();
    let verdict = check_payments(&api, &admin, &run.movements).await;
    platform.stop().await?;
    match verdict {
        Ok(summary) => {
            eprintln!(
                "books: {} wallets, {} completed transfers, {} ledger entries, checked in {:.1} s",
                summary.wallets,
                summary.transfers,
                summary.entries,
                checked.elapsed().as_secs_f64()
            );
            println!("payments-e2e invariants: ok");
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            println!("payments-e2e invariants: FAILED: {err:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn subscriptions(mut flags: Flags) -> anyhow::Result<ExitCode> {
    let settings = fanout::Settings {
        websockets: usize::try_from(flags.number("ws", None)?)?,
        sse: usize::try_from(flags.number("sse", None)?)?,
        duration: Duration::from_secs(flags.number("duration", None)?),
        users: usize::try_from(flags.number("users", Some(100))?)?,
        rate: u32::try_from(flags.number("rate", Some(50))?)?,
    };
    let gateway_bin = flags.take("gateway-bin");
    flags.done()?;
    let connections = settings.websockets + settings.sse;
    check_descriptors(connections as u64)?;

    let (platform, api, admin) = start(gateway_bin, 8).await?;
    let figures = fanout::run(&api, &admin, settings, || platform.rss_kib()).await;
    let rss_end = platform.rss_kib()?;
    platform.stop().await?;
    let figures = figures?;
    for transport in &figures.transports {
        println!("{}", transport.line());
    }
    println!("{}", figures.memory_line());
    eprintln!(
        "producer: {} operations in {:.1} s; platform RSS at the end {:.1} MiB",
        figures.operations,
        figures.produced_for.as_secs_f64(),
        rss_end as f64 / 1024.0
    );
    for sample in &figures.error_samples {
        eprintln!("subscriptions: error: {sample}");
    }
    let failed = figures.transports.iter().any(|t| t.errors > 0);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Fails early when the soft limit on open files (which the platform
/// inherits) cannot hold `connections` subscriptions (Linux:
/// `/proc/self/limits`; elsewhere the check is skipped).
fn check_descriptors(connections: u64) -> anyhow::Result<()> {
    let needed = connections * DESCRIPTORS_PER_SUBSCRIPTION + SPARE_DESCRIPTORS;
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return Ok(());
    };
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse::<u64>().ok());
    match soft {
        Some(soft) if soft < needed => bail!(
            "{connections} subscribers need about {needed} open files, the limit is {soft}: \
             raise it first (ulimit -n {needed})"
        ),
        _ => Ok(()),
    }
}
