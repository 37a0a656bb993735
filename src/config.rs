//! Configuration: parsed once into typed values and validated at start.
//!
//! Every setting is a flag, an environment variable and a key of the optional TOML file.
//! Flags win over the environment (clap handles both), and both win over the file.

use std::{net::SocketAddr, path::Path, time::Duration};

use clap::{Args, ValueEnum};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{
    dispatch::DispatchConfig,
    domain::retry::RetryPolicy,
    domain::BreakerPolicy,
    ops::{
        alerts::{AlertConfig, AlertFormat},
        health::Thresholds,
    },
};

/// Why configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid value for {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Which parts of hookrelay this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The HTTP API (and dashboard) only.
    Api,
    /// The dispatcher only.
    Dispatcher,
    /// Both.
    #[default]
    All,
}

impl Role {
    pub fn runs_api(self) -> bool {
        matches!(self, Role::Api | Role::All)
    }
    pub fn runs_dispatcher(self) -> bool {
        matches!(self, Role::Dispatcher | Role::All)
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 5m, 6h)"))
}

/// A secret setting: kept in a type whose `Debug` never shows it.
fn parse_secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s))
}

/// The store location: shared by `serve` and `migrate`.
#[derive(Debug, Clone, Args, Default)]
pub struct StoreArgs {
    /// Store URL: `sqlite://PATH` (created if missing) or `postgres://…`.
    /// [default: sqlite://hookrelay.db]
    #[arg(long, env = "HOOKRELAY_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Most connections this process opens to PostgreSQL. [default: 10]
    #[arg(long, env = "HOOKRELAY_DATABASE_POOL_SIZE")]
    pub database_pool_size: Option<u32>,

    /// PostgreSQL schema that holds hookrelay's tables. [default: hookrelay, or the schema
    /// where an installation made before schemas keeps them]
    #[arg(long, env = "HOOKRELAY_PG_SCHEMA")]
    pub pg_schema: Option<String>,

    /// PostgreSQL schema where the `dispatch_webhook()` functions that applications call
    /// are installed. [default: public]
    #[arg(long, env = "HOOKRELAY_PG_FUNCTION_SCHEMA")]
    pub pg_function_schema: Option<String>,
}

/// Settings of `hookrelay serve`. Each is optional here so that the config file can fill it.
#[derive(Debug, Clone, Args, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Address the API listens on. [default: 127.0.0.1:8400]
    #[arg(long, env = "HOOKRELAY_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Admin bearer token. When unset, one is generated on first start and printed once.
    #[arg(long, env = "HOOKRELAY_ADMIN_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub admin_token: Option<SecretString>,

    /// Network that HTTP destinations may reach although it is private (repeatable).
    #[arg(
        long = "allow-network",
        value_name = "CIDR",
        env = "HOOKRELAY_ALLOW_NETWORKS",
        value_delimiter = ','
    )]
    pub allow_networks: Vec<IpNet>,

    /// Which parts run in this process. [default: all]
    #[arg(long, env = "HOOKRELAY_ROLE", value_enum)]
    pub role: Option<Role>,

    /// Largest accepted request body, in bytes. [default: 1048576]
    #[arg(long, env = "HOOKRELAY_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Attempts per delivery before it fails for good (endpoints may override). [default: 15]
    #[arg(long, env = "HOOKRELAY_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,

    /// First retry delay before jitter; doubles each attempt. [default: 10s]
    #[arg(long, env = "HOOKRELAY_RETRY_BASE", value_parser = parse_duration)]
    pub retry_base: Option<Duration>,

    /// Longest delay between two attempts. [default: 6h]
    #[arg(long, env = "HOOKRELAY_RETRY_MAX_DELAY", value_parser = parse_duration)]
    pub retry_max_delay: Option<Duration>,

    /// Deliveries in flight at once in this process. [default: 256]
    #[arg(long, env = "HOOKRELAY_CONCURRENCY")]
    pub concurrency: Option<usize>,

    /// Deliveries in flight at once to one endpoint, per process: a slow endpoint cannot
    /// take every slot. [default: 128]
    #[arg(long, env = "HOOKRELAY_ENDPOINT_CONCURRENCY")]
    pub endpoint_concurrency: Option<usize>,

    /// Deliveries in flight at once for one tenant, per process: a tenant with slow
    /// endpoints cannot take every slot. [default: three quarters of --concurrency]
    #[arg(long, env = "HOOKRELAY_TENANT_CONCURRENCY")]
    pub tenant_concurrency: Option<usize>,

    /// Timeout of one HTTP delivery attempt. [default: 30s]
    #[arg(long, env = "HOOKRELAY_REQUEST_TIMEOUT", value_parser = parse_duration)]
    pub request_timeout: Option<Duration>,

    /// How long a claimed delivery stays leased; after that another worker takes it. Must
    /// exceed the request timeout. [default: 90s]
    #[arg(long, env = "HOOKRELAY_LEASE", value_parser = parse_duration)]
    pub lease: Option<Duration>,

    /// Attempts of delivered deliveries older than this are pruned, in small batches.
    /// [default: 30days]
    #[arg(long, env = "HOOKRELAY_RETENTION", value_parser = parse_duration)]
    pub retention: Option<Duration>,

    /// After a secret rotation, how long the old secret keeps signing too. [default: 24h]
    #[arg(long, env = "HOOKRELAY_ROTATION_GRACE", value_parser = parse_duration)]
    pub rotation_grace: Option<Duration>,

    /// Key that encrypts endpoint secrets at rest: base64 of 32 random bytes (e.g.
    /// `openssl rand -base64 32`). Repeatable: the first encrypts, all decrypt, so a key
    /// can be rotated; secrets are re-encrypted with the first key at start.
    #[arg(
        long = "encryption-key",
        value_name = "BASE64",
        env = "HOOKRELAY_ENCRYPTION_KEYS",
        value_delimiter = ',',
        hide_env_values = true,
        value_parser = parse_secret
    )]
    pub encryption_keys: Vec<SecretString>,

    /// Refuse events (and endpoint filters) naming a type that is not in the catalog.
    #[arg(long, env = "HOOKRELAY_STRICT_EVENT_TYPES")]
    pub strict_event_types: bool,

    /// Most endpoints one tenant may have. [default: 1000]
    #[arg(long, env = "HOOKRELAY_MAX_ENDPOINTS_PER_TENANT")]
    pub max_endpoints_per_tenant: Option<u32>,

    /// DNS server that resolves HTTP destination hosts (IP:PORT, UDP and TCP) instead of
    /// the system resolver. [default: the system resolver]
    #[arg(long, env = "HOOKRELAY_DNS_SERVER")]
    pub dns_server: Option<SocketAddr>,

    /// Consecutive failures that open an endpoint's circuit breaker. [default: 5]
    #[arg(long, env = "HOOKRELAY_BREAKER_THRESHOLD")]
    pub breaker_threshold: Option<u32>,

    /// How long an open breaker waits before one probe (±20 % jitter). [default: 5m]
    #[arg(long, env = "HOOKRELAY_BREAKER_COOLDOWN", value_parser = parse_duration)]
    pub breaker_cooldown: Option<Duration>,

    /// An endpoint failing continuously for longer than this is disabled. [default: 5days]
    #[arg(long, env = "HOOKRELAY_DISABLE_AFTER", value_parser = parse_duration)]
    pub disable_after: Option<Duration>,

    /// Safety-net poll interval of the dispatcher (wake-ups are immediate). [default: 5s]
    #[arg(long, env = "HOOKRELAY_POLL_INTERVAL", value_parser = parse_duration)]
    pub poll_interval: Option<Duration>,

    #[command(flatten)]
    pub alerts: AlertArgs,
}

/// Alert settings of `hookrelay serve`.
#[derive(Debug, Clone, Args, Default)]
pub struct AlertArgs {
    /// URL that alerts are delivered to, signed and retried like any delivery (repeatable):
    /// http(s):// or smtp:// (email); ending in `#critical`, the sink gets critical alerts only.
    #[arg(
        long = "alert-sink",
        value_name = "URL",
        env = "HOOKRELAY_ALERT_SINKS",
        value_delimiter = ','
    )]
    pub alert_sinks: Vec<url::Url>,

    /// Body of alert deliveries: `json` (the webhook envelope) or `slack` (`{"text": …}`).
    /// [default: json]
    #[arg(long, env = "HOOKRELAY_ALERT_FORMAT", value_enum)]
    pub alert_format: Option<AlertFormat>,

    /// How often the alert rules are checked. [default: 30s]
    #[arg(long, env = "HOOKRELAY_ALERT_INTERVAL", value_parser = parse_duration)]
    pub alert_interval: Option<Duration>,

    /// Percentage of failed attempts in the last hour above which the failure-rate alert
    /// fires. [default: 50]
    #[arg(long, env = "HOOKRELAY_ALERT_FAILURE_RATE")]
    pub alert_failure_rate: Option<f64>,

    /// Attempts in the last hour below which the failure rate is not judged. [default: 10]
    #[arg(long, env = "HOOKRELAY_ALERT_MIN_ATTEMPTS")]
    pub alert_min_attempts: Option<u64>,

    /// Pending deliveries above which the pending alert fires. [default: 100]
    #[arg(long, env = "HOOKRELAY_ALERT_PENDING")]
    pub alert_pending: Option<u64>,

    /// A running dispatcher silent for longer than this is stalled. [default: 5m]
    #[arg(long, env = "HOOKRELAY_ALERT_STALL", value_parser = parse_duration)]
    pub alert_stall: Option<Duration>,
}

/// The TOML file: the same keys as the flags, in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    database_url: Option<String>,
    database_pool_size: Option<u32>,
    pg_schema: Option<String>,
    pg_function_schema: Option<String>,
    listen: Option<SocketAddr>,
    admin_token: Option<SecretString>,
    #[serde(default)]
    allow_networks: Vec<IpNet>,
    role: Option<Role>,
    max_body_bytes: Option<usize>,
    max_attempts: Option<u32>,
    #[serde(default, with = "humantime_opt")]
    retry_base: Option<Duration>,
    #[serde(default, with = "humantime_opt")]
    retry_max_delay: Option<Duration>,
    concurrency: Option<usize>,
    endpoint_concurrency: Option<usize>,
    tenant_concurrency: Option<usize>,
    #[serde(default, with = "humantime_opt")]
    request_timeout: Option<Duration>,
    #[serde(default, with = "humantime_opt")]
    lease: Option<Duration>,
    #[serde(default, with = "humantime_opt")]
    poll_interval: Option<Duration>,
    #[serde(default, with = "humantime_opt")]
    retention: Option<Duration>,
    breaker_threshold: Option<u32>,
    #[serde(default, with = "humantime_opt")]
    rotation_grace: Option<Duration>,
    #[serde(default, with = "humantime_opt")]
    breaker_cooldown: Option<Duration>,
    #[serde(default, with = "humantime_opt")]
    disable_after: Option<Duration>,
    #[serde(default)]
    encryption_keys: Vec<SecretString>,
    strict_event_types: Option<bool>,
    max_endpoints_per_tenant: Option<u32>,
    dns_server: Option<SocketAddr>,
    #[serde(default)]
    alert_sinks: Vec<url::Url>,
    alert_format: Option<AlertFormat>,
    #[serde(default, with = "humantime_opt")]
    alert_interval: Option<Duration>,
    alert_failure_rate: Option<f64>,
    alert_min_attempts: Option<u64>,
    alert_pending: Option<u64>,
    #[serde(default, with = "humantime_opt")]
    alert_stall: Option<Duration>,
}

mod humantime_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Fully resolved configuration of a server process. Its `Debug` output hides the admin
/// token, the encryption keys and passwords in URLs.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub database_pool_size: u32,
    /// Where hookrelay's objects live on PostgreSQL.
    pub pg_schemas: crate::store::PgSchemas,
    pub admin_token: Option<SecretString>,
    pub allow_networks: Vec<IpNet>,
    pub role: Role,
    pub max_body_bytes: usize,
    /// Age after which attempts of delivered deliveries are pruned.
    pub retention: Duration,
    /// How long the previous secret keeps signing after a rotation.
    pub rotation_grace: Duration,
    /// Keys for endpoint secrets at rest, base64; the first encrypts. Empty: plaintext.
    pub encryption_keys: Vec<SecretString>,
    pub strict_event_types: bool,
    pub max_endpoints_per_tenant: u32,
    /// Resolver for HTTP destinations; `None` is the system resolver.
    pub dns_server: Option<SocketAddr>,
    pub retry: RetryPolicy,
    pub breaker: BreakerPolicy,
    pub dispatch: DispatchConfig,
    /// Alert sinks, format and rule thresholds.
    pub alerts: AlertConfig,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sinks: Vec<_> = self
            .alerts
            .sinks
            .iter()
            .map(|u| crate::secrets::redact_url(u.as_str()).into_owned())
            .collect();
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field(
                "database_url",
                &crate::secrets::redact_url(&self.database_url),
            )
            .field("database_pool_size", &self.database_pool_size)
            .field("pg_schemas", &self.pg_schemas)
            .field("admin_token", &self.admin_token)
            .field("allow_networks", &self.allow_networks)
            .field("role", &self.role)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("retention", &self.retention)
            .field("rotation_grace", &self.rotation_grace)
            .field("encryption_keys", &self.encryption_keys)
            .field("strict_event_types", &self.strict_event_types)
            .field("max_endpoints_per_tenant", &self.max_endpoints_per_tenant)
            .field("dns_server", &self.dns_server)
            .field("retry", &self.retry)
            .field("breaker", &self.breaker)
            .field("dispatch", &self.dispatch)
            .field("alert_sinks", &sinks)
            .field("alert_format", &self.alerts.format)
            .field("alert_interval", &self.alerts.interval)
            .field("alert_thresholds", &self.alerts.thresholds)
            .finish()
    }
}

/// Shortest admin token accepted.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://hookrelay.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8400";

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8400)),
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            database_pool_size: 10,
            pg_schemas: Default::default(),
            admin_token: None,
            allow_networks: Vec::new(),
            role: Role::All,
            max_body_bytes: 1024 * 1024,
            retention: Duration::from_secs(30 * 24 * 3600),
            rotation_grace: Duration::from_secs(24 * 3600),
            encryption_keys: Vec::new(),
            strict_event_types: false,
            max_endpoints_per_tenant: 1000,
            dns_server: None,
            retry: RetryPolicy::default(),
            breaker: BreakerPolicy::default(),
            dispatch: DispatchConfig {
                concurrency: 256,
                endpoint_concurrency: 128,
                tenant_concurrency: None,
                batch_size: 256,
                lease: Duration::from_secs(90),
                poll_interval: Duration::from_secs(5),
                request_timeout: Duration::from_secs(30),
                connect_timeout: Duration::from_secs(10),
                pubsub_emulator_host: None,
            },
            alerts: AlertConfig::default(),
        }
    }
}

impl Config {
    /// Resolves flags and environment (already in `args`) over the optional file over defaults.
    pub fn resolve(args: ServeArgs, file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut file = match file {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let d = Config::default();
        let alerts = resolve_alerts(args.alerts, &mut file, d.alerts.clone());
        let allow_networks = if args.allow_networks.is_empty() {
            file.allow_networks
        } else {
            args.allow_networks
        };
        let config = Config {
            listen: args.listen.or(file.listen).unwrap_or(d.listen),
            database_url: args
                .store
                .database_url
                .or(file.database_url)
                .unwrap_or(d.database_url),
            database_pool_size: args
                .store
                .database_pool_size
                .or(file.database_pool_size)
                .unwrap_or(d.database_pool_size),
            pg_schemas: crate::store::PgSchemas {
                tables: args.store.pg_schema.or(file.pg_schema),
                functions: args
                    .store
                    .pg_function_schema
                    .or(file.pg_function_schema)
                    .unwrap_or(d.pg_schemas.functions),
            },
            admin_token: args.admin_token.or(file.admin_token),
            allow_networks,
            role: args.role.or(file.role).unwrap_or(d.role),
            max_body_bytes: args
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(d.max_body_bytes),
            retention: args.retention.or(file.retention).unwrap_or(d.retention),
            rotation_grace: args
                .rotation_grace
                .or(file.rotation_grace)
                .unwrap_or(d.rotation_grace),
            encryption_keys: if args.encryption_keys.is_empty() {
                file.encryption_keys
            } else {
                args.encryption_keys
            },
            strict_event_types: args.strict_event_types
                || file.strict_event_types.unwrap_or(d.strict_event_types),
            max_endpoints_per_tenant: args
                .max_endpoints_per_tenant
                .or(file.max_endpoints_per_tenant)
                .unwrap_or(d.max_endpoints_per_tenant),
            dns_server: args.dns_server.or(file.dns_server),
            retry: RetryPolicy {
                base: args.retry_base.or(file.retry_base).unwrap_or(d.retry.base),
                max_delay: args
                    .retry_max_delay
                    .or(file.retry_max_delay)
                    .unwrap_or(d.retry.max_delay),
                max_attempts: args
                    .max_attempts
                    .or(file.max_attempts)
                    .unwrap_or(d.retry.max_attempts),
            },
            breaker: BreakerPolicy {
                threshold: args
                    .breaker_threshold
                    .or(file.breaker_threshold)
                    .unwrap_or(d.breaker.threshold),
                cooldown: args
                    .breaker_cooldown
                    .or(file.breaker_cooldown)
                    .unwrap_or(d.breaker.cooldown),
                disable_after: args
                    .disable_after
                    .or(file.disable_after)
                    .unwrap_or(d.breaker.disable_after),
            },
            dispatch: DispatchConfig {
                concurrency: args
                    .concurrency
                    .or(file.concurrency)
                    .unwrap_or(d.dispatch.concurrency),
                endpoint_concurrency: args
                    .endpoint_concurrency
                    .or(file.endpoint_concurrency)
                    .unwrap_or(d.dispatch.endpoint_concurrency),
                tenant_concurrency: args.tenant_concurrency.or(file.tenant_concurrency),
                batch_size: d.dispatch.batch_size,
                lease: args.lease.or(file.lease).unwrap_or(d.dispatch.lease),
                poll_interval: args
                    .poll_interval
                    .or(file.poll_interval)
                    .unwrap_or(d.dispatch.poll_interval),
                request_timeout: args
                    .request_timeout
                    .or(file.request_timeout)
                    .unwrap_or(d.dispatch.request_timeout),
                connect_timeout: d.dispatch.connect_timeout,
                pubsub_emulator_host: std::env::var("PUBSUB_EMULATOR_HOST")
                    .ok()
                    .filter(|h| !h.is_empty()),
            },
            alerts,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the relations between settings that no single parser can.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if let Some(token) = &self.admin_token {
            if token.expose_secret().chars().count() < MIN_ADMIN_TOKEN_LEN {
                return invalid(
                    "admin_token",
                    "must be at least 32 characters (e.g. `openssl rand -hex 32`)",
                );
            }
        }
        if !(1..=1000).contains(&self.retry.max_attempts) {
            return invalid("max_attempts", "must be between 1 and 1000");
        }
        if self.retry.base.is_zero() || self.retry.max_delay < self.retry.base {
            return invalid(
                "retry_base",
                "must be above zero and not above retry_max_delay",
            );
        }
        if let Some(s) = &self.pg_schemas.tables {
            if !crate::store::valid_schema_name(s) {
                return invalid("pg_schema", crate::store::SCHEMA_NAME_RULE);
            }
        }
        if !crate::store::valid_schema_name(&self.pg_schemas.functions) {
            return invalid("pg_function_schema", crate::store::SCHEMA_NAME_RULE);
        }
        if !(1..=1000).contains(&self.database_pool_size) {
            return invalid("database_pool_size", "must be between 1 and 1000");
        }
        if self.dispatch.concurrency == 0
            || self.dispatch.endpoint_concurrency == 0
            || self.dispatch.tenant_concurrency == Some(0)
        {
            return invalid("concurrency", "must be at least 1");
        }
        if self.max_body_bytes < 1024 {
            return invalid("max_body_bytes", "must be at least 1024");
        }
        if self.dispatch.lease <= self.dispatch.request_timeout + Duration::from_secs(1) {
            return invalid(
                "lease",
                "must be more than one second longer than request_timeout",
            );
        }
        if self.breaker.threshold == 0 || self.breaker.cooldown.is_zero() {
            return invalid(
                "breaker_threshold",
                "the breaker threshold and cool-down must be above zero",
            );
        }
        if self.retention < Duration::from_secs(60) {
            return invalid("retention", "must be at least one minute");
        }
        if self.dispatch.poll_interval.is_zero() {
            return invalid("poll_interval", "must be above zero");
        }
        if !(0.0..=1.0).contains(&self.alerts.thresholds.failure_rate) {
            return invalid("alert_failure_rate", "must be a percentage from 0 to 100");
        }
        if self.alerts.interval.is_zero() || self.alerts.thresholds.stall.is_zero() {
            return invalid(
                "alert_interval",
                "the alert interval and stall time must be above zero",
            );
        }
        for sink in &self.alerts.sinks {
            if let Err(message) = crate::ops::alerts::check_sink(sink) {
                return invalid("alert_sinks", &message);
            }
        }
        if !(self.database_url.starts_with("sqlite:") || self.database_url.starts_with("postgres"))
        {
            return invalid("database_url", "must start with sqlite:// or postgres://");
        }
        Ok(())
    }
}

/// Alert settings: flags and environment over the file over defaults.
fn resolve_alerts(args: AlertArgs, file: &mut FileConfig, d: AlertConfig) -> AlertConfig {
    let sinks = if args.alert_sinks.is_empty() {
        std::mem::take(&mut file.alert_sinks)
    } else {
        args.alert_sinks
    };
    AlertConfig {
        sinks,
        format: args.alert_format.or(file.alert_format).unwrap_or(d.format),
        interval: args
            .alert_interval
            .or(file.alert_interval)
            .unwrap_or(d.interval),
        thresholds: Thresholds {
            failure_rate: args
                .alert_failure_rate
                .or(file.alert_failure_rate)
                .map(|p| p / 100.0)
                .unwrap_or(d.thresholds.failure_rate),
            min_attempts: args
                .alert_min_attempts
                .or(file.alert_min_attempts)
                .unwrap_or(d.thresholds.min_attempts),
            pending: args
                .alert_pending
                .or(file.alert_pending)
                .unwrap_or(d.thresholds.pending),
            stall: args
                .alert_stall
                .or(file.alert_stall)
                .unwrap_or(d.thresholds.stall),
        },
    }
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.display().to_string(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "listen = \"127.0.0.1:9000\"\nmax_attempts = 3\nretry_base = \"2s\"\nallow_networks = [\"10.0.0.0/8\"]"
        )
        .unwrap();
        let args = ServeArgs {
            max_attempts: Some(7),
            ..Default::default()
        };
        let c = Config::resolve(args, Some(file.path())).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.retry.max_attempts, 7);
        assert_eq!(c.retry.base, Duration::from_secs(2));
        assert_eq!(c.allow_networks.len(), 1);
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
    }

    #[test]
    fn alert_settings_come_from_flags_and_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "alert_sinks = [\"https://hooks.example.com/a\"]\nalert_format = \"slack\"\nalert_pending = 7\nalert_stall = \"2m\""
        )
        .unwrap();
        let args = ServeArgs {
            alerts: AlertArgs {
                alert_failure_rate: Some(25.0),
                ..Default::default()
            },
            ..Default::default()
        };
        let c = Config::resolve(args, Some(file.path())).unwrap();
        assert_eq!(c.alerts.sinks.len(), 1);
        assert_eq!(c.alerts.format, AlertFormat::Slack);
        assert_eq!(c.alerts.thresholds.pending, 7);
        assert_eq!(c.alerts.thresholds.stall, Duration::from_secs(120));
        assert_eq!(c.alerts.thresholds.failure_rate, 0.25);
        assert_eq!(c.alerts.interval, Duration::from_secs(30));
        let args = ServeArgs {
            alerts: AlertArgs {
                alert_failure_rate: Some(150.0),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(Config::resolve(args, None).is_err());
    }

    #[test]
    fn tenant_concurrency_defaults_to_three_quarters_and_comes_from_the_file() {
        let c = Config::resolve(
            ServeArgs {
                concurrency: Some(8),
                ..Default::default()
            },
            None,
        )
        .unwrap();
        assert_eq!(c.dispatch.tenant_limit(), 6);
        assert_eq!(Config::default().dispatch.tenant_limit(), 192);
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "tenant_concurrency = 3").unwrap();
        let c = Config::resolve(ServeArgs::default(), Some(file.path())).unwrap();
        assert_eq!(c.dispatch.tenant_limit(), 3);
        let args = ServeArgs {
            tenant_concurrency: Some(0),
            ..Default::default()
        };
        assert!(Config::resolve(args, None).is_err());
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "lisen = \"127.0.0.1:9000\"").unwrap();
        let err = Config::resolve(ServeArgs::default(), Some(file.path())).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn inconsistent_settings_are_refused() {
        let args = ServeArgs {
            lease: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        assert!(Config::resolve(args, None).is_err());
        let args = ServeArgs {
            admin_token: Some("short".into()),
            ..Default::default()
        };
        assert!(Config::resolve(args, None).is_err());
        // 27 characters passed before; 32 is the least now.
        let args = ServeArgs {
            admin_token: Some("test-admin-token-0123456789".into()),
            ..Default::default()
        };
        let err = Config::resolve(args, None).unwrap_err().to_string();
        assert!(err.contains("at least 32 characters"), "{err}");
        let args = ServeArgs {
            admin_token: Some("a".repeat(32).into()),
            ..Default::default()
        };
        assert!(Config::resolve(args, None).is_ok());
    }

    #[test]
    fn debug_output_hides_credentials() {
        let config = Config {
            database_url: "postgres://app:db-password-1@127.0.0.1/hr".into(),
            admin_token: Some("admin-token-never-printed-0123456789".into()),
            encryption_keys: vec!["key-never-printed".into()],
            ..Config::default()
        };
        let shown = format!("{config:?}");
        for secret in [
            "db-password-1",
            "admin-token-never-printed",
            "key-never-printed",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("postgres://app:***@127.0.0.1/hr"), "{shown}");
    }
}
