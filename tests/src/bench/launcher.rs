//! The platform under benchmark as a child process: the release `gateway
//! dev` launcher (the four subgraphs and the gateway in one process, on the
//! embedded store), so its memory and CPU are the server's alone and never
//! mixed with the load generator's.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::GatewayClient;

/// The prefix of the line `gateway dev` prints with the gateway's URL.
const GATEWAY_LINE: &str = "federated";

/// How long the launcher may take to print its URL and become ready.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Budgets far above any benchmark's rate: the benchmark measures the
/// platform's throughput, not its rate limiter. Set through variables; the
/// defaults stay as they are.
const UNLIMITED_RATE: [(&str, &str); 2] = [
    ("GATEWAY_RATE_LIMIT_BURST", "100000000"),
    ("GATEWAY_RATE_LIMIT_PER_SECOND", "100000000"),
];

/// A running `gateway dev` child process with its own data directory and
/// bootstrap admin. Dropping it kills the process.
pub struct ChildPlatform {
    child: Child,
    pid: u32,
    gateway: GatewayClient,
    _data: tempfile::TempDir,
}

impl ChildPlatform {
    /// Starts `binary dev` with a clean environment (only `PATH` is kept,
    /// so no Redis or MongoDB variable of the caller's leaks in: the
    /// embedded defaults), every listener on a free loopback port, and
    /// waits until the gateway answers `/health/ready`.
    pub async fn start(binary: &Path) -> anyhow::Result<Self> {
        let data = tempfile::tempdir().context("temporary data directory")?;
        let admin_email = format!("bench-admin-{}@example.com", short_id());
        let admin_password = format!("Admin-{}", uuid::Uuid::new_v4().simple());
        let mut command = Command::new(binary);
        command
            .arg("dev")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs([
                ("APP_ENV", "development"),
                ("BRAND", "bench"),
                ("LOG_FORMAT", "json"),
                // Logging every request would measure the log writer.
                ("RUST_LOG", "warn"),
                ("AUTH_BOOTSTRAP_ADMIN_EMAIL", admin_email.as_str()),
                ("AUTH_BOOTSTRAP_ADMIN_PASSWORD", admin_password.as_str()),
                // Reconciliation runs when the benchmark asks for the report.
                ("PAYMENT_RECONCILE_INTERVAL_SECONDS", "0"),
                ("GATEWAY_ADDR", "127.0.0.1:0"),
                ("AUTH_ADDR", "127.0.0.1:0"),
                ("PAYMENT_ADDR", "127.0.0.1:0"),
                ("BONUS_ADDR", "127.0.0.1:0"),
                ("NOTIFICATION_ADDR", "127.0.0.1:0"),
            ])
            .envs(UNLIMITED_RATE)
            .env("DATA_DIR", data.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the launcher exited at once"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout of the launcher"))?;
        let mut lines = BufReader::new(stdout).lines();
        let graphql_url = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = gateway_url(&line) {
                    return Ok(url);
                }
            }
            bail!("the launcher ended before printing the gateway's URL")
        })
        .await
        .context("the launcher did not print the gateway's URL in time")??;
        // The launcher's later output (its logs) goes on to ours, so a full
        // pipe never blocks it.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[platform] {line}");
            }
        });
        let platform = Self {
            child,
            pid,
            gateway: GatewayClient::new(graphql_url, admin_email, admin_password)?,
            _data: data,
        };
        platform.wait_ready().await?;
        Ok(platform)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let client = self.gateway.client();
        let ready = format!("{}/health/ready", self.gateway.base_url());
        crate::eventually(START_TIMEOUT, || {
            let request = client.get(&ready).send();
            async move {
                Ok(match request.await {
                    Ok(response) => response.status().is_success().then_some(()),
                    Err(_) => None,
                })
            }
        })
        .await
        .context("the gateway never became ready")
    }

    /// The gateway's public API, its bootstrap admin included.
    pub fn gateway(&self) -> &GatewayClient {
        &self.gateway
    }

    /// The process's resident set size in KiB (`VmRSS` of
    /// `/proc/<pid>/status`; Linux only).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .context("reading the platform's /proc status (Linux only)")?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS in the platform's /proc status"))
    }

    /// CPU time the process has used so far (user + system), from
    /// `/proc/<pid>/stat` (Linux only), assuming the usual 100 clock ticks
    /// per second.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .context("reading the platform's /proc stat (Linux only)")?;
        // The command name may hold spaces; the fields after it are plain.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // utime and stime are fields 14 and 15; `fields` starts at field 3.
        let ticks = |index: usize| fields.get(index).and_then(|v| v.parse::<u64>().ok());
        match (ticks(11), ticks(12)) {
            (Some(user), Some(system)) => Ok((user + system) as f64 / 100.0),
            _ => bail!("unexpected /proc stat of the platform: {stat}"),
        }
    }

    /// Kills the process and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("stopping the platform")
    }
}

/// The gateway's URL from a line `federated     gateway   http://...`.
fn gateway_url(line: &str) -> Option<String> {
    let rest = line.strip_prefix(GATEWAY_LINE)?;
    let mut words = rest.split_whitespace();
    (words.next() == Some("gateway"))
        .then(|| words.next())
        .flatten()
        .filter(|url| url.starts_with("http://"))
        .map(str::to_owned)
}

/// The `gateway` binary next to this one (both are in the same target
/// directory after `cargo build --release -p gateway -p e2e`), unless
/// `explicit` names another.
pub fn gateway_binary(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match explicit {
        Some(path) => path,
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("gateway"),
    };
    if !path.is_file() {
        bail!(
            "no gateway binary at {}: build it with `cargo build --release -p gateway` \
             or pass --gateway-bin",
            path.display()
        );
    }
    Ok(path)
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_gateway_url_from_the_launchers_line() {
        let line = format!(
            "{:<13} gateway   http://127.0.0.1:40123/graphql",
            "federated"
        );
        assert_eq!(
            gateway_url(&line).as_deref(),
            Some("http://127.0.0.1:40123/graphql")
        );
        let subgraph = format!("{:<13} subgraph  http://127.0.0.1:4001/graphql", "auth");
        assert_eq!(gateway_url(&subgraph), None);
    }
}
