//! What bounds the auth service's throughput:
//!
//! - `argon2id/hash` and `argon2id/verify`: one operation at the production
//!   OWASP parameters (m = 19 MiB, t = 2, p = 1) on one core;
//! - `login/1 task` and `login/2 tasks`: sign-ins through the domain service
//!   (throttle check, user lookup, argon2 verification, session write, token
//!   signing) on the embedded store, one at a time and two at a time;
//! - `access_token/verify`: one access-token verification on first use
//!   (core `TokenVerifier`, a new one each time, so the EdDSA signature is
//!   checked), and `access_token/verify_cached`: the same token again, which
//!   the verifier recognises and only checks for expiry and revocation.
//!
//! Run with `cargo bench -p auth-service --bench auth` (release profile).
//! Criterion prints the time per operation; the per-second figures are
//! printed after each group.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use auth_service::domain::password::PasswordHasher;
use auth_service::domain::sessions::{RevocationNotices, SessionPolicy, Sessions};
use auth_service::domain::tokens::SuccessorKey;
use auth_service::domain::{AuthParts, AuthService, LockoutPolicy, NewUser, OtpPolicy};
use auth_service::store::Store;
use criterion::Criterion;
use secrecy::SecretString;
use service_core::auth::{
    JwtSettings, KeySet, SigningKey, TokenIssuer, TokenSubject, TokenVerifier,
};
use service_core::cache::{CacheConfig, LayeredCache};
use service_core::db::{Database, DbConfig, NamingStrategy, PoolSettings};
use service_core::events::{BusConfig, EventBus, OutboxConfig, OutboxRelay};
use service_core::resilience::{AttemptCounter, RateLimiter};
use tokio::runtime::Runtime;

const PASSWORD: &str = "correct horse battery staple";

fn owasp() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Mean seconds per iteration of the last run of `name`, from a manual timing
/// of `n` runs of `op` (printed as operations per second next to criterion's
/// own output).
fn per_second(name: &str, n: u32, mut op: impl FnMut()) {
    let start = Instant::now();
    for _ in 0..n {
        op();
    }
    let per_op = start.elapsed() / n;
    println!(
        "{name}: {:.1} per second ({:.2} ms each)",
        1.0 / per_op.as_secs_f64(),
        per_op.as_secs_f64() * 1e3
    );
}

fn argon2_benches(criterion: &mut Criterion) {
    let argon2 = owasp();
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let hash = argon2
        .hash_password(PASSWORD.as_bytes(), &salt)
        .unwrap()
        .to_string();
    let parsed = PasswordHash::new(&hash).unwrap();

    let mut group = criterion.benchmark_group("argon2id");
    group.sample_size(20);
    group.bench_function("hash", |b| {
        b.iter(|| {
            argon2
                .hash_password(black_box(PASSWORD.as_bytes()), &salt)
                .unwrap()
        })
    });
    group.bench_function("verify", |b| {
        b.iter(|| {
            argon2
                .verify_password(black_box(PASSWORD.as_bytes()), &parsed)
                .is_ok()
        })
    });
    group.finish();
    per_second("argon2id hash (one core)", 50, || {
        black_box(argon2.hash_password(PASSWORD.as_bytes(), &salt).unwrap());
    });
    per_second("argon2id verify (one core)", 50, || {
        black_box(argon2.verify_password(PASSWORD.as_bytes(), &parsed).is_ok());
    });
}

/// An `AuthService` over a fresh embedded store, as `Application` builds it
/// minus the HTTP server and Redis.
async fn service(dir: &tempfile::TempDir) -> AuthService {
    let db = Arc::new(
        Database::open(&DbConfig {
            mongodb_uri: None,
            data_dir: dir.path().to_path_buf(),
            brand: "bench".to_owned(),
            tenant: "default".to_owned(),
            service: "auth".to_owned(),
            naming: NamingStrategy::PerService,
            embedded: service_core::db::EmbeddedEngine::default(),
            pool: PoolSettings::default(),
        })
        .await
        .unwrap(),
    );
    let store = Store::open(db.clone()).await.unwrap();
    let relay = OutboxRelay::new(
        db,
        EventBus::in_process(BusConfig::default()),
        OutboxConfig::default(),
    );
    let issuer = TokenIssuer::new(SigningKey::generate("bench").unwrap(), jwt());
    let sessions = Sessions::new(
        store.clone(),
        SessionPolicy {
            ttl: Duration::from_secs(3600),
            grace: Duration::from_secs(10),
            cache_ttl: Duration::from_secs(60),
            access_ttl: Duration::from_secs(900),
        },
        LayeredCache::l1_only(CacheConfig::default()),
        SuccessorKey::random(),
        RevocationNotices {
            outbox: relay.waker(),
            tenant_id: "default".to_owned(),
        },
    );
    AuthService::new(AuthParts {
        store,
        hasher: PasswordHasher::new().await.unwrap(),
        issuer: Arc::new(issuer),
        access: Arc::new(access_engine::default_policy()),
        sessions,
        tenant_id: "default".to_owned(),
        throttle: Arc::new(AttemptCounter::new(
            "login",
            5,
            Duration::from_secs(900),
            None,
        )),
        lockout: LockoutPolicy {
            max_failures: 5,
            bursts: Arc::new(AttemptCounter::new(
                "login-bursts",
                3,
                Duration::from_secs(86_400),
                None,
            )),
            after_bursts: 3,
            base: Duration::from_secs(1800),
            max: Duration::from_secs(86_400),
        },
        otp: OtpPolicy {
            ttl: Duration::from_secs(300),
            max_tries: 5,
            limiter: RateLimiter::new("otp", 3, 1.0 / 60.0, None),
        },
        outbox: relay.waker(),
    })
}

fn jwt() -> JwtSettings {
    JwtSettings::new("payment-platform", "payment-platform-api")
}

/// `total` sign-ins split over `tasks` concurrent tasks; the elapsed time.
async fn logins(service: &AuthService, emails: &[String], tasks: usize, total: u64) -> Duration {
    let per_task = total.div_ceil(tasks as u64);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let service = service.clone();
            let email = emails[task].clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    let password = SecretString::from(PASSWORD.to_owned());
                    black_box(service.login(&email, password).await.unwrap());
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    // Scale to the iterations criterion asked for.
    start
        .elapsed()
        .mul_f64(total as f64 / (per_task * tasks as u64) as f64)
}

fn login_benches(criterion: &mut Criterion, runtime: &Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let service = runtime.block_on(service(&dir));
    let emails: Vec<String> = (0..2)
        .map(|n| {
            let email = format!("bench-{n}@example.com");
            runtime
                .block_on(service.register(NewUser {
                    email: email.clone(),
                    password: SecretString::from(PASSWORD.to_owned()),
                    username: None,
                }))
                .unwrap();
            email
        })
        .collect();

    let mut group = criterion.benchmark_group("login");
    group.sample_size(10);
    for tasks in [1, 2] {
        let name = if tasks == 1 { "1 task" } else { "2 tasks" };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| runtime.block_on(logins(&service, &emails, tasks, iters)))
        });
    }
    group.finish();
    for tasks in [1usize, 2] {
        let n = 60;
        let elapsed = runtime.block_on(logins(&service, &emails, tasks, n));
        println!(
            "login with {tasks} task(s): {:.1} per second",
            n as f64 / elapsed.as_secs_f64()
        );
    }
}

fn token_benches(criterion: &mut Criterion) {
    let key = SigningKey::generate("bench").unwrap();
    let verifier = TokenVerifier::new(KeySet::new().with(key.verifying_key()), jwt());
    let issuer = TokenIssuer::new(key, jwt());
    let token = issuer
        .issue(&TokenSubject {
            user_id: "0190c0de-0000-7000-8000-000000000001".to_owned(),
            tenant_id: "default".to_owned(),
            roles: vec!["user".to_owned()],
            permissions: vec!["user:read:own".to_owned(), "wallet:read:own".to_owned()],
            session_id: "0190c0de-0000-7000-8000-000000000002".to_owned(),
        })
        .unwrap()
        .token;
    assert!(verifier.verify(&token).is_ok());
    let first_use = || {
        TokenVerifier::new(verifier.keys().clone(), jwt())
            .verify(black_box(&token))
            .is_ok()
    };
    criterion.bench_function("access_token/verify", |b| b.iter(first_use));
    criterion.bench_function("access_token/verify_cached", |b| {
        b.iter(|| verifier.verify(black_box(&token)).is_ok())
    });
    per_second(
        "access-token verification, first use (one core)",
        5_000,
        || {
            black_box(first_use());
        },
    );
    per_second(
        "access-token verification, cached (one core)",
        20_000,
        || {
            black_box(verifier.verify(&token).is_ok());
        },
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    argon2_benches(&mut criterion);
    login_benches(&mut criterion, &runtime);
    token_benches(&mut criterion);
    criterion.final_summary();
}
