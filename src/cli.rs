//! The command line: `serve`, `migrate`, `verify`, and client commands that talk to a
//! running server over its HTTP API.

use std::{
    ffi::{OsStr, OsString},
    io::Read,
    path::PathBuf,
};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::{json, Value};

use crate::{
    config::{ConfigError, FileValues, ServeArgs, StoreArgs},
    signing,
};

/// hookrelay: webhook and event delivery, signed, retried, logged, never lost.
#[derive(Debug, Parser)]
#[command(name = "hookrelay", version, about, propagate_version = true)]
pub struct Cli {
    /// TOML config file with the same keys as the flags (flags and env win over it).
    #[arg(long, global = true, env = CONFIG_ENV, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

const CONFIG_ENV: &str = "HOOKRELAY_CONFIG";

/// The commands that take settings from the config file.
const CONFIGURED: [&str; 3] = ["serve", "migrate", "import"];

/// Why the command line could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// A flag or environment variable (clap's own error: it prints usage, exits with 2).
    #[error(transparent)]
    Args(#[from] clap::Error),
    /// The config file.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
}

impl Cli {
    /// Parses the process's arguments and environment over its config file; on an error,
    /// prints it and exits.
    pub fn parse_with_config() -> Self {
        match Self::try_parse_with_config(std::env::args_os()) {
            Ok(cli) => cli,
            Err(ParseError::Args(e)) => e.exit(),
            Err(e @ ParseError::Config(_)) => {
                eprintln!("error: {e}");
                std::process::exit(1)
            }
        }
    }

    /// Parses `argv` (the program name first) and the environment. For `serve`, `migrate`
    /// and `import`, the config file (`--config FILE` or `HOOKRELAY_CONFIG`) is read first
    /// and each of its values becomes the default of the argument of the same id, so flags
    /// and environment win over it and it wins over the built-in defaults. A key that is
    /// not a `serve` setting, or a value its flag would refuse, is an error; settings of
    /// `serve` that `migrate` does not take are ignored there.
    pub fn try_parse_with_config<I, T>(argv: I) -> Result<Self, ParseError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
        let mut cmd = Cli::command();
        let (file, subcommand) = scan(&argv);
        let file = file.or_else(|| std::env::var_os(CONFIG_ENV).filter(|f| !f.is_empty()));
        let subcommand = subcommand.and_then(OsStr::to_str);
        if let (Some(file), Some(name)) = (file, subcommand) {
            if CONFIGURED.contains(&name) {
                let values = FileValues::load(file.as_ref())?;
                cmd = cmd.mut_subcommand(name, |sub| values.apply(sub));
            }
        }
        let matches = cmd.try_get_matches_from_mut(argv)?;
        Cli::from_arg_matches(&matches).map_err(|e| ParseError::Args(e.format(&mut cmd)))
    }
}

/// The value of `--config` and the name of the subcommand in `argv`, found before clap
/// parses: the top command has no other option taking a value, so its first word that is
/// not an option is the subcommand. `--config` is global: it may follow the subcommand.
fn scan(argv: &[OsString]) -> (Option<OsString>, Option<&OsStr>) {
    let (mut file, mut subcommand) = (None, None);
    let mut words = argv.iter().skip(1);
    while let Some(word) = words.next() {
        let text = word.to_string_lossy();
        if text == "--" {
            break;
        } else if text == "--config" {
            file = words.next().cloned();
        } else if let Some(value) = text.strip_prefix("--config=") {
            file = Some(value.into());
        } else if subcommand.is_none() && !text.starts_with('-') {
            subcommand = Some(word.as_os_str());
        }
    }
    (file, subcommand)
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API and the dispatcher (see --role).
    Serve(Box<ServeArgs>),
    /// Apply database migrations and exit.
    Migrate(StoreArgs),
    /// Import the community platform's webhook configurations and pending deliveries
    /// from its PostgreSQL database (see the README's migration guide).
    Import(Box<ImportArgs>),
    /// Send an event: hookrelay send TYPE DATA.
    Send(SendArgs),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Manage endpoints.
    #[command(subcommand)]
    Endpoint(Box<EndpointCmd>),
    /// Manage the event-type catalog.
    #[command(subcommand, name = "event-type")]
    EventType(EventTypeCmd),
    /// Inspect the event log.
    #[command(subcommand)]
    Events(EventsCmd),
    /// Inspect and retry deliveries.
    #[command(subcommand)]
    Deliveries(DeliveriesCmd),
    /// Verify a received webhook (receiver side): exit 0 when the signature is valid.
    Verify(VerifyArgs),
    /// Show the server's health: totals, pending, latency, breakers, dispatchers, alerts.
    Health(ClientArgs),
    /// The built-in test receiver: create inboxes, read and follow what they received.
    #[command(subcommand)]
    Inbox(InboxCmd),
    /// The audit trail of configuration changes (JSON, newest first).
    Audit(AuditArgs),
    /// Sources: brokers whose messages become events (Redis Streams, NATS JetStream, SQS, RabbitMQ, Kafka).
    #[command(subcommand)]
    Source(SourceCmd),
    /// Consumer portal links: a URL that opens the portal for one tenant.
    #[command(subcommand, name = "portal-link")]
    PortalLink(PortalLinkCmd),
    /// Print the OpenAPI document.
    Openapi,
    /// Print the SQL that installs the `dispatch_webhook()` functions (the transactional
    /// outbox) that applications call on PostgreSQL; hookrelay installs them on every start
    /// too. Run it as the functions' owner when hookrelay's own role may not create them.
    InstallSql(InstallSqlArgs),
}

/// `hookrelay import`: the source, and the same settings as `serve` for hookrelay's side.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The community platform's database, `postgres://…` (only read).
    #[arg(long)]
    pub from: String,
    /// Print what would be imported; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The tenant that receives the endpoints and deliveries.
    #[arg(long, default_value = crate::domain::DEFAULT_TENANT)]
    pub tenant: String,
    /// `User-Agent` the imported endpoints send; empty keeps hookrelay's own.
    #[arg(long, default_value = crate::import::DEFAULT_USER_AGENT)]
    pub user_agent: String,
    /// The source's configurations table (optionally schema.table).
    #[arg(long, default_value = "webhook_configurations")]
    pub configurations_table: String,
    /// The source's deliveries table (optionally schema.table).
    #[arg(long, default_value = "webhook_deliveries")]
    pub deliveries_table: String,
    /// A source column with another name, `table.column=name` (repeatable), e.g.
    /// `configurations.secret=signing_secret`.
    #[arg(long = "column", value_name = "TABLE.COLUMN=NAME")]
    pub columns: Vec<String>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Which schemas the printed functions use.
#[derive(Debug, Clone, Args)]
pub struct InstallSqlArgs {
    /// The schema of hookrelay's tables.
    #[arg(long, env = "HOOKRELAY_PG_SCHEMA", default_value = crate::store::DEFAULT_PG_SCHEMA)]
    pub pg_schema: String,
    /// The schema the functions are installed into.
    #[arg(long, env = "HOOKRELAY_PG_FUNCTION_SCHEMA", default_value = "public")]
    pub pg_function_schema: String,
}

/// Where the server is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Base URL of a running hookrelay.
    #[arg(
        long,
        env = "HOOKRELAY_SERVER",
        default_value = "http://127.0.0.1:8400"
    )]
    pub server: String,
    /// Bearer token (admin or tenant); falls back to HOOKRELAY_ADMIN_TOKEN.
    #[arg(long, env = "HOOKRELAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Tenant to act in.
    #[arg(long, env = "HOOKRELAY_TENANT", default_value = "default")]
    pub tenant: String,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Event type, e.g. user.joined_community.
    pub event_type: String,
    /// Event data as JSON, or @FILE, or - for standard input.
    pub data: String,
    #[arg(long)]
    pub actor: Option<String>,
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Deliver no earlier than this RFC 3339 time.
    #[arg(long)]
    pub deliver_at: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// Create a tenant.
    Create {
        name: String,
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List tenants.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a tenant.
    Get {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a tenant and everything it owns.
    Delete {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create a tenant-scoped token (printed once).
    Token {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum PortalLinkCmd {
    /// Create a portal link for --tenant; prints it (with its URL) once.
    Create {
        /// How long the link opens the portal (e.g. 30m, 1h, 7days), within the server's
        /// --portal-max-lifetime. [default: 1h]
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
        /// The portal only shows; nothing can be changed through it.
        #[arg(long)]
        read_only: bool,
        /// An event type (from the catalog) endpoints may subscribe to through the portal;
        /// repeatable. [default: the whole catalog]
        #[arg(long = "event-type", value_name = "TYPE")]
        event_types: Vec<String>,
        /// Broker destinations (sqs://, kafka://, …) may be entered, not only http(s) URLs.
        #[arg(long)]
        allow_brokers: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List --tenant's portal links (newest first; tokens are never shown again).
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a portal link: it no longer opens the portal, and its sessions end.
    Revoke {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum EndpointCmd {
    /// Create an endpoint.
    Create {
        url: String,
        /// Event type or `prefix.*` wildcard (repeatable); none means every type.
        #[arg(long = "event-type")]
        event_types: Vec<String>,
        #[arg(long)]
        secret: Option<String>,
        /// `hmac-sha256` (default) or `ed25519` (v1a signatures; receivers get a public key).
        #[arg(long)]
        signing_scheme: Option<String>,
        /// `standard-webhooks` (default) or `community` (`X-Webhook-Signature: sha256=`).
        #[arg(long)]
        format: Option<String>,
        /// Extra header sent with every delivery, `Name: value` (repeatable), e.g.
        /// `--header 'User-Agent: My Third Place Webhook/1.0'`.
        #[arg(long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Deliveries per second (`10`), or a rate with its period (`10/s`, `30/min`).
        #[arg(long)]
        rate_limit: Option<String>,
        #[command(flatten)]
        oauth2: OAuth2Args,
        /// Another name for a signature header, `id=NAME`, `timestamp=NAME` or
        /// `signature=NAME` (repeatable), e.g. `--signature-header signature=X-Signature`.
        #[arg(long = "signature-header", value_name = "KIND=NAME")]
        signature_headers: Vec<String>,
        #[command(flatten)]
        tls: TlsArgs,
        /// Admin token: a proxy of this endpoint's own instead of --egress-proxy, or `direct`.
        #[arg(long, value_name = "URL")]
        proxy: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List endpoints.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show an endpoint (with its secret).
    Get {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// An endpoint's statistics: the last hour and 24 hours, last success and failure.
    Stats {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Enable or disable an endpoint, or change its URL, format or rate limit.
    Update {
        id: String,
        #[arg(long)]
        url: Option<String>,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
        /// `standard-webhooks` or `community`.
        #[arg(long)]
        format: Option<String>,
        /// Deliveries per second (`10`), a rate with its period (`30/min`), or `none`.
        #[arg(long)]
        rate_limit: Option<String>,
        /// New OAuth2 client credentials (without --oauth2-client-secret the stored secret
        /// is kept).
        #[command(flatten)]
        oauth2: OAuth2Args,
        /// Stop sending an OAuth2 bearer token.
        #[arg(long, conflicts_with = "oauth2_token_url")]
        no_oauth2: bool,
        /// New signature header names, `KIND=NAME` (repeatable; the others go back to
        /// the standard names).
        #[arg(long = "signature-header", value_name = "KIND=NAME")]
        signature_headers: Vec<String>,
        /// A new client certificate (without --client-key the stored key is kept).
        #[command(flatten)]
        tls: TlsArgs,
        /// Stop presenting a client certificate.
        #[arg(long, conflicts_with = "client_cert")]
        no_tls: bool,
        /// Admin token: a proxy of this endpoint's own instead of --egress-proxy, or `direct`.
        #[arg(long, value_name = "URL")]
        proxy: Option<String>,
        /// Follow --egress-proxy again.
        #[arg(long, conflicts_with = "proxy")]
        clear_proxy: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete an endpoint.
    Delete {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Rotate the signing secret (the old one signs for 24 more hours).
    RotateSecret {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// OAuth2 client credentials of an endpoint: deliveries carry a bearer token fetched with
/// them (`--oauth2-token-url` turns it on).
#[derive(Debug, Args)]
pub struct OAuth2Args {
    /// The token endpoint of the receiver's authorization server.
    #[arg(long)]
    pub oauth2_token_url: Option<String>,
    #[arg(long, requires = "oauth2_token_url")]
    pub oauth2_client_id: Option<String>,
    /// The client secret (better from the environment than on the command line).
    #[arg(long, env = "HOOKRELAY_OAUTH2_CLIENT_SECRET", hide_env_values = true)]
    pub oauth2_client_secret: Option<String>,
    /// Space-separated scopes to ask for.
    #[arg(long, requires = "oauth2_token_url")]
    pub oauth2_scope: Option<String>,
    /// The `audience` parameter some authorization servers ask for.
    #[arg(long, requires = "oauth2_token_url")]
    pub oauth2_audience: Option<String>,
}

/// A client certificate for mutual TLS, from PEM files (`--client-cert` turns it on).
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// PEM file with the client certificate (then any intermediates) the endpoint presents.
    #[arg(long, value_name = "FILE")]
    pub client_cert: Option<std::path::PathBuf>,
    /// PEM file with the certificate's private key.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<std::path::PathBuf>,
    /// PEM file with CA certificates to trust for the receiver's server.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub ca_cert: Option<std::path::PathBuf>,
}

impl TlsArgs {
    /// The API's `tls` object, when a certificate is given.
    fn json(&self) -> Result<Option<Value>, CliError> {
        let Some(cert) = &self.client_cert else {
            return Ok(None);
        };
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|source| CliError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        Ok(Some(json!({
            "certificate": read(cert)?,
            "key": self.client_key.as_deref().map(read).transpose()?,
            "ca": self.ca_cert.as_deref().map(read).transpose()?,
        })))
    }
}

/// `--signature-header KIND=NAME` values as the API's `signature_headers` object.
fn signature_headers(values: &[String]) -> Result<Option<Value>, CliError> {
    if values.is_empty() {
        return Ok(None);
    }
    let mut names = serde_json::Map::new();
    for v in values {
        match v.split_once('=') {
            Some((kind @ ("id" | "timestamp" | "signature"), name)) => {
                names.insert(kind.to_owned(), json!(name.trim()));
            }
            _ => {
                return Err(CliError::Usage(format!(
                "--signature-header {v:?}: write it as id=NAME, timestamp=NAME or signature=NAME"
            )))
            }
        }
    }
    Ok(Some(Value::Object(names)))
}

impl OAuth2Args {
    /// The API's `oauth2` object, when a token URL is given.
    fn json(&self) -> Option<Value> {
        let token_url = self.oauth2_token_url.as_ref()?;
        Some(json!({
            "token_url": token_url, "client_id": self.oauth2_client_id,
            "client_secret": self.oauth2_client_secret,
            "scope": self.oauth2_scope, "audience": self.oauth2_audience,
        }))
    }
}

#[derive(Debug, Subcommand)]
pub enum EventTypeCmd {
    /// Register an event type.
    Create {
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// File holding the JSON Schema of the event's data.
        #[arg(long)]
        schema: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the catalog.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Load a catalog file: a JSON array of {name, description, schema}. Types that exist
    /// already are left as they are.
    Load {
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCmd {
    /// List events, newest first.
    List {
        #[arg(long = "type")]
        event_type: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show an event with its deliveries.
    Get {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCmd {
    /// List deliveries, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long)]
        event: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a delivery with its attempts.
    Get {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Deliver again now.
    Retry {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Key to verify with (repeat during a rotation): the endpoint secret whsec_… (HMAC),
    /// or the public key whpk_… of an ed25519 endpoint.
    #[arg(
        long,
        required = true,
        env = "HOOKRELAY_VERIFY_SECRET",
        hide_env_values = true
    )]
    pub secret: Vec<String>,
    /// Value of the webhook-id header.
    #[arg(long)]
    pub id: String,
    /// Value of the webhook-timestamp header.
    #[arg(long)]
    pub timestamp: String,
    /// Value of the webhook-signature header.
    #[arg(long)]
    pub signature: String,
    /// File with the raw body; standard input when absent.
    #[arg(long)]
    pub body_file: Option<PathBuf>,
}

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach {server}: {source}")]
    Connect {
        server: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("server answered {status}: {body}")]
    Api { status: u16, body: String },
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("signature verification failed: {0}")]
    Verify(#[from] signing::SignatureError),
}

struct Client {
    http: reqwest::Client,
    args: ClientArgs,
}

impl Client {
    fn new(args: ClientArgs) -> Self {
        Self {
            http: reqwest::Client::new(),
            args,
        }
    }

    fn tenant_path(&self, rest: &str) -> String {
        format!("/v1/tenants/{}{rest}", self.args.tenant)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.args.server.trim_end_matches('/'));
        let token = self
            .args
            .token
            .clone()
            .or_else(|| std::env::var("HOOKRELAY_ADMIN_TOKEN").ok())
            .ok_or_else(|| {
                CliError::Usage("no token: pass --token or set HOOKRELAY_TOKEN".into())
            })?;
        let mut req = self.http.request(method, &url).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|source| CliError::Connect {
            server: self.args.server.clone(),
            source,
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(CliError::Api {
                status: status.as_u16(),
                body: text,
            });
        }
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        })
    }
}

fn print(v: &Value) {
    if !v.is_null() {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    }
}

fn read_input(arg: &str) -> Result<String, CliError> {
    if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|source| CliError::Read {
                path: "standard input".into(),
                source,
            })?;
        Ok(s)
    } else if let Some(path) = arg.strip_prefix('@') {
        read_file(&PathBuf::from(path))
    } else {
        Ok(arg.to_owned())
    }
}

fn read_file(path: &PathBuf) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn parse_json(text: &str, what: &str) -> Result<Value, CliError> {
    serde_json::from_str(text)
        .map_err(|e| CliError::Usage(format!("{what} is not valid JSON: {e}")))
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            s.append_pair(k, v);
        }
    }
    let q = s.finish();
    if q.is_empty() {
        q
    } else {
        format!("?{q}")
    }
}

#[derive(Debug, Subcommand)]
pub enum InboxCmd {
    /// Create an inbox; prints its URL and the secret to give the endpoint.
    Create {
        /// Secret to verify signatures with (`whsec_…`); generated when absent.
        #[arg(long)]
        secret: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the tenant's inboxes.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print an inbox's newest messages (JSON).
    Messages {
        id: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Follow an inbox: print its last messages, then each new one as it arrives.
    Tail {
        id: String,
        /// Messages already received to print first.
        #[arg(long, default_value_t = 10)]
        last: u32,
        /// How often to look for new messages.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        /// Stop after printing this many messages.
        #[arg(long)]
        count: Option<usize>,
        /// Print each message as one JSON line instead of a summary.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `hookrelay audit`: filters of the audit trail.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Every tenant's entries (admin token) instead of the `--tenant`'s.
    #[arg(long)]
    pub all: bool,
    /// Only this action, e.g. endpoint.updated.
    #[arg(long)]
    pub action: Option<String>,
    /// Only changes by this actor: a token id, admin or system.
    #[arg(long)]
    pub actor: Option<String>,
    /// Only changes of this object (an endpoint id, …).
    #[arg(long)]
    pub target: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum SourceCmd {
    /// Create a source (admin token): hookrelay consumes it from then on.
    Add {
        /// Where to read, e.g. redis://127.0.0.1:6379/0?stream=jobs
        url: String,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the tenant's sources with their consumers' state.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a source with its consumer's state (lag, last error).
    Get {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a source (admin token): hookrelay stops consuming it.
    Delete {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the messages a source could not turn into events, with the reasons (JSON).
    Rejections {
        id: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
}

async fn run_source(cmd: SourceCmd) -> Result<(), CliError> {
    use reqwest::Method as M;
    let (c, method, path, body) = match cmd {
        SourceCmd::Add {
            url,
            description,
            client,
        } => {
            let c = Client::new(client);
            let path = c.tenant_path("/sources");
            let body = json!({"url": url, "description": description});
            (c, M::POST, path, Some(body))
        }
        SourceCmd::List { client } => {
            let c = Client::new(client);
            let path = c.tenant_path("/sources");
            (c, M::GET, path, None)
        }
        SourceCmd::Get { id, client } => {
            let c = Client::new(client);
            let path = c.tenant_path(&format!("/sources/{id}"));
            (c, M::GET, path, None)
        }
        SourceCmd::Delete { id, client } => {
            let c = Client::new(client);
            let path = c.tenant_path(&format!("/sources/{id}"));
            (c, M::DELETE, path, None)
        }
        SourceCmd::Rejections { id, limit, client } => {
            let c = Client::new(client);
            let path = c.tenant_path(&format!("/sources/{id}/rejections?limit={limit}"));
            (c, M::GET, path, None)
        }
    };
    print(&c.call(method, &path, body).await?);
    Ok(())
}

/// One line about a received message: time, verdict, method, webhook-id, body excerpt.
fn summary(m: &Value) -> String {
    let body: String = m["body"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .take(120)
        .collect();
    format!(
        "{} {:<9} {} {} {}",
        m["received_at"].as_str().unwrap_or_default(),
        m["verification"].as_str().unwrap_or_default(),
        m["method"].as_str().unwrap_or_default(),
        m["headers"]["webhook-id"].as_str().unwrap_or("-"),
        body.replace('\n', " ")
    )
}

async fn run_inbox(cmd: InboxCmd) -> Result<(), CliError> {
    use reqwest::Method as M;
    match cmd {
        InboxCmd::Create {
            secret,
            description,
            client,
        } => {
            let c = Client::new(client);
            let body = json!({"secret": secret, "description": description});
            print(
                &c.call(M::POST, &c.tenant_path("/inboxes"), Some(body))
                    .await?,
            );
        }
        InboxCmd::List { client } => {
            let c = Client::new(client);
            print(&c.call(M::GET, &c.tenant_path("/inboxes"), None).await?);
        }
        InboxCmd::Messages { id, limit, client } => {
            let c = Client::new(client);
            let path = c.tenant_path(&format!("/inboxes/{id}/messages?limit={limit}"));
            print(&c.call(M::GET, &path, None).await?);
        }
        InboxCmd::Tail {
            id,
            last,
            interval,
            count,
            json,
            client,
        } => {
            let c = Client::new(client);
            // Ids of messages already printed (or skipped at the start). Ids sort by time,
            // but two arriving in one millisecond may sort either way: remember them all
            // rather than only the newest.
            let mut seen: std::collections::HashSet<String> = Default::default();
            let mut printed = 0usize;
            let mut first = true;
            loop {
                let limit = if first { last.clamp(1, 250) } else { 250 };
                let path = c.tenant_path(&format!("/inboxes/{id}/messages?limit={limit}"));
                let page = c.call(M::GET, &path, None).await?;
                let data = page["data"].as_array().cloned().unwrap_or_default();
                // Newest first from the API: print oldest first.
                let fresh: Vec<Value> = data
                    .into_iter()
                    .rev()
                    .filter(|m| seen.insert(m["id"].as_str().unwrap_or_default().to_owned()))
                    .collect();
                let skip = first && last == 0;
                first = false;
                if seen.len() > 10_000 {
                    seen.clear();
                }
                for m in fresh.iter().filter(|_| !skip) {
                    if json {
                        println!("{}", serde_json::to_string(m).unwrap_or_default());
                    } else {
                        println!("{}", summary(m));
                    }
                    printed += 1;
                    if count.is_some_and(|n| printed >= n) {
                        return Ok(());
                    }
                }
                tokio::time::sleep(interval).await;
            }
        }
    }
    Ok(())
}

/// Runs a client command (everything but `serve` and `migrate`).
pub async fn run_client(command: Command) -> Result<(), CliError> {
    use reqwest::Method as M;
    match command {
        Command::Health(client) => {
            let c = Client::new(client);
            print(&c.call(M::GET, "/v1/health", None).await?);
            Ok(())
        }
        Command::Inbox(cmd) => run_inbox(cmd).await,
        Command::PortalLink(cmd) => {
            let (c, method, path, body) = match cmd {
                PortalLinkCmd::Create {
                    expires_in,
                    read_only,
                    event_types,
                    allow_brokers,
                    client,
                } => {
                    let c = Client::new(client);
                    let body = json!({
                        "expires_in": expires_in.map(|d| d.as_secs().max(1)),
                        "read_only": read_only,
                        "event_types": (!event_types.is_empty()).then_some(event_types),
                        "allow_brokers": allow_brokers,
                    });
                    let path = c.tenant_path("/portal-links");
                    (c, M::POST, path, Some(body))
                }
                PortalLinkCmd::List { client } => {
                    let c = Client::new(client);
                    let path = c.tenant_path("/portal-links");
                    (c, M::GET, path, None)
                }
                PortalLinkCmd::Revoke { id, client } => {
                    let c = Client::new(client);
                    let path = c.tenant_path(&format!("/portal-links/{id}"));
                    (c, M::DELETE, path, None)
                }
            };
            print(&c.call(method, &path, body).await?);
            Ok(())
        }
        Command::Source(cmd) => run_source(cmd).await,
        Command::Audit(a) => {
            let c = Client::new(a.client);
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            q.append_pair("limit", &a.limit.to_string());
            for (name, value) in [
                ("action", &a.action),
                ("actor", &a.actor),
                ("target", &a.target),
                ("since", &a.since),
            ] {
                if let Some(v) = value {
                    q.append_pair(name, v);
                }
            }
            let path = if a.all {
                format!("/v1/audit?{}", q.finish())
            } else {
                c.tenant_path(&format!("/audit?{}", q.finish()))
            };
            print(&c.call(M::GET, &path, None).await?);
            Ok(())
        }
        Command::Serve(_) | Command::Migrate(_) | Command::Import(_) => {
            Err(CliError::Usage("not a client command".into()))
        }
        Command::InstallSql(a) => {
            for (key, name) in [
                ("--pg-schema", &a.pg_schema),
                ("--pg-function-schema", &a.pg_function_schema),
            ] {
                if !crate::store::valid_schema_name(name) {
                    return Err(CliError::Usage(format!(
                        "{key} {}",
                        crate::store::SCHEMA_NAME_RULE
                    )));
                }
            }
            print!(
                "{}",
                crate::store::postgres::schema::functions_sql(&a.pg_schema, &a.pg_function_schema)
            );
            Ok(())
        }
        Command::Openapi => {
            print(&serde_json::to_value(crate::api::openapi::document()).unwrap_or_default());
            Ok(())
        }
        Command::Verify(a) => {
            let body = match &a.body_file {
                Some(p) => std::fs::read(p).map_err(|source| CliError::Read {
                    path: p.display().to_string(),
                    source,
                })?,
                None => {
                    let mut b = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut b)
                        .map_err(|source| CliError::Read {
                            path: "standard input".into(),
                            source,
                        })?;
                    b
                }
            };
            let secrets: Vec<&str> = a.secret.iter().map(String::as_str).collect();
            signing::verify(
                &secrets,
                Some(&a.id),
                Some(&a.timestamp),
                Some(&a.signature),
                &body,
                chrono::Utc::now().timestamp(),
            )?;
            println!("valid");
            Ok(())
        }
        Command::Send(a) => {
            let data = parse_json(&read_input(&a.data)?, "DATA")?;
            let c = Client::new(a.client);
            let body = json!({
                "type": a.event_type, "data": data, "actor": a.actor,
                "idempotency_key": a.idempotency_key, "deliver_at": a.deliver_at,
            });
            print(
                &c.call(M::POST, &c.tenant_path("/events"), Some(body))
                    .await?,
            );
            Ok(())
        }
        Command::Tenant(cmd) => {
            let (c, method, path, body) = match cmd {
                TenantCmd::Create { name, id, client } => (
                    Client::new(client),
                    M::POST,
                    "/v1/tenants".to_owned(),
                    Some(json!({"id": id, "name": name})),
                ),
                TenantCmd::List { client } => {
                    (Client::new(client), M::GET, "/v1/tenants".into(), None)
                }
                TenantCmd::Get { id, client } => (
                    Client::new(client),
                    M::GET,
                    format!("/v1/tenants/{id}"),
                    None,
                ),
                TenantCmd::Delete { id, client } => (
                    Client::new(client),
                    M::DELETE,
                    format!("/v1/tenants/{id}"),
                    None,
                ),
                TenantCmd::Token { id, client } => (
                    Client::new(client),
                    M::POST,
                    format!("/v1/tenants/{id}/tokens"),
                    None,
                ),
            };
            print(&c.call(method, &path, body).await?);
            Ok(())
        }
        Command::Endpoint(cmd) => {
            let (client, method, rest, body) = match *cmd {
                EndpointCmd::Create {
                    url,
                    event_types,
                    secret,
                    signing_scheme,
                    format,
                    headers,
                    description,
                    max_attempts,
                    rate_limit,
                    oauth2,
                    signature_headers: names,
                    tls,
                    proxy,
                    client,
                } => {
                    let names = signature_headers(&names)?;
                    let tls = tls.json()?;
                    let mut header_map = serde_json::Map::new();
                    for h in headers {
                        let Some((name, value)) = h.split_once(':') else {
                            return Err(CliError::Usage(format!(
                                "--header {h:?}: write it as 'Name: value'"
                            )));
                        };
                        header_map.insert(name.trim().to_owned(), json!(value.trim()));
                    }
                    (
                        client,
                        M::POST,
                        "/endpoints".to_owned(),
                        Some(json!({
                            "url": url, "event_types": event_types, "secret": secret,
                            "signing_scheme": signing_scheme, "format": format,
                            "headers": (!header_map.is_empty()).then_some(header_map),
                            "description": description, "max_attempts": max_attempts,
                            "oauth2": oauth2.json(), "signature_headers": names, "tls": tls,
                            "proxy": proxy,
                            // A bare number goes as a number (per second), as the API takes it.
                            "rate_limit": rate_limit.map(|r| match r.parse::<u32>() {
                                Ok(n) => json!(n),
                                Err(_) => json!(r),
                            }),
                        })),
                    )
                }
                EndpointCmd::List { client } => (client, M::GET, "/endpoints".into(), None),
                EndpointCmd::Get { id, client } => {
                    (client, M::GET, format!("/endpoints/{id}"), None)
                }
                EndpointCmd::Stats { id, client } => {
                    (client, M::GET, format!("/endpoints/{id}/stats"), None)
                }
                EndpointCmd::Update {
                    id,
                    url,
                    enable,
                    disable,
                    format,
                    rate_limit,
                    oauth2,
                    no_oauth2,
                    signature_headers: names,
                    tls,
                    no_tls,
                    proxy,
                    clear_proxy,
                    client,
                } => {
                    let mut patch = serde_json::Map::new();
                    if let Some(p) = proxy {
                        patch.insert("proxy".into(), json!(p));
                    } else if clear_proxy {
                        patch.insert("proxy".into(), Value::Null);
                    }
                    if let Some(t) = tls.json()? {
                        patch.insert("tls".into(), t);
                    } else if no_tls {
                        patch.insert("tls".into(), Value::Null);
                    }
                    if let Some(names) = signature_headers(&names)? {
                        patch.insert("signature_headers".into(), names);
                    }
                    if let Some(o) = oauth2.json() {
                        patch.insert("oauth2".into(), o);
                    } else if no_oauth2 {
                        patch.insert("oauth2".into(), Value::Null);
                    }
                    if let Some(r) = rate_limit {
                        let value = match (r.as_str(), r.parse::<u32>()) {
                            ("none", _) => Value::Null,
                            (_, Ok(n)) => json!(n),
                            _ => json!(r),
                        };
                        patch.insert("rate_limit".into(), value);
                    }
                    if let Some(f) = format {
                        patch.insert("format".into(), json!(f));
                    }
                    if let Some(u) = url {
                        patch.insert("url".into(), json!(u));
                    }
                    if enable || disable {
                        patch.insert("enabled".into(), json!(enable));
                    }
                    (
                        client,
                        M::PATCH,
                        format!("/endpoints/{id}"),
                        Some(Value::Object(patch)),
                    )
                }
                EndpointCmd::Delete { id, client } => {
                    (client, M::DELETE, format!("/endpoints/{id}"), None)
                }
                EndpointCmd::RotateSecret { id, client } => (
                    client,
                    M::POST,
                    format!("/endpoints/{id}/rotate-secret"),
                    None,
                ),
            };
            let c = Client::new(client);
            print(&c.call(method, &c.tenant_path(&rest), body).await?);
            Ok(())
        }
        Command::EventType(cmd) => match cmd {
            EventTypeCmd::Create {
                name,
                description,
                schema,
                client,
            } => {
                let schema = schema
                    .map(|p| read_file(&p).and_then(|t| parse_json(&t, "schema")))
                    .transpose()?;
                let c = Client::new(client);
                let body = json!({"name": name, "description": description, "schema": schema});
                print(&c.call(M::POST, "/v1/event-types", Some(body)).await?);
                Ok(())
            }
            EventTypeCmd::List { client } => {
                print(
                    &Client::new(client)
                        .call(M::GET, "/v1/event-types", None)
                        .await?,
                );
                Ok(())
            }
            EventTypeCmd::Load { file, client } => {
                let catalog = parse_json(&read_file(&file)?, "catalog")?;
                let items = catalog
                    .as_array()
                    .ok_or_else(|| CliError::Usage("catalog must be a JSON array".into()))?;
                let c = Client::new(client);
                let (mut created, mut existing) = (0, 0);
                for item in items {
                    match c.call(M::POST, "/v1/event-types", Some(item.clone())).await {
                        Ok(_) => created += 1,
                        Err(CliError::Api { status: 409, .. }) => existing += 1,
                        Err(e) => return Err(e),
                    }
                }
                println!("{created} event types created, {existing} already present");
                Ok(())
            }
        },
        Command::Events(cmd) => {
            let (client, rest) = match cmd {
                EventsCmd::List {
                    event_type,
                    limit,
                    client,
                } => (
                    client,
                    format!(
                        "/events{}",
                        query(&[("type", event_type), ("limit", Some(limit.to_string()))])
                    ),
                ),
                EventsCmd::Get { id, client } => (client, format!("/events/{id}")),
            };
            let c = Client::new(client);
            print(&c.call(M::GET, &c.tenant_path(&rest), None).await?);
            Ok(())
        }
        Command::Deliveries(cmd) => {
            let (client, method, rest) = match cmd {
                DeliveriesCmd::List {
                    status,
                    endpoint,
                    event,
                    limit,
                    client,
                } => (
                    client,
                    M::GET,
                    format!(
                        "/deliveries{}",
                        query(&[
                            ("status", status),
                            ("endpoint", endpoint),
                            ("event", event),
                            ("limit", Some(limit.to_string())),
                        ])
                    ),
                ),
                DeliveriesCmd::Get { id, client } => (client, M::GET, format!("/deliveries/{id}")),
                DeliveriesCmd::Retry { id, client } => {
                    (client, M::POST, format!("/deliveries/{id}/retry"))
                }
            };
            let c = Client::new(client);
            print(&c.call(method, &c.tenant_path(&rest), None).await?);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_config_file_and_subcommand_are_found_before_parsing() {
        let scanned = |argv: &[&str]| {
            let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
            let (file, sub) = scan(&argv);
            (file, sub.map(OsStr::to_owned))
        };
        let some = |s: &str| Some(OsString::from(s));
        assert_eq!(
            scanned(&["hr", "--config", "a.toml", "serve"]),
            (some("a.toml"), some("serve"))
        );
        assert_eq!(
            scanned(&["hr", "serve", "--config=b.toml", "--listen", "x"]),
            (some("b.toml"), some("serve"))
        );
        assert_eq!(scanned(&["hr", "migrate"]), (None, some("migrate")));
        assert_eq!(
            scanned(&["hr", "send", "--", "--config", "c"]),
            (None, some("send"))
        );
    }

    #[test]
    fn serve_migrate_and_import_take_the_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "database_url = \"sqlite://f.db\"\nmax_attempts = 4").unwrap();
        let path = file.path().to_str().unwrap().to_owned();
        let path = path.as_str();
        let parse = |argv: &[&str]| Cli::try_parse_with_config(argv.iter().copied());
        let Command::Serve(args) = parse(&["hr", "--config", path, "serve", "--max-attempts", "9"])
            .unwrap()
            .command
        else {
            panic!("not serve")
        };
        // The flag wins over the file (the environment could set the database URL).
        assert_eq!(args.max_attempts, 9);
        let Command::Migrate(store) = parse(&["hr", "migrate", "--config", path]).unwrap().command
        else {
            panic!("not migrate")
        };
        if std::env::var_os("HOOKRELAY_DATABASE_URL").is_none() {
            assert_eq!(store.database_url, "sqlite://f.db");
        }
        let Command::Import(import) =
            parse(&["hr", "import", "--from", "postgres://x", "--config", path])
                .unwrap()
                .command
        else {
            panic!("not import")
        };
        if std::env::var_os("HOOKRELAY_MAX_ATTEMPTS").is_none() {
            assert_eq!(import.serve.max_attempts, 4);
        }
        // A key of no `serve` setting is refused, by `migrate` too.
        writeln!(file, "tenant = \"t\"").unwrap();
        let err = parse(&["hr", "migrate", "--config", path])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`tenant`") && err.contains(path), "{err}");
        // Client commands do not read it.
        assert!(parse(&["hr", "--config", path, "openapi"]).is_ok());
    }
}
