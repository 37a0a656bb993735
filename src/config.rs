//! Configuration: parsed once into typed values and validated at start.
//!
//! Every setting of `hookrelay serve` is declared once, in [`ServeArgs`] (with [`StoreArgs`]
//! and [`AlertArgs`]): its flag, its environment variable, its default, and its key in the
//! optional TOML file (the field name). Flags win over the environment (clap handles both),
//! both win over the file, and the file wins over the built-in defaults: each value of the
//! file becomes the default of its argument before clap parses ([`FileValues`]).
//! [`Config`] is the typed, validated result that the rest of the program uses.

use std::{net::SocketAddr, path::Path, time::Duration};

use clap::{ArgAction, Args, Command, FromArgMatches, ValueEnum};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};

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
    #[error("unknown key `{key}` in config file {path}: not a setting of `hookrelay serve`")]
    UnknownKey { key: String, path: String },
    #[error("invalid value for `{key}` in config file {path}: {message}")]
    FileValue {
        key: String,
        path: String,
        message: String,
    },
    #[error("invalid value for {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Which parts of hookrelay this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
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

/// Shortest admin token accepted.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://hookrelay.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8400";

/// The store location: shared by `serve` and `migrate`.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Store URL: `sqlite://PATH` (created if missing) or `postgres://…`.
    #[arg(long, env = "HOOKRELAY_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Most connections this process opens to PostgreSQL.
    #[arg(long, env = "HOOKRELAY_DATABASE_POOL_SIZE", default_value_t = 10)]
    pub database_pool_size: u32,

    /// PostgreSQL schema that holds hookrelay's tables. [default: hookrelay, or the schema
    /// where an installation made before schemas keeps them]
    #[arg(long, env = "HOOKRELAY_PG_SCHEMA")]
    pub pg_schema: Option<String>,

    /// PostgreSQL schema where the `dispatch_webhook()` functions that applications call
    /// are installed.
    #[arg(long, env = "HOOKRELAY_PG_FUNCTION_SCHEMA", default_value = "public")]
    pub pg_function_schema: String,
}

/// Settings of `hookrelay serve`: the one declaration of each setting. The field names are
/// the keys of the config file.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Address the API listens on.
    #[arg(long, env = "HOOKRELAY_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

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

    /// Which parts run in this process.
    #[arg(long, env = "HOOKRELAY_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "HOOKRELAY_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Attempts per delivery before it fails for good (endpoints may override).
    #[arg(long, env = "HOOKRELAY_MAX_ATTEMPTS", default_value_t = 15)]
    pub max_attempts: u32,

    /// First retry delay before jitter; doubles each attempt.
    #[arg(long, env = "HOOKRELAY_RETRY_BASE", value_parser = parse_duration, default_value = "10s")]
    pub retry_base: Duration,

    /// Longest delay between two attempts.
    #[arg(long, env = "HOOKRELAY_RETRY_MAX_DELAY", value_parser = parse_duration, default_value = "6h")]
    pub retry_max_delay: Duration,

    /// Deliveries in flight at once in this process.
    #[arg(long, env = "HOOKRELAY_CONCURRENCY", default_value_t = 256)]
    pub concurrency: usize,

    /// Deliveries in flight at once to one endpoint, per process: a slow endpoint cannot
    /// take every slot.
    #[arg(long, env = "HOOKRELAY_ENDPOINT_CONCURRENCY", default_value_t = 128)]
    pub endpoint_concurrency: usize,

    /// Deliveries in flight at once for one tenant, per process: a tenant with slow
    /// endpoints cannot take every slot. [default: three quarters of --concurrency]
    #[arg(long, env = "HOOKRELAY_TENANT_CONCURRENCY")]
    pub tenant_concurrency: Option<usize>,

    /// Timeout of one HTTP delivery attempt.
    #[arg(long, env = "HOOKRELAY_REQUEST_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub request_timeout: Duration,

    /// How long a claimed delivery stays leased; after that another worker takes it. Must
    /// exceed the request timeout.
    #[arg(long, env = "HOOKRELAY_LEASE", value_parser = parse_duration, default_value = "90s")]
    pub lease: Duration,

    /// Attempts of delivered deliveries older than this are pruned, in small batches.
    #[arg(long, env = "HOOKRELAY_RETENTION", value_parser = parse_duration, default_value = "30days")]
    pub retention: Duration,

    /// After a secret rotation, how long the old secret keeps signing too.
    #[arg(long, env = "HOOKRELAY_ROTATION_GRACE", value_parser = parse_duration, default_value = "24h")]
    pub rotation_grace: Duration,

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

    /// Most endpoints one tenant may have.
    #[arg(
        long,
        env = "HOOKRELAY_MAX_ENDPOINTS_PER_TENANT",
        default_value_t = 1000
    )]
    pub max_endpoints_per_tenant: u32,

    /// DNS server that resolves HTTP destination hosts (IP:PORT, UDP and TCP) instead of
    /// the system resolver. [default: the system resolver]
    #[arg(long, env = "HOOKRELAY_DNS_SERVER")]
    pub dns_server: Option<SocketAddr>,

    /// HTTP(S) proxy that HTTP deliveries and OAuth2 token requests leave through,
    /// `http://[user:password@]host:port`, so receivers see one source address. The network
    /// rules still apply to every destination, checked before the proxy is asked.
    /// [default: none; HTTP_PROXY and the like are never used]
    #[arg(long, value_name = "URL", env = "HOOKRELAY_EGRESS_PROXY", hide_env_values = true, value_parser = parse_secret)]
    pub egress_proxy: Option<SecretString>,

    /// Destinations that bypass --egress-proxy, comma-separated: host names (a name covers
    /// its subdomains; `.example.com` only them), IP addresses, networks (`10.0.0.0/8`),
    /// or `*`.
    #[arg(
        long,
        value_name = "LIST",
        env = "HOOKRELAY_EGRESS_NO_PROXY",
        value_delimiter = ','
    )]
    pub egress_no_proxy: Vec<String>,

    /// Consecutive failures that open an endpoint's circuit breaker.
    #[arg(long, env = "HOOKRELAY_BREAKER_THRESHOLD", default_value_t = 5)]
    pub breaker_threshold: u32,

    /// How long an open breaker waits before one probe (±20 % jitter).
    #[arg(long, env = "HOOKRELAY_BREAKER_COOLDOWN", value_parser = parse_duration, default_value = "5m")]
    pub breaker_cooldown: Duration,

    /// An endpoint failing continuously for longer than this is disabled.
    #[arg(long, env = "HOOKRELAY_DISABLE_AFTER", value_parser = parse_duration, default_value = "5days")]
    pub disable_after: Duration,

    /// Safety-net poll interval of the dispatcher (wake-ups are immediate).
    #[arg(long, env = "HOOKRELAY_POLL_INTERVAL", value_parser = parse_duration, default_value = "5s")]
    pub poll_interval: Duration,

    #[command(flatten)]
    pub alerts: AlertArgs,

    #[command(flatten)]
    pub portal: PortalArgs,
}

/// Consumer portal settings of `hookrelay serve`.
#[derive(Debug, Clone, Args)]
pub struct PortalArgs {
    /// The address users reach this server at, e.g. `https://hooks.example.com`: the base
    /// of portal links. [default: the address each request for a link was sent to]
    #[arg(long, value_name = "URL", env = "HOOKRELAY_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<url::Url>,

    /// Longest lifetime a portal link may be given.
    #[arg(long, env = "HOOKRELAY_PORTAL_MAX_LIFETIME", value_parser = parse_duration, default_value = "7days")]
    pub portal_max_lifetime: Duration,

    /// Origins whose pages may show the portal in an iframe, comma-separated
    /// (`https://app.example.com`). [default: none, the portal is a page of its own]
    #[arg(
        long,
        value_name = "ORIGINS",
        env = "HOOKRELAY_PORTAL_FRAME_ANCESTORS",
        value_delimiter = ',',
        value_parser = parse_origin
    )]
    pub portal_frame_ancestors: Vec<String>,

    /// The name the portal shows its users (the operator's product).
    #[arg(long, env = "HOOKRELAY_PORTAL_NAME", default_value = "Webhooks")]
    pub portal_name: String,

    /// The portal's accent colour, `#rrggbb`.
    #[arg(long, env = "HOOKRELAY_PORTAL_ACCENT", value_parser = parse_colour, default_value = "#2f5bd3")]
    pub portal_accent: String,
}

/// An `http(s)` URL with nothing but a scheme, a host, a port and a path.
fn parse_public_url(s: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(s.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("must be an http:// or https:// URL with a host".into());
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("must have no query, fragment or user name".into());
    }
    Ok(url)
}

/// A web origin: `scheme://host[:port]`, nothing else.
fn parse_origin(s: &str) -> Result<String, String> {
    let url = url::Url::parse(s.trim()).map_err(|e| format!("{s:?} is not an origin: {e}"))?;
    let origin = url.origin();
    if !matches!(url.scheme(), "http" | "https")
        || !origin.is_tuple()
        || url.path() != "/"
        || url.query().is_some()
    {
        return Err(format!(
            "{s:?} is not an origin: give scheme://host[:port], e.g. https://app.example.com"
        ));
    }
    Ok(origin.ascii_serialization())
}

/// A colour as `#rrggbb`.
fn parse_colour(s: &str) -> Result<String, String> {
    let s = s.trim();
    let ok = s.len() == 7 && s.starts_with('#') && s[1..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("{s:?} is not a colour: give #rrggbb"))
    }
}

/// Alert settings of `hookrelay serve`.
#[derive(Debug, Clone, Args)]
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
    #[arg(long, env = "HOOKRELAY_ALERT_FORMAT", value_enum, default_value_t = AlertFormat::Json)]
    pub alert_format: AlertFormat,

    /// How often the alert rules are checked.
    #[arg(long, env = "HOOKRELAY_ALERT_INTERVAL", value_parser = parse_duration, default_value = "30s")]
    pub alert_interval: Duration,

    /// Percentage of failed attempts in the last hour above which the failure-rate alert
    /// fires.
    #[arg(long, env = "HOOKRELAY_ALERT_FAILURE_RATE", default_value_t = 50.0)]
    pub alert_failure_rate: f64,

    /// Attempts in the last hour below which the failure rate is not judged.
    #[arg(long, env = "HOOKRELAY_ALERT_MIN_ATTEMPTS", default_value_t = 10)]
    pub alert_min_attempts: u64,

    /// Pending deliveries above which the pending alert fires.
    #[arg(long, env = "HOOKRELAY_ALERT_PENDING", default_value_t = 100)]
    pub alert_pending: u64,

    /// A running dispatcher silent for longer than this is stalled.
    #[arg(long, env = "HOOKRELAY_ALERT_STALL", value_parser = parse_duration, default_value = "5m")]
    pub alert_stall: Duration,
}

/// The built-in defaults: what an empty command line gives with no environment read.
fn defaults<T: Args + FromArgMatches>() -> T {
    let cmd = without_env(T::augment_args(
        Command::new("defaults").no_binary_name(true),
    ));
    match cmd
        .try_get_matches_from(std::iter::empty::<&str>())
        .and_then(|m| T::from_arg_matches(&m))
    {
        Ok(args) => args,
        Err(e) => panic!("the built-in defaults do not parse: {e}"),
    }
}

/// `cmd` with no argument read from the environment.
fn without_env(cmd: Command) -> Command {
    cmd.mut_args(|arg| arg.env(None))
}

impl Default for ServeArgs {
    /// The built-in defaults; the environment is not read.
    fn default() -> Self {
        defaults()
    }
}

impl Default for StoreArgs {
    /// The built-in defaults; the environment is not read.
    fn default() -> Self {
        defaults()
    }
}

impl Default for AlertArgs {
    /// The built-in defaults; the environment is not read.
    fn default() -> Self {
        defaults()
    }
}

/// The values of a config file, checked against the settings of `hookrelay serve`: each
/// key is the id of an argument (the field name), each value what the flag would be given
/// (an array: one value per element, as a repeated flag).
#[derive(Clone)]
pub struct FileValues {
    values: Vec<(String, Vec<String>)>,
}

impl std::fmt::Debug for FileValues {
    /// Keys only: values may be secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.values.iter().map(|(key, _)| key))
            .finish()
    }
}

impl FileValues {
    /// Reads the TOML file at `path`. A key that is not a setting of `serve`, or a value its
    /// flag would refuse, is an error naming the key and the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text`, the content of the file at `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let shown = || path.display().to_string();
        let table: toml::Table = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: shown(),
            source: Box::new(source),
        })?;
        let serve = ServeArgs::augment_args(Command::new("serve"));
        let mut values = Vec::with_capacity(table.len());
        for (key, value) in table {
            let Some(arg) = serve.get_arguments().find(|a| a.get_id() == key.as_str()) else {
                return Err(ConfigError::UnknownKey { key, path: shown() });
            };
            let invalid = |message: String| ConfigError::FileValue {
                key: key.clone(),
                path: shown(),
                message,
            };
            let repeatable = matches!(arg.get_action(), ArgAction::Append);
            let texts = match value {
                toml::Value::Array(items) if repeatable => items
                    .into_iter()
                    .map(scalar_text)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(invalid)?,
                toml::Value::Array(_) => {
                    return Err(invalid("takes one value, not an array".into()));
                }
                other => vec![scalar_text(other).map_err(invalid)?],
            };
            check_values(arg, &texts).map_err(invalid)?;
            values.push((key, texts));
        }
        Ok(Self { values })
    }

    /// `cmd` with each value as the default of the argument of the same id; values that
    /// `cmd` has no argument for (a `serve` setting that `migrate` does not take) are left
    /// out. Defaults of secret arguments are hidden from `--help`, as their environment is.
    pub fn apply(&self, cmd: Command) -> Command {
        cmd.mut_args(|arg| {
            let Some((_, texts)) = self
                .values
                .iter()
                .find(|(key, _)| arg.get_id() == key.as_str())
            else {
                return arg;
            };
            let hide = arg.is_hide_env_values_set();
            arg.default_values(texts.clone()).hide_default_value(hide)
        })
    }
}

/// A TOML scalar as the text a flag would be given.
fn scalar_text(value: toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(_) | toml::Value::Array(_) | toml::Value::Table(_) => {
            Err("must be a string, a number or a boolean".into())
        }
    }
}

/// Runs `texts` through `arg`'s value parser, as clap will: as its defaults, alone.
fn check_values(arg: &clap::Arg, texts: &[String]) -> Result<(), String> {
    let arg = arg.clone().env(None).default_values(texts.to_vec());
    Command::new("check")
        .no_binary_name(true)
        .arg(arg)
        .try_get_matches_from(std::iter::empty::<&str>())
        .map(drop)
        .map_err(|e| {
            let text = e.render().to_string();
            let text = text.split("\n\nFor more information").next().unwrap_or("");
            let text = text.trim().trim_start_matches("error: ");
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        })
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
    /// The egress proxy's URL (it may hold a password), and the destinations that bypass it.
    pub egress_proxy: Option<SecretString>,
    pub egress_no_proxy: Vec<String>,
    pub retry: RetryPolicy,
    pub breaker: BreakerPolicy,
    pub dispatch: DispatchConfig,
    /// Alert sinks, format and rule thresholds.
    pub alerts: AlertConfig,
    /// The consumer portal's links, embedding and look.
    pub portal: PortalConfig,
}

/// The consumer portal's settings.
#[derive(Debug, Clone)]
pub struct PortalConfig {
    /// The base of portal links; `None`: the address of the request for the link.
    pub public_url: Option<url::Url>,
    pub max_lifetime: Duration,
    /// Origins (`scheme://host[:port]`) whose pages may frame the portal.
    pub frame_ancestors: Vec<String>,
    pub name: String,
    /// `#rrggbb`.
    pub accent: String,
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
            .field(
                "egress_proxy",
                &self
                    .egress_proxy
                    .as_ref()
                    .map(|u| crate::secrets::redact_url(u.expose_secret()).into_owned()),
            )
            .field("egress_no_proxy", &self.egress_no_proxy)
            .field("retry", &self.retry)
            .field("breaker", &self.breaker)
            .field("dispatch", &self.dispatch)
            .field("alert_sinks", &sinks)
            .field("alert_format", &self.alerts.format)
            .field("alert_interval", &self.alerts.interval)
            .field("alert_thresholds", &self.alerts.thresholds)
            .field("portal", &self.portal)
            .finish()
    }
}

/// Deliveries claimed per store round trip (not a setting).
const BATCH_SIZE: usize = 256;
/// Timeout of connecting to a destination (not a setting).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Config {
    /// The built-in defaults of [`ServeArgs`]; neither the environment nor a file is read.
    fn default() -> Self {
        Self::assemble(ServeArgs::default())
    }
}

impl Config {
    /// The egress proxy, when one is configured.
    pub fn egress(&self) -> Result<Option<crate::destinations::egress::EgressProxy>, ConfigError> {
        let Some(url) = &self.egress_proxy else {
            return Ok(None);
        };
        crate::destinations::egress::EgressProxy::new(url.expose_secret(), &self.egress_no_proxy)
            .map(Some)
            .map_err(|message| ConfigError::Invalid {
                key: "egress_proxy",
                message,
            })
    }

    /// The configuration that parsed arguments (flags over environment over file over
    /// defaults) give, validated. `PUBSUB_EMULATOR_HOST` is read here, as Google's clients do.
    pub fn from_args(args: ServeArgs) -> Result<Self, ConfigError> {
        let mut config = Self::assemble(args);
        config.dispatch.pubsub_emulator_host = std::env::var("PUBSUB_EMULATOR_HOST")
            .ok()
            .filter(|h| !h.is_empty());
        config.validate()?;
        Ok(config)
    }

    /// Arguments into their typed places, unvalidated.
    fn assemble(args: ServeArgs) -> Self {
        let (store, a, portal) = (args.store, args.alerts, args.portal);
        Config {
            listen: args.listen,
            database_url: store.database_url,
            database_pool_size: store.database_pool_size,
            pg_schemas: crate::store::PgSchemas {
                tables: store.pg_schema,
                functions: store.pg_function_schema,
            },
            admin_token: args.admin_token,
            allow_networks: args.allow_networks,
            role: args.role,
            max_body_bytes: args.max_body_bytes,
            retention: args.retention,
            rotation_grace: args.rotation_grace,
            encryption_keys: args.encryption_keys,
            strict_event_types: args.strict_event_types,
            max_endpoints_per_tenant: args.max_endpoints_per_tenant,
            dns_server: args.dns_server,
            egress_proxy: args.egress_proxy,
            egress_no_proxy: args.egress_no_proxy,
            retry: RetryPolicy {
                base: args.retry_base,
                max_delay: args.retry_max_delay,
                max_attempts: args.max_attempts,
            },
            breaker: BreakerPolicy {
                threshold: args.breaker_threshold,
                cooldown: args.breaker_cooldown,
                disable_after: args.disable_after,
            },
            dispatch: DispatchConfig {
                concurrency: args.concurrency,
                endpoint_concurrency: args.endpoint_concurrency,
                tenant_concurrency: args.tenant_concurrency,
                batch_size: BATCH_SIZE,
                lease: args.lease,
                poll_interval: args.poll_interval,
                request_timeout: args.request_timeout,
                connect_timeout: CONNECT_TIMEOUT,
                pubsub_emulator_host: None,
            },
            alerts: AlertConfig {
                sinks: a.alert_sinks,
                format: a.alert_format,
                interval: a.alert_interval,
                thresholds: Thresholds {
                    // A percentage in flags and file, a fraction in the rules.
                    failure_rate: a.alert_failure_rate / 100.0,
                    min_attempts: a.alert_min_attempts,
                    pending: a.alert_pending,
                    stall: a.alert_stall,
                },
            },
            portal: PortalConfig {
                public_url: portal.public_url,
                max_lifetime: portal.portal_max_lifetime,
                frame_ancestors: portal.portal_frame_ancestors,
                name: portal.portal_name,
                accent: portal.portal_accent,
            },
        }
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
        self.egress()?;
        let name = self.portal.name.trim();
        if name.is_empty() || name.chars().count() > 64 {
            return invalid("portal_name", "must be 1 to 64 characters");
        }
        if self.portal.max_lifetime < Duration::from_secs(60)
            || self.portal.max_lifetime > Duration::from_secs(366 * 86400)
        {
            return invalid(
                "portal_max_lifetime",
                "must be between 1 minute and 366 days",
            );
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// `hookrelay serve ARGV` over a config file holding `toml` (when given), as the binary
    /// parses it: the configuration, or the text of the error. The environment is read only
    /// when `env` is true, so a developer's `HOOKRELAY_*` cannot change these tests.
    fn serve_with(argv: &[&str], toml: Option<&str>, env: bool) -> Result<Config, String> {
        let mut cmd = ServeArgs::augment_args(Command::new("serve").no_binary_name(true));
        if !env {
            cmd = without_env(cmd);
        }
        let mut file = tempfile::NamedTempFile::new().unwrap();
        if let Some(text) = toml {
            writeln!(file, "{text}").unwrap();
            cmd = FileValues::load(file.path())
                .map_err(|e| e.to_string())?
                .apply(cmd);
        }
        let matches = cmd.try_get_matches_from(argv).map_err(|e| e.to_string())?;
        let args = ServeArgs::from_arg_matches(&matches).map_err(|e| e.to_string())?;
        Config::from_args(args).map_err(|e| e.to_string())
    }

    fn serve(argv: &[&str], toml: Option<&str>) -> Result<Config, String> {
        serve_with(argv, toml, false)
    }

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let file = "listen = \"127.0.0.1:9000\"\nmax_attempts = 3\nretry_base = \"2s\"\nallow_networks = [\"10.0.0.0/8\"]";
        let c = serve(&["--max-attempts", "7"], Some(file)).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.retry.max_attempts, 7);
        assert_eq!(c.retry.base, Duration::from_secs(2));
        assert_eq!(c.allow_networks.len(), 1);
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        // A flag given replaces the file's list instead of adding to it.
        let c = serve(&["--allow-network", "192.168.0.0/16"], Some(file)).unwrap();
        assert_eq!(
            c.allow_networks,
            vec!["192.168.0.0/16".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn the_file_wins_over_defaults() {
        let file = "retry_max_delay = \"1h\"\nrole = \"api\"\nstrict_event_types = true\n\
                    database_pool_size = 3\nalert_failure_rate = 12.5\nrotation_grace = \"2s\"";
        let c = serve(&[], Some(file)).unwrap();
        assert_eq!(c.retry.max_delay, Duration::from_secs(3600));
        assert_eq!(c.role, Role::Api);
        assert!(c.strict_event_types);
        assert_eq!(c.database_pool_size, 3);
        assert_eq!(c.alerts.thresholds.failure_rate, 0.125);
        assert_eq!(c.rotation_grace, Duration::from_secs(2));
        // Untouched settings keep the built-in defaults.
        let d = Config::default();
        assert_eq!(c.retry.base, d.retry.base);
        assert_eq!(c.dispatch.lease, d.dispatch.lease);
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        // Only this test sets this variable, and only it reads the environment.
        std::env::set_var("HOOKRELAY_ALERT_MIN_ATTEMPTS", "9");
        let from_env = serve_with(&[], Some("alert_min_attempts = 7"), true);
        let from_flag = serve_with(
            &["--alert-min-attempts", "8"],
            Some("alert_min_attempts = 7"),
            true,
        );
        std::env::remove_var("HOOKRELAY_ALERT_MIN_ATTEMPTS");
        assert_eq!(from_env.unwrap().alerts.thresholds.min_attempts, 9);
        assert_eq!(from_flag.unwrap().alerts.thresholds.min_attempts, 8);
    }

    #[test]
    fn defaults_ignore_the_environment() {
        // Only this test sets this variable.
        std::env::set_var("HOOKRELAY_MAX_ENDPOINTS_PER_TENANT", "3");
        let parsed = serve_with(&[], None, true);
        let default = Config::default();
        let args = ServeArgs::default();
        std::env::remove_var("HOOKRELAY_MAX_ENDPOINTS_PER_TENANT");
        assert_eq!(parsed.unwrap().max_endpoints_per_tenant, 3);
        assert_eq!(default.max_endpoints_per_tenant, 1000);
        assert_eq!(args.max_endpoints_per_tenant, 1000);
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(c.database_pool_size, 10);
        assert_eq!(c.pg_schemas, crate::store::PgSchemas::default());
        assert_eq!(c.role, Role::All);
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert_eq!(c.retry, RetryPolicy::default());
        assert_eq!(c.breaker, BreakerPolicy::default());
        assert_eq!(c.retention, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(c.rotation_grace, Duration::from_secs(24 * 3600));
        assert_eq!(c.max_endpoints_per_tenant, 1000);
        assert!(c.admin_token.is_none() && c.dns_server.is_none() && !c.strict_event_types);
        assert!(c.allow_networks.is_empty() && c.encryption_keys.is_empty());
        assert_eq!(c.dispatch.concurrency, 256);
        assert_eq!(c.dispatch.endpoint_concurrency, 128);
        assert_eq!(c.dispatch.lease, Duration::from_secs(90));
        assert_eq!(c.dispatch.poll_interval, Duration::from_secs(5));
        assert_eq!(c.dispatch.request_timeout, Duration::from_secs(30));
        assert_eq!(c.dispatch.pubsub_emulator_host, None);
        assert_eq!(c.alerts.format, AlertFormat::Json);
        assert_eq!(c.alerts.interval, Duration::from_secs(30));
        assert_eq!(c.alerts.thresholds.failure_rate, 0.5);
        assert_eq!(c.alerts.thresholds.min_attempts, 10);
        assert_eq!(c.alerts.thresholds.pending, 100);
        assert_eq!(c.alerts.thresholds.stall, Duration::from_secs(300));
        c.validate().unwrap();
    }

    #[test]
    fn alert_settings_come_from_flags_and_file() {
        let file = "alert_sinks = [\"https://hooks.example.com/a\"]\nalert_format = \"slack\"\nalert_pending = 7\nalert_stall = \"2m\"";
        let c = serve(&["--alert-failure-rate", "25"], Some(file)).unwrap();
        assert_eq!(c.alerts.sinks.len(), 1);
        assert_eq!(c.alerts.format, AlertFormat::Slack);
        assert_eq!(c.alerts.thresholds.pending, 7);
        assert_eq!(c.alerts.thresholds.stall, Duration::from_secs(120));
        assert_eq!(c.alerts.thresholds.failure_rate, 0.25);
        assert_eq!(c.alerts.interval, Duration::from_secs(30));
        assert!(serve(&["--alert-failure-rate", "150"], None).is_err());
    }

    #[test]
    fn arrays_fill_repeatable_flags() {
        let file = "allow_networks = [\"10.0.0.0/8\", \"192.168.0.0/16\"]\n\
                    alert_sinks = [\"https://a.example.com/\", \"https://b.example.com/#critical\"]\n\
                    encryption_keys = [\"a2V5LW9uZQ==\", \"a2V5LXR3bw==\"]";
        let c = serve(&[], Some(file)).unwrap();
        assert_eq!(
            c.allow_networks,
            vec![
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "192.168.0.0/16".parse().unwrap()
            ]
        );
        assert_eq!(c.alerts.sinks.len(), 2);
        let keys: Vec<_> = c
            .encryption_keys
            .iter()
            .map(|k| k.expose_secret())
            .collect();
        assert_eq!(keys, ["a2V5LW9uZQ==", "a2V5LXR3bw=="]);
        // An array for a setting that takes one value is refused.
        let err = serve(&[], Some("listen = [\"127.0.0.1:1\"]")).unwrap_err();
        assert!(err.contains("`listen`"), "{err}");
    }

    #[test]
    fn every_setting_can_come_from_the_file() {
        // Each setting with a default, set to its default as a string; the others by hand.
        let serve = ServeArgs::augment_args(Command::new("serve"));
        let mut toml = String::new();
        let mut keys = Vec::new();
        for arg in serve.get_arguments() {
            let key = arg.get_id().as_str();
            let value = match (key, arg.get_default_values()) {
                ("admin_token", _) => format!("{:?}", "t".repeat(32)),
                ("pg_schema", _) => "\"hr\"".into(),
                ("tenant_concurrency", _) => "4".into(),
                ("dns_server", _) => "\"127.0.0.1:53\"".into(),
                ("egress_proxy", _) => "\"http://127.0.0.1:3128\"".into(),
                ("egress_no_proxy", _) => "[\"localhost\"]".into(),
                ("allow_networks", _) => "[\"10.0.0.0/8\"]".into(),
                ("encryption_keys", _) => "[\"a2V5\"]".into(),
                ("alert_sinks", _) => "[\"https://example.com/\"]".into(),
                ("strict_event_types", _) => "true".into(),
                ("public_url", _) => "\"https://hooks.example.com\"".into(),
                ("portal_frame_ancestors", _) => "[\"https://app.example.com\"]".into(),
                (_, [default]) => format!("{:?}", default.to_string_lossy()),
                _ => panic!("{key}: give it a value in this test"),
            };
            toml.push_str(&format!("{key} = {value}\n"));
            keys.push(key.to_owned());
        }
        let c = serve_with(&[], Some(&toml), false).unwrap();
        assert_eq!(c.dispatch.tenant_concurrency, Some(4));
        assert_eq!(c.pg_schemas.tables.as_deref(), Some("hr"));
        assert!(c.strict_event_types && c.admin_token.is_some() && c.dns_server.is_some());
        assert_eq!(c.retry, RetryPolicy::default());
        assert!(keys.len() > 30, "{keys:?}");
        // The file's values become the arguments' defaults: `--help` still builds.
        let values = FileValues::parse(&toml, Path::new("all.toml")).unwrap();
        values
            .apply(ServeArgs::augment_args(Command::new("serve")))
            .render_long_help();
    }

    #[test]
    fn tenant_concurrency_defaults_to_three_quarters_and_comes_from_the_file() {
        let c = serve(&["--concurrency", "8"], None).unwrap();
        assert_eq!(c.dispatch.tenant_limit(), 6);
        assert_eq!(Config::default().dispatch.tenant_limit(), 192);
        let c = serve(&[], Some("tenant_concurrency = 3")).unwrap();
        assert_eq!(c.dispatch.tenant_limit(), 3);
        assert!(serve(&["--tenant-concurrency", "0"], None).is_err());
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "lisen = \"127.0.0.1:9000\"").unwrap();
        let err = FileValues::load(file.path()).unwrap_err().to_string();
        assert!(err.contains("`lisen`"), "{err}");
        assert!(err.contains(&file.path().display().to_string()), "{err}");
        // Not a setting of `serve` either, although a flag of the top command or `import`.
        for key in ["config = \"x.toml\"", "from = \"postgres://x\""] {
            assert!(serve(&[], Some(key)).is_err(), "{key}");
        }
    }

    #[test]
    fn bad_file_values_are_refused_naming_the_key() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "listen = \"127.0.0.1:9000\"\nretry_base = \"soon\"").unwrap();
        let err = FileValues::load(file.path()).unwrap_err().to_string();
        assert!(err.contains("`retry_base`"), "{err}");
        assert!(err.contains(&file.path().display().to_string()), "{err}");
        for bad in [
            "max_attempts = \"many\"",
            "max_attempts = -1",
            "role = \"boss\"",
            "strict_event_types = \"maybe\"",
            "allow_networks = [\"10.0.0.0/8\", \"nowhere\"]",
            "lease = 90",
            "retention = 1979-05-27",
        ] {
            let key = bad.split(' ').next().unwrap();
            let err = serve(&[], Some(bad)).unwrap_err();
            assert!(err.contains(&format!("`{key}`")), "{bad}: {err}");
        }
    }

    #[test]
    fn inconsistent_settings_are_refused() {
        assert!(serve(&["--lease", "5s"], None).is_err());
        assert!(serve(&["--admin-token", "short"], None).is_err());
        // 27 characters passed before; 32 is the least now.
        let err = serve(&["--admin-token", "test-admin-token-0123456789"], None).unwrap_err();
        assert!(err.contains("at least 32 characters"), "{err}");
        assert!(serve(&["--admin-token", &"a".repeat(32)], None).is_ok());
        // The same from the file.
        let err = serve(&[], Some("admin_token = \"short\"")).unwrap_err();
        assert!(err.contains("at least 32 characters"), "{err}");
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
        // Nor do the parsed arguments, the file's values, or `serve --help` with the file.
        let file = "admin_token = \"admin-token-never-printed-0123456789\"\nencryption_keys = [\"key-never-printed\"]";
        let values = FileValues::parse(file, Path::new("f.toml")).unwrap();
        let mut cmd = values.apply(ServeArgs::augment_args(Command::new("serve")));
        let args = ServeArgs::from_arg_matches(
            &without_env(cmd.clone())
                .try_get_matches_from(["serve"])
                .unwrap(),
        )
        .unwrap();
        let help = cmd.render_long_help().to_string();
        for shown in [format!("{args:?}"), format!("{values:?}"), help] {
            for secret in ["admin-token-never-printed", "key-never-printed"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
        }
    }
}
