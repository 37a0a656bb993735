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
pub mod ingest;
pub mod signing;
pub mod store;
pub mod telemetry;
pub mod wake;

use config::Config;
use destinations::{http::HttpDestination, net::NetworkPolicy, BrokerSettings, Destinations};
use dispatch::{Dispatcher, Waker};
use store::Store;

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
}

/// A built, not yet running, hookrelay server: listener bound, store open and migrated.
pub struct App {
    listener: Option<TcpListener>,
    addr: SocketAddr,
    state: api::AppState,
    dispatcher: Option<Dispatcher>,
    generated_admin_token: Option<String>,
}

impl App {
    /// Opens the store, applies migrations, binds the listener (port 0 picks a free port)
    /// and prepares the dispatcher, as `config.role` asks.
    pub async fn build(mut config: Config) -> Result<Self, StartError> {
        let store = store::connect(&config.database_url, config.database_pool_size).await?;
        store
            .set_default_max_attempts(config.retry.max_attempts)
            .await?;
        let generated_admin_token = ensure_admin_token(store.as_ref(), &config).await?;
        if let Some(token) = &generated_admin_token {
            // Also accept it in this process without a store round trip.
            config.admin_token = Some(token.clone());
        }
        let policy = Arc::new(NetworkPolicy::new(config.allow_networks.clone()));
        let waker = Waker::default();
        let dispatcher = if config.role.runs_dispatcher() {
            // Commits by other processes (and by dispatch_webhook in applications'
            // transactions) wake this process's dispatcher too.
            store.listen(waker.clone()).await?;
            let http = HttpDestination::new(
                policy.clone(),
                config.dispatch.request_timeout,
                config.dispatch.connect_timeout,
            )?;
            let brokers = BrokerSettings {
                timeout: config.dispatch.request_timeout,
                connect_timeout: config.dispatch.connect_timeout,
                pubsub_emulator_host: config.dispatch.pubsub_emulator_host.clone(),
            };
            Some(Dispatcher::new(
                store.clone(),
                Arc::new(Destinations::new(http, brokers)),
                config.retry,
                config.breaker,
                config.dispatch.clone(),
                waker.clone(),
            ))
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
        let state = api::AppState::new(store, config, policy, waker);
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
        if self.state.config.role.runs_dispatcher() {
            tokio::spawn(prune(
                self.state.store.clone(),
                self.state.config.retention,
                stop_rx.clone(),
            ));
        }
        let api = self.listener.map(|listener| {
            let mut rx = stop_rx.clone();
            let router = api::router(self.state.clone());
            info!(addr = %self.addr, "api listening");
            tokio::spawn(async move {
                axum::serve(listener, router)
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
        Ok(())
    }
}

/// Retention: deletes attempts of delivered deliveries older than `retention`, 1,000 at a
/// time, so a live system never sees a long delete; then rests a minute.
async fn prune(
    store: Arc<dyn Store>,
    retention: std::time::Duration,
    mut stop: watch::Receiver<bool>,
) {
    const BATCH: u32 = 1000;
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    while !*stop.borrow() {
        let cutoff = domain::now() - retention;
        let rest = match store.prune_attempts(cutoff, BATCH).await {
            Ok(n) if n >= u64::from(BATCH) => std::time::Duration::from_millis(50),
            Ok(n) => {
                if n > 0 {
                    info!(pruned = n, "retention: old attempts deleted");
                }
                std::time::Duration::from_secs(60)
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention: pruning failed");
                std::time::Duration::from_secs(60)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(rest) => {}
            _ = stop.changed() => {}
        }
    }
}

/// When no admin token is configured and none was ever generated, makes one, stores its
/// hash and returns it so that it can be printed once.
async fn ensure_admin_token(
    store: &dyn Store,
    config: &Config,
) -> Result<Option<String>, store::StoreError> {
    if config.admin_token.is_some() || store.has_admin_token().await? {
        return Ok(None);
    }
    let token = api::generate_admin_token();
    store
        .create_token(&store::TokenRecord {
            id: domain::new_id(domain::prefix::TOKEN),
            tenant_id: None,
            hash: hex::encode(api::hash_token(&token)),
            created_at: domain::now(),
        })
        .await?;
    Ok(Some(token))
}
