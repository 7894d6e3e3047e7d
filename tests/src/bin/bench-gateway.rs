//! The load client of the gateway benchmark: POSTs one GraphQL operation to
//! a URL from `concurrency` closed-loop workers for a fixed time and prints
//! one [`Report::line`] per concurrency level.
//!
//! Every answer is checked: an answer counts as a success only when it is a
//! 200 whose body is the expected response, so a system that answers fast
//! but wrong (an error, a partial result, a rate-limit refusal) shows up as
//! errors instead of throughput. The expected response is read from
//! `--expect-file` when given, else taken from one request made before the
//! load (which must then be a `data` answer without `errors`).
//!
//! ```text
//! bench-gateway --url http://127.0.0.1:4000/graphql --query '{ me { id } }' \
//!     [--expect-file expected.json] [--concurrency 1,4,16,64] [--duration 10] \
//!     [--warmup 2] [--label ours]
//! ```
//!
//! Output, one line per level: `<label> concurrency=<n>: rps=… p50_ms=… …`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use e2e::load::{closed_loop, Outcome};
use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use serde_json::{json, Value};

const USAGE: &str = "usage: bench-gateway --url URL (--query TEXT | --query-file PATH) \
[--expect-file PATH] [--concurrency N[,N...]] [--duration SECS] [--warmup SECS] [--label TEXT]";

/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The command line.
#[derive(Debug)]
struct Args {
    url: String,
    query: String,
    expect_file: Option<String>,
    concurrency: Vec<usize>,
    duration: Duration,
    warmup: Duration,
    label: String,
}

impl Args {
    fn parse(mut raw: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut url = None;
        let mut query = None;
        let mut expect_file = None;
        let mut concurrency = vec![16];
        let mut duration = Duration::from_secs(10);
        let mut warmup = Duration::from_secs(2);
        let mut label = "gateway".to_owned();
        while let Some(flag) = raw.next() {
            let mut value = || {
                raw.next()
                    .with_context(|| format!("{flag} needs a value\n{USAGE}"))
            };
            match flag.as_str() {
                "--url" => url = Some(value()?),
                "--query" => query = Some(value()?),
                "--query-file" => {
                    let path = value()?;
                    query = Some(
                        std::fs::read_to_string(&path)
                            .with_context(|| format!("cannot read the query file {path}"))?,
                    );
                }
                "--expect-file" => expect_file = Some(value()?),
                "--concurrency" => {
                    concurrency = value()?
                        .split(',')
                        .map(|level| {
                            level
                                .trim()
                                .parse::<usize>()
                                .ok()
                                .filter(|n| *n > 0)
                                .with_context(|| format!("`{level}` is not a positive concurrency"))
                        })
                        .collect::<anyhow::Result<_>>()?;
                }
                "--duration" => duration = seconds(&value()?)?,
                "--warmup" => warmup = seconds(&value()?)?,
                "--label" => label = value()?,
                other => bail!("unknown flag `{other}`\n{USAGE}"),
            }
        }
        Ok(Self {
            url: url.with_context(|| format!("--url is required\n{USAGE}"))?,
            query: query
                .with_context(|| format!("--query or --query-file is required\n{USAGE}"))?,
            expect_file,
            concurrency,
            duration,
            warmup,
            label,
        })
    }
}

fn seconds(raw: &str) -> anyhow::Result<Duration> {
    raw.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .with_context(|| format!("`{raw}` is not a number of seconds"))
}

/// The request every worker sends and the answer it must get back.
struct Probe {
    client: reqwest::Client,
    url: String,
    body: Vec<u8>,
    /// The expected answer as the server printed it once: most answers
    /// match it byte for byte, which is cheaper to check than parsing.
    expected_bytes: Vec<u8>,
    /// The expected answer as JSON, for answers printed differently.
    expected: Value,
}

impl Probe {
    async fn send(&self) -> anyhow::Result<(reqwest::StatusCode, Vec<u8>)> {
        let response = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(
                ACCEPT,
                HeaderValue::from_static("application/graphql-response+json, application/json"),
            )
            .body(self.body.clone())
            .send()
            .await?;
        let status = response.status();
        Ok((status, response.bytes().await?.to_vec()))
    }

    /// One request; a success only when the answer is the expected one.
    async fn check(&self) -> Outcome {
        match self.send().await {
            Ok((status, body)) if status.is_success() => Outcome::from(
                body == self.expected_bytes
                    || serde_json::from_slice::<Value>(&body).is_ok_and(|v| v == self.expected),
            ),
            _ => Outcome::Failed,
        }
    }
}

/// Makes the first request and settles the expected answer.
async fn prepare(args: &Args, client: reqwest::Client) -> anyhow::Result<Probe> {
    let mut probe = Probe {
        client,
        url: args.url.clone(),
        body: serde_json::to_vec(&json!({ "query": args.query }))?,
        expected_bytes: Vec::new(),
        expected: Value::Null,
    };
    let (status, body) = probe
        .send()
        .await
        .with_context(|| format!("{} did not answer", args.url))?;
    let text = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        bail!("{} answered {status}: {text}", args.url);
    }
    let first: Value = serde_json::from_slice(&body)
        .with_context(|| format!("{} answered a body that is not JSON: {text}", args.url))?;
    match &args.expect_file {
        Some(path) => {
            let raw = std::fs::read(path)
                .with_context(|| format!("cannot read the expected answer {path}"))?;
            let expected: Value =
                serde_json::from_slice(&raw).with_context(|| format!("{path} is not JSON"))?;
            if first != expected {
                bail!(
                    "{} answered {text}\nbut the expected answer ({path}) is {expected}",
                    args.url
                );
            }
            probe.expected = expected;
        }
        None => {
            if first.get("errors").is_some() || first.get("data").is_none_or(Value::is_null) {
                bail!("{} answered with errors or without data: {text}", args.url);
            }
            probe.expected = first;
        }
    }
    probe.expected_bytes = body;
    Ok(probe)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .build()?;
    let probe = Arc::new(prepare(&args, client).await?);
    let operation = move |_worker: usize, _sequence: u64| {
        let probe = probe.clone();
        async move { probe.check().await }
    };
    for &concurrency in &args.concurrency {
        if !args.warmup.is_zero() {
            let warm = closed_loop(concurrency, args.warmup, operation.clone()).await;
            if warm.failed > 0 {
                eprintln!(
                    "{}",
                    warm.line(&format!("{} concurrency={concurrency} warm-up", args.label))
                );
            }
        }
        let report = closed_loop(concurrency, args.duration, operation.clone()).await;
        println!(
            "{}",
            report.line(&format!("{} concurrency={concurrency}", args.label))
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    run(args).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Args> {
        Args::parse(args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn reads_a_concurrency_sweep_and_durations() {
        let args = parse(&[
            "--url",
            "http://127.0.0.1:1/graphql",
            "--query",
            "{ me { id } }",
            "--concurrency",
            "1, 4,16",
            "--duration",
            "2.5",
            "--warmup",
            "0",
            "--label",
            "gateway ours",
        ])
        .expect("valid flags");
        assert_eq!(args.concurrency, vec![1, 4, 16]);
        assert_eq!(args.duration, Duration::from_millis(2500));
        assert!(args.warmup.is_zero());
        assert_eq!(args.label, "gateway ours");
        assert_eq!(args.query, "{ me { id } }");
    }

    #[test]
    fn refuses_missing_and_bad_values() {
        assert!(parse(&["--query", "{ me { id } }"]).is_err(), "no url");
        assert!(parse(&["--url", "http://h/graphql"]).is_err(), "no query");
        let bad = |flag: &str, value: &str| {
            parse(&["--url", "http://h/graphql", "--query", "{ a }", flag, value]).is_err()
        };
        assert!(bad("--concurrency", "0"));
        assert!(bad("--concurrency", "4,x"));
        assert!(bad("--duration", "-1"));
        assert!(bad("--duration", "soon"));
        assert!(bad("--colour", "red"));
        assert!(parse(&["--url"]).is_err(), "flag without a value");
    }
}
