//! The statistics PostgreSQL adds inside the completion statement (the rest of
//! [`crate::store::OpsStore`] is written once, in `store/sql/ops.rs`).

use super::to_json;
use crate::store::{
    ops::{counter_columns, stats_to_json, BatchStats},
    Result,
};

/// A CTE of the completion statement, `counted`, that adds the per-minute counters in
/// `$18` (JSON rows of [`stats_json`]) to the dispatcher's rows. Each dispatcher has rows of
/// its own, so concurrent processes never wait for each other here.
pub(super) static STATS_CTE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let cols = counter_columns();
    let select: Vec<String> = (0..cols.len())
        .map(|i| format!("(x ->> {})::int8", i + 2))
        .collect();
    let update: Vec<String> = cols
        .iter()
        .map(|c| format!("{c} = stats_minutely.{c} + excluded.{c}"))
        .collect();
    format!(
        "counted AS (INSERT INTO stats_minutely (minute, dispatcher, {}) \
         SELECT (x ->> 0)::int8, x ->> 1, {} FROM jsonb_array_elements($18::jsonb) x \
         ON CONFLICT (minute, dispatcher) DO UPDATE SET {} RETURNING 1)",
        cols.join(", "),
        select.join(", "),
        update.join(", ")
    )
});

/// A CTE of the completion statement, `endpoint_counted`, that adds each endpoint's
/// per-minute counters in `$19` (JSON rows of [`EndpointMinute::to_json`]) to the
/// dispatcher's rows of that endpoint, keeping the latest success and failure.
pub(super) static ENDPOINT_STATS_CTE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| {
        let cols = counter_columns();
        let n = cols.len();
        let select: Vec<String> = (0..n).map(|i| format!("(x ->> {})::int8", i + 3)).collect();
        let update: Vec<String> = cols
            .iter()
            .map(|c| format!("{c} = endpoint_stats_minutely.{c} + excluded.{c}"))
            .collect();
        format!(
            "endpoint_counted AS (INSERT INTO endpoint_stats_minutely \
               (endpoint_id, minute, dispatcher, {cols}, last_success_at, last_failure_at, \
                last_error) \
             SELECT x ->> 0, (x ->> 1)::int8, x ->> 2, {select}, (x ->> {s})::int8, \
                    (x ->> {f})::int8, x ->> {e} FROM jsonb_array_elements($19::jsonb) x \
             ON CONFLICT (endpoint_id, minute, dispatcher) DO UPDATE SET {update}, \
               last_success_at = GREATEST(endpoint_stats_minutely.last_success_at, \
                                          excluded.last_success_at), \
               last_error = CASE WHEN excluded.last_failure_at >= \
                                      coalesce(endpoint_stats_minutely.last_failure_at, 0) \
                                 THEN excluded.last_error \
                                 ELSE endpoint_stats_minutely.last_error END, \
               last_failure_at = GREATEST(endpoint_stats_minutely.last_failure_at, \
                                          excluded.last_failure_at) \
             RETURNING 1)",
            cols = cols.join(", "),
            select = select.join(", "),
            update = update.join(", "),
            s = n + 3,
            f = n + 4,
            e = n + 5,
        )
    });

/// The `$18` and `$19` parameters of [`STATS_CTE`] and [`ENDPOINT_STATS_CTE`].
pub(super) fn stats_json(dispatcher: &str, stats: &BatchStats) -> Result<(String, String)> {
    let rows: Vec<serde_json::Value> = stats
        .minutes
        .iter()
        .map(|s| stats_to_json(dispatcher, s))
        .collect();
    let endpoints: Vec<serde_json::Value> = stats
        .endpoints
        .iter()
        .map(|e| e.to_json(dispatcher))
        .collect();
    Ok((
        to_json(&rows, "stats")?,
        to_json(&endpoints, "endpoint stats")?,
    ))
}
