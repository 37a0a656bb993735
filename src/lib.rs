//! hookrelay: a self-hosted webhook and event-delivery service.
//!
//! Data flows one way: ingest → store (event + deliveries in one transaction) → dispatch
//! (claim under a lease, send, record the attempt) → destination. [`App`] wires the parts
//! together; `main.rs` only parses the command line and runs it.

use std::{future::Future, net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, sync::watch};
use tracing::{error, info};

pub mod api;
pub mod cli;
pub mod config;
pub mod destinations;
pub mod dispatch;
pub mod domain;
#[doc(hidden)]
pub mod fuzzing;
pub mod import;
pub mod ingest;
pub mod ops;
pub mod secrets;
pub mod service;
pub mod signing;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod ui;
pub mod wake;

use config::Config;
use destinations::{http::HttpDestination, net::NetworkPolicy, BrokerSettings, Destinations};
use dispatch::Dispatcher;
use store::Store;
use wake::Waker;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store")]
    Store(#[from] store::StoreError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client")]
    Http(#[from] reqwest::Error),
    #[error("invalid --encryption-key")]
    Secrets(#[from] secrets::SecretsError),
    #[error("cannot set up the metrics")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
}

/// A built, not yet running, hookrelay server: listener bound, store open and migrated.
pub struct App {
    listener: Option<TcpListener>,
    addr: SocketAddr,
    state: api::AppState,
    dispatcher: Option<Dispatcher>,
    generated_admin_token: Option<String>,
}

/// Opens the store that `config` names, applies its migrations and, with encryption keys,
/// seals the credentials it holds (`serve` and `import` share this).
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, StartError> {
    let keys = secrets::Keyring::from_base64(&config.encryption_keys)?;
    let store = store::connect(
        &config.database_url,
        config.database_pool_size,
        &config.pg_schemas,
        keys,
    )
    .await?;
    let rewritten = store.reseal().await?;
    if rewritten > 0 {
        tracing::info!(
            rows = rewritten,
            "endpoint, inbox and source credentials sealed with the current encryption key"
        );
    }
    Ok(store)
}

/// Which destinations HTTP deliveries may reach, as `config` allows.
pub fn network_policy(config: &Config) -> NetworkPolicy {
    let policy = NetworkPolicy::new(config.allow_networks.clone());
    match config.dns_server {
        Some(server) => policy.with_lookup(destinations::net::Lookup::server(server)),
        None => policy,
    }
}

impl App {
    /// Opens the store, applies migrations, binds the listener (port 0 picks a free port)
    /// and prepares the dispatcher, as `config.role` asks.
    pub async fn build(mut config: Config) -> Result<Self, StartError> {
        let store = open_store(&config).await?;
        store
            .set_default_max_attempts(config.retry.max_attempts)
            .await?;
        let generated_admin_token = ensure_admin_token(store.as_ref(), &config).await?;
        if let Some(token) = &generated_admin_token {
            // Also accept it in this process without a store round trip.
            config.admin_token = Some(token.as_str().into());
        }
        let policy = Arc::new(network_policy(&config));
        let waker = Waker::default();
        let http = HttpDestination::new(
            policy.clone(),
            config.dispatch.request_timeout,
            config.dispatch.connect_timeout,
            config.egress()?,
        )?;
        let brokers = BrokerSettings {
            timeout: config.dispatch.request_timeout,
            connect_timeout: config.dispatch.connect_timeout,
            pubsub_emulator_host: config.dispatch.pubsub_emulator_host.clone(),
        };
        // Every destination, by URL scheme; shared by the dispatcher and the endpoint test.
        let destinations: Arc<Destinations> = Arc::new(Destinations::new(http, brokers));
        let ops = Arc::new(ops::Ops::new(destinations.clone())?);
        let dispatcher = if config.role.runs_dispatcher() {
            // Commits by other processes (and by dispatch_webhook in applications'
            // transactions) wake this process's dispatcher too.
            store.listen(waker.clone()).await?;
            Some(
                Dispatcher::new(
                    store.clone(),
                    destinations,
                    config.retry,
                    config.breaker,
                    config.dispatch.clone(),
                    waker.clone(),
                )
                .with_ops(ops.clone()),
            )
        } else {
            None
        };
        let (listener, addr) = if config.role.runs_api() {
            let listener =
                TcpListener::bind(config.listen)
                    .await
                    .map_err(|source| StartError::Listen {
                        addr: config.listen,
                        source,
                    })?;
            let addr = listener.local_addr().map_err(|source| StartError::Listen {
                addr: config.listen,
                source,
            })?;
            (Some(listener), addr)
        } else {
            (None, config.listen)
        };
        let state = api::AppState::new(store, config, policy, waker, ops);
        Ok(Self {
            listener,
            addr,
            state,
            dispatcher,
            generated_admin_token,
        })
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The admin token generated on this first start, if one was (shown once).
    pub fn generated_admin_token(&self) -> Option<&str> {
        self.generated_admin_token.as_deref()
    }

    /// The store this app uses.
    pub fn store(&self) -> Arc<dyn Store> {
        self.state.store.clone()
    }

    /// Runs the API and the dispatcher until `shutdown` completes, then stops accepting,
    /// lets in-flight work finish and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let dispatcher = self.dispatcher.map(|d| {
            let rx = stop_rx.clone();
            tokio::spawn(d.run(rx))
        });
        let mut heartbeat = None;
        let mut sources_task = None;
        if self.state.config.role.runs_dispatcher() {
            let store = self.state.store.clone();
            tokio::spawn(ops::retention::run(
                store.clone(),
                self.state.config.retention,
                stop_rx.clone(),
            ));
            heartbeat = Some(tokio::spawn(ops::heartbeat(
                store.clone(),
                self.state.ops.dispatcher_id.clone(),
                stop_rx.clone(),
            )));
            let evaluator = ops::alerts::Evaluator {
                store,
                config: self.state.config.alerts.clone(),
                waker: self.state.waker.clone(),
                default_max_attempts: self.state.config.retry.max_attempts,
                ops: Some(self.state.ops.clone()),
            };
            let state = self.state.clone();
            let stop = stop_rx.clone();
            tokio::spawn(async move {
                if let Err(e) = state
                    .service()
                    .install_alert_sinks(&state.config.alerts)
                    .await
                {
                    tracing::warn!(
                        error = %e,
                        "cannot set up the alert sinks; alerts are kept but not sent"
                    );
                }
                evaluator.run(stop).await;
            });
            let supervisor = sources::Supervisor {
                intake: Arc::new(sources::Intake {
                    store: self.state.store.clone(),
                    schemas: self.state.schemas.clone(),
                    waker: self.state.waker.clone(),
                    default_max_attempts: self.state.config.retry.max_attempts,
                    max_bytes: self.state.config.max_body_bytes,
                    ops: self.state.ops.clone(),
                }),
                consumer: self.state.ops.dispatcher_id.clone(),
            };
            sources_task = Some(tokio::spawn(supervisor.run(stop_rx.clone())));
        }
        let api = self.listener.map(|listener| {
            let mut rx = stop_rx.clone();
            let router = api::router(self.state.clone(), ui::router(&self.state));
            info!(addr = %self.addr, "api listening");
            tokio::spawn(async move {
                // The peer address: dashboard logins are throttled per client address.
                let service = router.into_make_service_with_connect_info::<SocketAddr>();
                axum::serve(listener, service)
                    .with_graceful_shutdown(async move {
                        let _ = rx.wait_for(|stop| *stop).await;
                    })
                    .await
            })
        });
        if let Some(api) = api {
            match api.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    error!(error = %e, "api server failed");
                    return Err(e);
                }
                Err(e) => error!(error = %e, "api task failed"),
            }
        }
        if let Some(d) = dispatcher {
            if let Err(e) = d.await {
                error!(error = %e, "dispatcher task failed");
            }
        }
        if let Some(s) = sources_task {
            // Consumers acknowledge what they committed before the process ends.
            let _ = s.await;
        }
        if let Some(h) = heartbeat {
            // Records the clean stop, so this dispatcher is not taken for stalled.
            let _ = h.await;
        }
        Ok(())
    }
}

/// When no admin token is configured and none was ever generated, makes one, stores its
/// hash and returns it so that it can be printed once. When one is configured, revokes any
/// generated one: only the configured token is an admin token from then on.
async fn ensure_admin_token(
    store: &dyn Store,
    config: &Config,
) -> Result<Option<String>, store::StoreError> {
    if config.admin_token.is_some() {
        let revoked = store.delete_admin_tokens().await?;
        if revoked > 0 {
            tracing::warn!(
                revoked,
                "an admin token is configured: the generated admin token no longer works"
            );
        }
        return Ok(None);
    }
    if store.has_admin_token().await? {
        return Ok(None);
    }
    let token = api::generate_admin_token();
    store
        .create_token(&store::TokenRecord {
            id: domain::new_id(domain::prefix::TOKEN),
            tenant_id: None,
            hash: secrets::token_hash(&token),
            created_at: domain::now(),
        })
        .await?;
    Ok(Some(token))
}
