//! `platform-node`: the whole platform (the four subgraphs and the gateway,
//! an [`e2e::Platform`]) in a process of its own, on a data directory that
//! outlives it, so a test can kill it with SIGKILL mid-load and start it
//! again on the same books.
//!
//! ```text
//! platform-node --data-dir <dir> [--brand <name>] [--mode embedded|redis-mongo]
//!               [--set KEY=VALUE]...
//! ```
//!
//! The signing key and the bootstrap admin come from the environment, so
//! no secret shows in the process list: `PLATFORM_NODE_SIGNING_KEY` (an
//! Ed25519 key, PKCS#8 PEM), `PLATFORM_NODE_ADMIN_EMAIL` and
//! `PLATFORM_NODE_ADMIN_PASSWORD`. Each `--set` is given to every service
//! and the gateway after the defaults (`PAYMENT_RECOVERY_INTERVAL_SECONDS=1`).
//!
//! When the gateway serves, the node prints one line on stdout, the
//! gateway's `/graphql` URL, and runs until SIGTERM or Ctrl-C (a graceful
//! shutdown) or until it is killed.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _};
use e2e::{Mode, Platform, PlatformOptions};
use tokio::signal::unix::{signal, SignalKind};

/// The variable holding the signing key's PKCS#8 PEM.
const SIGNING_KEY_VAR: &str = "PLATFORM_NODE_SIGNING_KEY";
/// The variable holding the bootstrap admin's email.
const ADMIN_EMAIL_VAR: &str = "PLATFORM_NODE_ADMIN_EMAIL";
/// The variable holding the bootstrap admin's password.
const ADMIN_PASSWORD_VAR: &str = "PLATFORM_NODE_ADMIN_PASSWORD";

/// The brand when none is given: it names the databases, so every start
/// on one data directory must use the same.
const DEFAULT_BRAND: &str = "node";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options(std::env::args().skip(1))?;
    let platform = Platform::start_options(options).await?;

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", platform.graphql_url()).context("write the gateway's URL")?;
    stdout.flush().context("write the gateway's URL")?;
    drop(stdout);

    let mut terminate = signal(SignalKind::terminate()).context("listen for SIGTERM")?;
    tokio::select! {
        _ = terminate.recv() => {}
        result = tokio::signal::ctrl_c() => result.context("listen for Ctrl-C")?,
    }
    platform.shutdown().await
}

/// The platform's options from the command line and the environment.
fn options(mut args: impl Iterator<Item = String>) -> anyhow::Result<PlatformOptions> {
    let mut data_dir: Option<PathBuf> = None;
    let mut brand = DEFAULT_BRAND.to_owned();
    let mut mode = Mode::Embedded;
    let mut settings = Vec::new();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--data-dir" => data_dir = Some(PathBuf::from(value()?)),
            "--brand" => brand = value()?,
            "--mode" => {
                mode = match value()?.as_str() {
                    "embedded" => Mode::Embedded,
                    "redis-mongo" => Mode::RedisMongo,
                    other => bail!("--mode is `embedded` or `redis-mongo`, not `{other}`"),
                }
            }
            "--set" => {
                let pair = value()?;
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--set takes KEY=VALUE, not `{pair}`"))?;
                settings.push((key.to_owned(), value.to_owned()));
            }
            other => bail!("unknown argument `{other}` (see the binary's documentation)"),
        }
    }
    let data_dir = data_dir.ok_or_else(|| anyhow!("--data-dir is required"))?;
    let options = PlatformOptions::new(mode)
        .data_dir(data_dir)
        .brand(brand)
        .signing_key_pem(required_var(SIGNING_KEY_VAR)?)
        .admin(
            required_var(ADMIN_EMAIL_VAR)?,
            required_var(ADMIN_PASSWORD_VAR)?,
        );
    Ok(settings
        .into_iter()
        .fold(options, |options, (key, value)| options.set(key, value)))
}

fn required_var(name: &str) -> anyhow::Result<String> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Ok(value),
        _ => bail!("{name} is not set"),
    }
}
