//! Check cost against policy size.
//!
//! Engines hold 10, 1 000 and 100 000 rules spread over three roles (one
//! inheriting another), mostly literal-id rules so buckets are large. The
//! subject holds three roles; requests mix literal-id hits and misses, `own`
//! and `tenant` hits, denies and collection-level checks.
//!
//! After criterion's report, one line per size is printed for scripts:
//! `access-engine checks/s rules=N: X`, from a plain single-threaded loop.

use std::hint::black_box;
use std::time::{Duration, Instant};

use access_engine::{AccessEngine, Request, Resource, RoleDef, Subject};
use criterion::{BenchmarkId, Criterion};

const SIZES: [usize; 3] = [10, 1_000, 100_000];
const RESOURCES: [&str; 8] = [
    "wallet",
    "transfer",
    "bonus",
    "notification",
    "user",
    "invoice",
    "payout",
    "report",
];
const ACTIONS: [&str; 6] = ["read", "create", "update", "delete", "withdraw", "claim"];
const ROLES: [&str; 3] = ["customer", "agent", "auditor"];

/// Exactly `size` rules: a few generic ones first, then literal ids, every
/// 40th rule a deny.
fn rule(i: usize) -> (usize, bool, String) {
    let resource = RESOURCES[i % RESOURCES.len()];
    let action = ACTIONS[(i / RESOURCES.len()) % ACTIONS.len()];
    let target = match i {
        0..=3 => "own".to_string(),
        4..=5 => "tenant".to_string(),
        6..=7 => "*".to_string(),
        _ => format!("{resource}-{i:06}"),
    };
    (
        i % ROLES.len(),
        i % 40 == 39,
        format!("{resource}:{action}:{target}"),
    )
}

fn build(size: usize) -> AccessEngine {
    let mut roles: Vec<RoleDef> = ROLES
        .iter()
        .map(|name| RoleDef {
            name: name.to_string(),
            ..RoleDef::default()
        })
        .collect();
    roles[1].inherits = vec!["customer".into()];
    for i in 0..size {
        let (role, deny, urn) = rule(i);
        if deny {
            roles[role].deny.push(urn);
        } else {
            roles[role].allow.push(urn);
        }
    }
    let builder = roles
        .into_iter()
        .fold(AccessEngine::builder(), |b, r| b.role(r));
    match builder.build() {
        Ok(engine) => engine,
        Err(error) => panic!("benchmark policy is invalid: {error}"),
    }
}

/// Owned request data; `Request` borrows from it.
struct Case {
    resource: &'static str,
    action: &'static str,
    id: Option<String>,
    owner: Option<&'static str>,
}

fn cases(size: usize) -> Vec<Case> {
    let mut cases = Vec::new();
    for k in 0..48 {
        // Spread over the whole policy so large maps are really exercised.
        let i = (k * 7919) % size.max(1);
        let (_, _, urn) = rule(i);
        let mut parts = urn.split(':');
        let resource = RESOURCES
            .iter()
            .find(|r| Some(**r) == parts.next())
            .copied()
            .unwrap_or("wallet");
        let action = ACTIONS
            .iter()
            .find(|a| Some(**a) == parts.next())
            .copied()
            .unwrap_or("read");
        let id = match k % 4 {
            0 | 1 => Some(format!("{resource}-{i:06}")),
            2 => Some(format!("{resource}-missing-{k}")),
            _ => None,
        };
        let owner = if k % 3 == 0 { Some("u1") } else { Some("u2") };
        cases.push(Case {
            resource,
            action,
            id,
            owner,
        });
    }
    cases
}

fn requests(cases: &[Case]) -> Vec<Request<'_>> {
    cases
        .iter()
        .map(|c| Request {
            resource: c.resource,
            action: c.action,
            target: Resource {
                id: c.id.as_deref(),
                owner: c.owner,
                tenant: Some("t1"),
            },
        })
        .collect()
}

fn run(engine: &AccessEngine, subject: &Subject<'_>, requests: &[Request<'_>]) -> usize {
    let mut allowed = 0;
    for request in requests {
        allowed += usize::from(black_box(engine.check(subject, black_box(request))).allowed);
    }
    allowed
}

fn checks_per_second(
    engine: &AccessEngine,
    subject: &Subject<'_>,
    requests: &[Request<'_>],
) -> f64 {
    let start = Instant::now();
    let mut checks = 0usize;
    while start.elapsed() < Duration::from_secs(1) {
        black_box(run(engine, subject, requests));
        checks += requests.len();
    }
    checks as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let roles: Vec<String> = ROLES.iter().map(|r| r.to_string()).collect();
    let subject = Subject {
        id: "u1",
        tenant: "t1",
        roles: &roles,
    };
    let engines: Vec<(usize, AccessEngine, Vec<Case>)> =
        SIZES.iter().map(|&n| (n, build(n), cases(n))).collect();

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    let mut group = criterion.benchmark_group("check");
    for (size, engine, cases) in &engines {
        let requests = requests(cases);
        group.throughput(criterion::Throughput::Elements(requests.len() as u64));
        group.bench_with_input(BenchmarkId::new("rules", size), &requests, |b, requests| {
            b.iter(|| run(engine, &subject, requests))
        });
    }
    group.finish();
    criterion.final_summary();

    // Criterion runs each benchmark once under `cargo test --benches`; the
    // timed loops are only worth their seconds in a real benchmark run.
    if std::env::args().any(|arg| arg == "--bench") {
        for (size, engine, cases) in &engines {
            let requests = requests(cases);
            let rate = checks_per_second(engine, &subject, &requests);
            println!("access-engine checks/s rules={size}: {rate:.0}");
        }
    }
}
