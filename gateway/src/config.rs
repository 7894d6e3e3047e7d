//! The gateway's settings, read from `GATEWAY_*` variables over defaults.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use service_core::config::{
    CommonConfig, ConfigError, ConfigSpec, LayeredConfig, Origin, StoredSetting,
};
use service_core::db::DbConfig;
use service_core::graphql::QueryLimits;

/// The service name of the gateway in `configs` and metrics.
pub const SERVICE: &str = "gateway";

/// The default listening address, as in the API contract.
pub const DEFAULT_ADDR: &str = "127.0.0.1:4000";

/// One subgraph the gateway composes: its name and GraphQL endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubgraphEndpoint {
    /// The subgraph's name (a `join__Graph` value after composition).
    pub name: String,
    /// Its `POST /graphql` URL.
    pub url: String,
}

impl SubgraphEndpoint {
    /// A subgraph called `name` served at `url`.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
        }
    }

    /// The URL of its readiness endpoint: `/health/ready` next to `/graphql`.
    pub fn health_url(&self) -> String {
        match self.url.strip_suffix("/graphql") {
            Some(base) => format!("{base}/health/ready"),
            None => format!("{}/health/ready", self.url.trim_end_matches('/')),
        }
    }
}

/// Parses `name=url,name=url`.
pub fn parse_subgraph_list(raw: &str) -> Result<Vec<SubgraphEndpoint>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| match item.split_once('=') {
            Some((name, url)) if !name.trim().is_empty() && !url.trim().is_empty() => {
                Ok(SubgraphEndpoint::new(name.trim(), url.trim()))
            }
            _ => Err(format!("`{item}` is not name=url")),
        })
        .collect()
}

/// The raw `GATEWAY_*` settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    addr: String,
    subgraphs: String,
    supergraph_path: String,
    supergraph_poll_ms: u64,
    limits_preset: String,
    max_complexity: usize,
    max_depth: usize,
    max_aliases: usize,
    max_batch: usize,
    list_multiplier: usize,
    body_limit_bytes: usize,
    subgraph_timeout_ms: u64,
    startup_timeout_secs: u64,
    plan_cache_size: usize,
    rate_limit_burst: u32,
    rate_limit_per_second: f64,
    breaker_failures: u32,
    breaker_reset_ms: u64,
    subgraph_dedupe: bool,
}

/// Everything the gateway needs besides the shared settings.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    /// Address to listen on.
    pub addr: String,
    /// The subgraphs to compose (empty: the caller supplies them).
    pub subgraphs: Vec<SubgraphEndpoint>,
    /// A pre-composed supergraph SDL file; when set, it is served instead
    /// of composing `subgraphs`, which then come from its `join__graph`s.
    pub supergraph_path: Option<std::path::PathBuf>,
    /// How often the supergraph file is checked for changes (file mode).
    pub supergraph_poll: Duration,
    /// Query limits applied before planning.
    pub limits: QueryLimits,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// How long one subgraph call may take.
    pub subgraph_timeout: Duration,
    /// How long start-up waits for every subgraph's SDL.
    pub startup_timeout: Duration,
    /// Most plans kept in the plan cache.
    pub plan_cache_size: usize,
    /// Requests a client may make in a burst.
    pub rate_limit_burst: u32,
    /// Requests per second a client's budget refills by.
    pub rate_limit_per_second: f64,
    /// Consecutive failed calls that open a subgraph's breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before probing again.
    pub breaker_reset: Duration,
    /// Whether identical subgraph fetches of queries in flight at the same
    /// time (same subgraph, same document and variables, same caller) share
    /// one call.
    pub subgraph_dedupe: bool,
    /// The gateway's own database (the config store behind `configs` and
    /// `setConfig`), from the storage variables for service `gateway`.
    /// `None`: those fields answer `MSCoreUnavailable`.
    pub database: Option<DbConfig>,
    /// The variables the settings were read from: `configs` resolves every
    /// service's keys against them, and stored settings are applied under
    /// them (a variable still wins over a stored value).
    pub vars: StartVars,
}

/// The start-up variables, kept for `configs` and stored settings. Their
/// `Debug` names how many there are, never their values (secrets among them).
#[derive(Clone, Default)]
pub struct StartVars(pub Vec<(String, String)>);

impl std::fmt::Debug for StartVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StartVars({} variables)", self.0.len())
    }
}

impl GatewaySettings {
    /// The keys, defaults and sensitivity of the gateway's settings.
    pub fn spec() -> ConfigSpec {
        let defaults = match json!({
            "addr": DEFAULT_ADDR,
            "subgraphs": "",
            "supergraph_path": "",
            "supergraph_poll_ms": 1_000,
            "limits_preset": "standard",
            "max_complexity": 0,
            "max_depth": 0,
            "max_aliases": 0,
            "max_batch": 0,
            "list_multiplier": 0,
            "body_limit_bytes": service_core::server::DEFAULT_BODY_LIMIT,
            "subgraph_timeout_ms": 10_000,
            "startup_timeout_secs": 60,
            "plan_cache_size": 1_000,
            "rate_limit_burst": 200,
            "rate_limit_per_second": 100.0,
            "breaker_failures": 5,
            "breaker_reset_ms": 5_000,
            "subgraph_dedupe": true,
        }) {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        ConfigSpec {
            service: SERVICE,
            env_prefix: Some("GATEWAY"),
            defaults,
            sensitive: &[],
        }
    }

    /// Reads the settings from the process environment, the database
    /// included (`MONGODB_URI`, else the embedded store under `DATA_DIR`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads the settings, the database included, from `vars` instead of
    /// the process environment, so tests that run in parallel each pass
    /// their own list.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let mut settings =
            Self::from_layers(&LayeredConfig::new(Self::spec()).with_env(vars.iter().cloned())?)?;
        let common: CommonConfig = LayeredConfig::new(CommonConfig::spec())
            .with_env(vars.iter().cloned())?
            .build()?;
        settings.database = Some(DbConfig::from_vars(SERVICE, &common, vars.iter().cloned())?);
        settings.vars = StartVars(vars);
        Ok(settings)
    }

    /// Overlays the keys stored through `setConfig` on these settings, as
    /// the layer under the environment: a key that an environment variable
    /// in `vars` sets keeps the environment's value. Answers the keys
    /// applied; a stored key this build has no field for is logged.
    pub fn apply_stored(
        &mut self,
        stored: Vec<StoredSetting>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<String>, ConfigError> {
        let layers = LayeredConfig::new(Self::spec())
            .with_stored(stored)?
            .with_env(vars)?;
        let resolved = Self::from_layers(&layers)?;
        let mut applied = Vec::new();
        for entry in layers.entries() {
            if entry.origin != Origin::Store {
                continue;
            }
            match entry.key.as_str() {
                "addr" => self.addr.clone_from(&resolved.addr),
                "subgraphs" => self.subgraphs.clone_from(&resolved.subgraphs),
                "supergraph_path" => self.supergraph_path.clone_from(&resolved.supergraph_path),
                "supergraph_poll_ms" => self.supergraph_poll = resolved.supergraph_poll,
                "limits_preset" | "max_complexity" | "max_depth" | "max_aliases" | "max_batch"
                | "list_multiplier" => self.limits = resolved.limits,
                "body_limit_bytes" => self.body_limit_bytes = resolved.body_limit_bytes,
                "subgraph_timeout_ms" => self.subgraph_timeout = resolved.subgraph_timeout,
                "startup_timeout_secs" => self.startup_timeout = resolved.startup_timeout,
                "plan_cache_size" => self.plan_cache_size = resolved.plan_cache_size,
                "rate_limit_burst" => self.rate_limit_burst = resolved.rate_limit_burst,
                "rate_limit_per_second" => {
                    self.rate_limit_per_second = resolved.rate_limit_per_second;
                }
                "breaker_failures" => self.breaker_failures = resolved.breaker_failures,
                "breaker_reset_ms" => self.breaker_reset = resolved.breaker_reset,
                "subgraph_dedupe" => self.subgraph_dedupe = resolved.subgraph_dedupe,
                other => {
                    tracing::warn!(
                        key = other,
                        "stored gateway setting has no field to apply to"
                    );
                    continue;
                }
            }
            applied.push(entry.key);
        }
        Ok(applied)
    }

    /// Builds the settings from resolved layers.
    pub fn from_layers(layers: &LayeredConfig) -> Result<Self, ConfigError> {
        let raw: RawSettings = layers.build()?;
        let invalid = |message: String| ConfigError::Invalid {
            service: SERVICE,
            message,
        };
        let mut limits = QueryLimits::preset(&raw.limits_preset).ok_or_else(|| {
            invalid(format!(
                "limits_preset must be strict, standard or relaxed, not `{}`",
                raw.limits_preset
            ))
        })?;
        if raw.max_complexity > 0 {
            limits.max_complexity = raw.max_complexity;
        }
        if raw.max_depth > 0 {
            limits.max_depth = raw.max_depth;
        }
        if raw.max_aliases > 0 {
            limits.max_aliases = raw.max_aliases;
        }
        if raw.max_batch > 0 {
            limits.max_batch = raw.max_batch;
        }
        if raw.list_multiplier > 0 {
            limits.list_multiplier = raw.list_multiplier;
        }
        let subgraphs = parse_subgraph_list(&raw.subgraphs).map_err(invalid)?;
        if !(raw.rate_limit_per_second.is_finite() && raw.rate_limit_per_second > 0.0) {
            return Err(invalid("rate_limit_per_second must be above 0".to_owned()));
        }
        Ok(Self {
            addr: raw.addr,
            subgraphs,
            supergraph_path: (!raw.supergraph_path.trim().is_empty())
                .then(|| std::path::PathBuf::from(raw.supergraph_path.trim())),
            supergraph_poll: Duration::from_millis(raw.supergraph_poll_ms.max(10)),
            limits,
            body_limit_bytes: raw.body_limit_bytes,
            subgraph_timeout: Duration::from_millis(raw.subgraph_timeout_ms.max(1)),
            startup_timeout: Duration::from_secs(raw.startup_timeout_secs),
            plan_cache_size: raw.plan_cache_size.max(1),
            rate_limit_burst: raw.rate_limit_burst.max(1),
            rate_limit_per_second: raw.rate_limit_per_second,
            breaker_failures: raw.breaker_failures.max(1),
            breaker_reset: Duration::from_millis(raw.breaker_reset_ms.max(1)),
            subgraph_dedupe: raw.subgraph_dedupe,
            database: None,
            vars: StartVars::default(),
        })
    }
}

/// The start mode flags given on the command line, which override the
/// `GATEWAY_SUBGRAPHS` and `GATEWAY_SUPERGRAPH_PATH` settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartFlags {
    /// `--supergraph <path>`: serve this pre-composed supergraph file.
    pub supergraph: Option<std::path::PathBuf>,
    /// `--subgraphs name=url,...`: compose these subgraphs (with
    /// `--supergraph`, they override the URLs the file names).
    pub subgraphs: Option<Vec<SubgraphEndpoint>>,
}

impl StartFlags {
    /// Parses `--supergraph <path>`, `--subgraphs <list>` (or the
    /// `--flag=value` forms); anything else is an error naming it.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut flags = Self::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    (flag.to_owned(), Some(value.to_owned()))
                }
                _ => (arg.clone(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .filter(|v| !v.trim().is_empty())
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--supergraph" => flags.supergraph = Some(std::path::PathBuf::from(value()?)),
                "--subgraphs" => flags.subgraphs = Some(parse_subgraph_list(&value()?)?),
                _ => return Err(format!("unknown argument `{arg}`")),
            }
        }
        Ok(flags)
    }

    /// Applies the flags over settings read from the environment.
    pub fn apply(self, settings: &mut GatewaySettings) {
        if let Some(path) = self.supergraph {
            settings.supergraph_path = Some(path);
        }
        if let Some(subgraphs) = self.subgraphs {
            settings.subgraphs = subgraphs;
        }
    }
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            addr: DEFAULT_ADDR.to_owned(),
            subgraphs: Vec::new(),
            supergraph_path: None,
            supergraph_poll: Duration::from_secs(1),
            limits: QueryLimits::standard(),
            body_limit_bytes: service_core::server::DEFAULT_BODY_LIMIT,
            subgraph_timeout: Duration::from_secs(10),
            startup_timeout: Duration::from_secs(60),
            plan_cache_size: 1_000,
            rate_limit_burst: 200,
            rate_limit_per_second: 100.0,
            breaker_failures: 5,
            breaker_reset: Duration::from_secs(5),
            subgraph_dedupe: true,
            database: None,
            vars: StartVars::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subgraph_lists_parse() {
        let list = parse_subgraph_list("a=http://x/graphql, b=http://y/graphql").unwrap();
        assert_eq!(list[1], SubgraphEndpoint::new("b", "http://y/graphql"));
        assert_eq!(list[0].health_url(), "http://x/health/ready");
        assert!(parse_subgraph_list("nonsense").is_err());
    }

    #[test]
    fn stored_keys_apply_under_the_environment() {
        let stored = |key: &str, value: Value| StoredSetting {
            id: format!("{SERVICE}:{key}"),
            service: SERVICE.to_owned(),
            key: key.to_owned(),
            value,
            updated_at: chrono::Utc::now(),
            updated_by: Some("admin-1".to_owned()),
        };
        let mut settings = GatewaySettings::default();
        let applied = settings
            .apply_stored(
                vec![
                    stored("max_depth", json!(4)),
                    stored("plan_cache_size", json!(7)),
                ],
                [("GATEWAY_PLAN_CACHE_SIZE".to_owned(), "9".to_owned())],
            )
            .unwrap();
        assert_eq!(applied, vec!["max_depth".to_owned()]);
        assert_eq!(settings.limits.max_depth, 4);
        assert_eq!(settings.plan_cache_size, 1_000);
    }

    #[test]
    fn start_flags_override_the_environment() {
        let args = [
            "--supergraph",
            "sg.graphql",
            "--subgraphs=a=http://a/graphql",
        ];
        let flags = StartFlags::parse(args.map(str::to_owned)).unwrap();
        let mut settings = GatewaySettings {
            subgraphs: vec![SubgraphEndpoint::new("b", "http://b/graphql")],
            ..GatewaySettings::default()
        };
        flags.apply(&mut settings);
        assert_eq!(
            settings.supergraph_path,
            Some(std::path::PathBuf::from("sg.graphql"))
        );
        assert_eq!(
            settings.subgraphs,
            vec![SubgraphEndpoint::new("a", "http://a/graphql")]
        );
        assert!(StartFlags::parse(["--supergraph".to_owned()]).is_err());
        assert!(StartFlags::parse(["--nope".to_owned()]).is_err());
    }

    #[test]
    fn presets_and_overrides() {
        let layers = LayeredConfig::new(GatewaySettings::spec())
            .with_env([
                ("GATEWAY_LIMITS_PRESET".to_owned(), "strict".to_owned()),
                ("GATEWAY_MAX_ALIASES".to_owned(), "3".to_owned()),
            ])
            .unwrap();
        let settings = GatewaySettings::from_layers(&layers).unwrap();
        assert_eq!(settings.limits.max_depth, 5);
        assert_eq!(settings.limits.max_aliases, 3);
    }
}
