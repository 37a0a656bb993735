//! The `hookrelay` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use anyhow::Context;
use hookrelay::{
    cli::{self, Cli, Command},
    config::{Config, ServeArgs},
    store, telemetry, App,
};

#[tokio::main]
async fn main() -> ExitCode {
    // The config file's values are already in the arguments (under flags and environment).
    let cli = Cli::parse_with_config();
    let result = match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Import(args) => import(*args).await,
        other => cli::run_client(other).await.map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let telemetry = telemetry::init();
    let result = run_server(args).await;
    // Flushing blocks until the exporter's thread has sent what it holds.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    result
}

async fn run_server(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::from_args(args).context("invalid configuration")?;
    let role = config.role;
    let database = hookrelay::secrets::redact_url(&config.database_url).into_owned();
    let app = App::build(config).await.context("cannot start")?;
    if let Some(token) = app.generated_admin_token() {
        // Printed once, on stdout, so it can be captured; only its hash is stored.
        println!("Generated admin token (shown once, keep it): {token}");
        println!("Use it as: export HOOKRELAY_ADMIN_TOKEN={token}");
    }
    tracing::info!(addr = %app.local_addr(), ?role, database = %database, "hookrelay started");
    app.run(shutdown_signal()).await.context("server failed")?;
    tracing::info!("hookrelay stopped");
    Ok(())
}

async fn migrate(args: hookrelay::config::StoreArgs) -> anyhow::Result<()> {
    // The other settings keep their built-in defaults: `migrate` does not use them.
    let serve = ServeArgs {
        store: args,
        ..Default::default()
    };
    let config = Config::from_args(serve).context("invalid configuration")?;
    store::connect(
        &config.database_url,
        config.database_pool_size,
        &config.pg_schemas,
        None,
    )
    .await
    .context("migration failed")?;
    println!(
        "migrations applied to {}",
        hookrelay::secrets::redact_url(&config.database_url)
    );
    Ok(())
}

async fn import(args: cli::ImportArgs) -> anyhow::Result<()> {
    let config = Config::from_args(args.serve).context("invalid configuration")?;
    let mut names = hookrelay::import::SourceNames {
        configurations: args.configurations_table,
        deliveries: args.deliveries_table,
        ..Default::default()
    };
    for spec in &args.columns {
        names.rename(spec).map_err(anyhow::Error::msg)?;
    }
    let options = hookrelay::import::ImportOptions {
        from: args.from,
        names,
        tenant: args.tenant,
        user_agent: Some(args.user_agent).filter(|ua| !ua.is_empty()),
        max_attempts: config.retry.max_attempts,
        max_endpoints: config.max_endpoints_per_tenant,
        dry_run: args.dry_run,
    };
    let store = hookrelay::open_store(&config)
        .await
        .context("cannot open hookrelay's store")?;
    let policy = hookrelay::network_policy(&config);
    hookrelay::import::run(store.as_ref(), &policy, &options, &mut |line| {
        println!("{line}")
    })
    .await
    .context("import failed")?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
