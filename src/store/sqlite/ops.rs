//! The statistics SQLite adds inside the completion transaction (the rest of
//! [`crate::store::OpsStore`] is written once, in `store/sql/ops.rs`).

use sqlx::SqliteConnection;

use super::{db, to_json};
use crate::store::{
    ops::{counter_columns, stats_to_json, BatchStats, EndpointMinute},
    Result,
};

/// Adds per-minute counters, the dispatcher's and each endpoint's, inside the completion
/// transaction.
pub(super) async fn add_stats(
    tx: &mut SqliteConnection,
    dispatcher: &str,
    batch: &BatchStats,
) -> Result<()> {
    add_endpoint_stats(tx, dispatcher, &batch.endpoints).await?;
    let stats = &batch.minutes;
    if stats.is_empty() {
        return Ok(());
    }
    let cols = counter_columns();
    let select: Vec<String> = (0..cols.len() + 2)
        .map(|i| format!("j.value ->> '$[{i}]'"))
        .collect();
    let update: Vec<String> = cols
        .iter()
        .map(|c| format!("{c} = {c} + excluded.{c}"))
        .collect();
    let sql = format!(
        "INSERT INTO stats_minutely (minute, dispatcher, {}) SELECT {} FROM json_each(?) j \
         WHERE true ON CONFLICT (minute, dispatcher) DO UPDATE SET {}",
        cols.join(", "),
        select.join(", "),
        update.join(", ")
    );
    let rows: Vec<serde_json::Value> = stats.iter().map(|s| stats_to_json(dispatcher, s)).collect();
    sqlx::query(&sql)
        .bind(to_json(&rows)?)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    Ok(())
}

async fn add_endpoint_stats(
    tx: &mut SqliteConnection,
    dispatcher: &str,
    endpoints: &[EndpointMinute],
) -> Result<()> {
    if endpoints.is_empty() {
        return Ok(());
    }
    let cols = counter_columns();
    let n = cols.len();
    let select: Vec<String> = (0..n + 6)
        .map(|i| format!("j.value ->> '$[{i}]'"))
        .collect();
    let update: Vec<String> = cols
        .iter()
        .map(|c| format!("{c} = {c} + excluded.{c}"))
        .collect();
    let sql = format!(
        "INSERT INTO endpoint_stats_minutely (endpoint_id, minute, dispatcher, {}, \
           last_success_at, last_failure_at, last_error) \
         SELECT {} FROM json_each(?) j WHERE true \
         ON CONFLICT (endpoint_id, minute, dispatcher) DO UPDATE SET {}, \
           last_success_at = max(coalesce(last_success_at, 0), \
                                 coalesce(excluded.last_success_at, 0)), \
           last_error = CASE WHEN excluded.last_failure_at >= coalesce(last_failure_at, 0) \
                             THEN excluded.last_error ELSE last_error END, \
           last_failure_at = max(coalesce(last_failure_at, 0), \
                                 coalesce(excluded.last_failure_at, 0))",
        cols.join(", "),
        select.join(", "),
        update.join(", ")
    );
    let rows: Vec<serde_json::Value> = endpoints.iter().map(|e| e.to_json(dispatcher)).collect();
    sqlx::query(&sql)
        .bind(to_json(&rows)?)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    Ok(())
}
