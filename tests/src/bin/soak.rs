//! The soak command: mixed traffic against an in-process platform for a
//! set time, faults on a schedule, then the money invariants, memory growth
//! and error budget (see `e2e::soak`). Prints a summary table and exits
//! non-zero when any check failed.
//!
//! ```text
//! cargo run --release -p e2e --bin soak -- --duration 10m [--mode embedded|redis-mongo]
//!     [--engine journal|sqlite] [--concurrency 16] [--fault-every 60s] [--fault-hold 5s] [--members 20]
//!     [--subscribers 2] [--warm-up 60s] [--max-rss-growth-mib 64]
//!     [--error-budget-percent 0.1] [--seed 1]
//! ```
//!
//! The redis-mongo mode needs `TEST_MONGODB_URI` (a MongoDB, or the wire
//! server) and `redis-server` on the `PATH`: the soak starts a Redis of
//! its own so that it can kill it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use e2e::soak::{self, SoakConfig};
use e2e::Mode;
use service_core::db::EmbeddedEngine;

const USAGE: &str = "usage: soak [--duration 10m] [--mode embedded|redis-mongo] \
[--engine journal|sqlite] [--concurrency N] \
[--fault-every 60s] [--fault-hold 5s] [--members N] [--subscribers N] [--warm-up 60s] \
[--max-rss-growth-mib MIB] [--error-budget-percent PCT] [--seed N]
durations: a number with a unit (500ms, 30s, 10m, 1h); a bare number is seconds";

fn parse(mut raw: impl Iterator<Item = String>) -> anyhow::Result<Option<SoakConfig>> {
    let mut config = SoakConfig::default();
    let mut warm_up = None;
    while let Some(flag) = raw.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let value = raw
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = |what: &str| {
            value
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .with_context(|| format!("{flag}: `{value}` is not {what}"))
        };
        let count = || {
            value
                .parse::<usize>()
                .with_context(|| format!("{flag}: `{value}` is not a whole number"))
        };
        match flag.as_str() {
            "--duration" => config.duration = duration(&value)?,
            "--mode" => {
                config.mode = match value.as_str() {
                    "embedded" => Mode::Embedded,
                    "redis-mongo" => Mode::RedisMongo,
                    other => bail!("--mode: `{other}` is not embedded or redis-mongo"),
                }
            }
            "--engine" => {
                config.engine = match value.as_str() {
                    "journal" => EmbeddedEngine::Journal,
                    "sqlite" => EmbeddedEngine::Sqlite,
                    other => bail!("--engine: `{other}` is not journal or sqlite"),
                }
            }
            "--concurrency" => config.concurrency = count()?,
            "--fault-every" => config.fault_every = duration(&value)?,
            "--fault-hold" => config.fault_hold = duration(&value)?,
            "--members" => config.members = count()?,
            "--subscribers" => config.subscribers = count()?,
            "--warm-up" => warm_up = Some(duration(&value)?),
            "--max-rss-growth-mib" => config.max_rss_growth_mib = number("a size in MiB")?,
            "--error-budget-percent" => config.error_budget = number("a percentage")? / 100.0,
            "--seed" => {
                config.seed = value
                    .parse()
                    .with_context(|| format!("--seed: `{value}` is not a number"))?
            }
            other => bail!("unknown flag `{other}`\n{USAGE}"),
        }
    }
    // The default warm-up is half the run, at most 60 s: a platform under
    // this load fills its caches and pools for about a minute.
    config.warm_up = warm_up.unwrap_or_else(|| (config.duration / 2).min(Duration::from_secs(60)));
    Ok(Some(config))
}

/// `500ms`, `30s`, `10m`, `1h`, or a bare number of seconds.
fn duration(text: &str) -> anyhow::Result<Duration> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: f64 = number
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
        .with_context(|| format!("`{text}` is not a duration\n{USAGE}"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => bail!("`{text}`: the unit is one of ms, s, m, h\n{USAGE}"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = match parse(std::env::args().skip(1)) {
        Ok(Some(config)) => config,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("soak: {err:#}");
            return ExitCode::from(2);
        }
    };
    eprintln!("soak: {config:?}");
    match soak::run(config).await {
        Ok(summary) => {
            println!("{summary}");
            if summary.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("soak: the run could not complete: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_or_mean_seconds() {
        assert_eq!(duration("500ms").ok(), Some(Duration::from_millis(500)));
        assert_eq!(duration("30s").ok(), Some(Duration::from_secs(30)));
        assert_eq!(duration("10m").ok(), Some(Duration::from_secs(600)));
        assert_eq!(duration("1h").ok(), Some(Duration::from_secs(3600)));
        assert_eq!(duration("45").ok(), Some(Duration::from_secs(45)));
        assert!(duration("ten").is_err());
        assert!(duration("5d").is_err());
    }

    #[test]
    fn flags_override_the_defaults() -> anyhow::Result<()> {
        let args = [
            "--duration",
            "2m",
            "--mode",
            "redis-mongo",
            "--concurrency",
            "4",
        ];
        let config = parse(args.iter().map(|a| (*a).to_owned()))?.context("a config")?;
        assert_eq!(config.duration, Duration::from_secs(120));
        assert_eq!(config.mode, Mode::RedisMongo);
        assert_eq!(config.concurrency, 4);
        assert_eq!(config.warm_up, Duration::from_secs(60));
        assert!(parse(["--bogus", "1"].iter().map(|a| (*a).to_owned())).is_err());
        assert!(parse(["--mode", "sqlite"].iter().map(|a| (*a).to_owned())).is_err());
        let sqlite = parse(["--engine", "sqlite"].iter().map(|a| (*a).to_owned()))
            .unwrap()
            .unwrap();
        assert_eq!(sqlite.engine, EmbeddedEngine::Sqlite);
        assert!(parse(["--engine", "leveldb"].iter().map(|a| (*a).to_owned())).is_err());
        Ok(())
    }
}
