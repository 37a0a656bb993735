//! The statistics SQLite adds inside the completion transaction (the rest of
//! [`crate::store::OpsStore`] is written once, in `store/sql/ops.rs`).

use std::sync::LazyLock;

use super::to_json;
use crate::store::{
    ops::{counter_columns, stats_to_json, BatchStats},
    Result,
};

/// The two statements that add a batch's per-minute counters, each endpoint's and the
/// dispatcher's (a parameter each, in that order), as part of the completion's statements
/// (see `COMPLETE` in the SQLite store). Made once: the columns never change.
pub(super) static ADD_STATS: LazyLock<String> = LazyLock::new(|| {
    let cols = counter_columns();
    let n = cols.len();
    let select = |count: usize| -> String {
        (0..count)
            .map(|i| format!("j.value ->> '$[{i}]'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let update = cols
        .iter()
        .map(|c| format!("{c} = {c} + excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let cols = cols.join(", ");
    format!(
        "INSERT INTO endpoint_stats_minutely (endpoint_id, minute, dispatcher, {cols}, \
           last_success_at, last_failure_at, last_error) \
         SELECT {endpoint_select} FROM json_each(?) j WHERE true \
         ON CONFLICT (endpoint_id, minute, dispatcher) DO UPDATE SET {update}, \
           last_success_at = max(coalesce(last_success_at, 0), \
                                 coalesce(excluded.last_success_at, 0)), \
           last_error = CASE WHEN excluded.last_failure_at >= coalesce(last_failure_at, 0) \
                             THEN excluded.last_error ELSE last_error END, \
           last_failure_at = max(coalesce(last_failure_at, 0), \
                                 coalesce(excluded.last_failure_at, 0)); \
         INSERT INTO stats_minutely (minute, dispatcher, {cols}) \
         SELECT {minute_select} FROM json_each(?) j WHERE true \
         ON CONFLICT (minute, dispatcher) DO UPDATE SET {update}",
        endpoint_select = select(n + 6),
        minute_select = select(n + 2),
    )
});

/// The parameters of [`ADD_STATS`]: each endpoint's rows and the dispatcher's, as JSON
/// arrays (empty without a dispatcher's statistics).
pub(super) fn stats_params(stats: Option<(&str, &BatchStats)>) -> Result<(String, String)> {
    let Some((dispatcher, batch)) = stats else {
        return Ok(("[]".into(), "[]".into()));
    };
    let endpoints: Vec<serde_json::Value> = batch
        .endpoints
        .iter()
        .map(|e| e.to_json(dispatcher))
        .collect();
    let minutes: Vec<serde_json::Value> = batch
        .minutes
        .iter()
        .map(|s| stats_to_json(dispatcher, s))
        .collect();
    Ok((to_json(&endpoints)?, to_json(&minutes)?))
}
