//! [`OpsStore`] on PostgreSQL: statistics, heartbeats, alerts, inbox and retention.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder, Row};

use super::{db, has_nul, ms, push_page, to_json, write_error, PostgresStore};
use crate::domain::{from_millis, BreakerPolicy, Delivery, Event};
use crate::store::{
    ops::{
        counter_columns, stats_from_row, stats_to_json, AlertRecord, AlertRow, AuditEntry,
        AuditFilter, AuditRow, BatchStats, BeatRow, DispatcherBeat, EndpointHistory,
        FlaggedEndpoint, Inbox, InboxMessage, InboxRow, MessageRow, MinuteStats, OpsStore,
        PendingSummary, RejectionRow, Source, SourceRejection, SourceRow, REJECTION_COLUMNS,
        SOURCE_COLUMNS,
    },
    Completion, Page, Result,
};

const AUDIT_COLUMNS: &str =
    "id, tenant_id, actor, action, target, changes::text AS changes, created_at";

impl PostgresStore {
    /// Gives inboxes written before tokens were hashed (migration 0031) their token hash;
    /// their token is still plaintext then. Several processes starting together write the
    /// same hashes. Returns how many were hashed.
    pub(super) async fn hash_inbox_tokens(&self) -> Result<u64> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT id, token FROM inboxes WHERE token_hash IS NULL")
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        let mut hashed = 0;
        for (id, token) in rows {
            if crate::secrets::is_sealed(&token) {
                // Not written by any version that lacked the hash: leave it unfindable.
                tracing::warn!(inbox = %id, "inbox has a sealed token but no token hash");
                continue;
            }
            let done = sqlx::query(
                "UPDATE inboxes SET token_hash = $1 WHERE id = $2 AND token_hash IS NULL",
            )
            .bind(Inbox::hash_token(&token))
            .bind(&id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
            hashed += done.rows_affected();
        }
        Ok(hashed)
    }
}

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

const BEAT_COLUMNS: &str = concat!(
    "id, hostname, pid, ",
    ms_col!("started_at"),
    ", ",
    ms_col!("last_heartbeat"),
    ", ",
    ms_col!("stopped_at")
);

const ALERT_COLUMNS: &str = concat!(
    "rule, subject, episode, message, details::text AS details, ",
    ms_col!("fired_at"),
    ", fired_sent, ",
    ms_col!("resolved_at")
);

const INBOX_COLUMNS: &str = concat!(
    "id, tenant_id, token, token_hash, secret, description, ",
    ms_col!("created_at")
);

const MESSAGE_COLUMNS: &str = concat!(
    "id, inbox_id, ",
    ms_col!("received_at"),
    ", method, headers::text AS headers, body, truncated, verification, verify_error"
);

/// `sum(c), …` over the counter columns, in [`counter_columns`] order.
fn summed_counters() -> String {
    counter_columns()
        .iter()
        .map(|c| format!("sum({c})::int8"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows of `minute, summed counters…` as [`MinuteStats`].
fn minute_rows(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<MinuteStats>> {
    let n = counter_columns().len();
    rows.iter()
        .map(|r| {
            let values = (0..=n)
                .map(|i| r.try_get::<i64, _>(i))
                .collect::<std::result::Result<Vec<i64>, _>>()
                .map_err(db)?;
            Ok(stats_from_row(&values))
        })
        .collect()
}

#[async_trait]
impl OpsStore for PostgresStore {
    async fn complete_with_stats(
        &self,
        completions: &[Completion],
        policy: &BreakerPolicy,
        dispatcher: &str,
        stats: &BatchStats,
    ) -> Result<()> {
        self.complete_in(completions, policy, Some((dispatcher, stats)))
            .await
    }

    async fn endpoint_stats_since(
        &self,
        endpoint_id: &str,
        since_minute: i64,
    ) -> Result<EndpointHistory> {
        if has_nul(&[endpoint_id]) {
            return Ok(EndpointHistory::default());
        }
        let sums = summed_counters();
        let rows = sqlx::query(&format!(
            "SELECT minute, {} FROM endpoint_stats_minutely \
             WHERE endpoint_id = $1 AND minute >= $2 GROUP BY minute ORDER BY minute",
            sums
        ))
        .bind(endpoint_id)
        .bind(since_minute)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let minutes = minute_rows(&rows)?;
        let (success, failure, error): (Option<i64>, Option<i64>, Option<String>) = sqlx::query_as(
            "SELECT (SELECT max(last_success_at) FROM endpoint_stats_minutely \
                          WHERE endpoint_id = $1 AND minute >= $2), \
                        f.last_failure_at, f.last_error \
                 FROM (SELECT 1) one LEFT JOIN LATERAL ( \
                   SELECT last_failure_at, last_error FROM endpoint_stats_minutely \
                   WHERE endpoint_id = $1 AND minute >= $2 AND last_failure_at IS NOT NULL \
                   ORDER BY last_failure_at DESC LIMIT 1) f ON true",
        )
        .bind(endpoint_id)
        .bind(since_minute)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(EndpointHistory {
            minutes,
            last_success_at: success.map(from_millis),
            last_failure_at: failure.map(from_millis),
            last_error: error,
        })
    }

    async fn stats_since(&self, since_minute: i64) -> Result<Vec<MinuteStats>> {
        let sums = summed_counters();
        let rows = sqlx::query(&format!(
            "SELECT minute, {} FROM stats_minutely WHERE minute >= $1 GROUP BY minute \
             ORDER BY minute",
            sums
        ))
        .bind(since_minute)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        minute_rows(&rows)
    }

    async fn pending_summary(&self) -> Result<PendingSummary> {
        // Both read only the partial indexes of pending rows (deliveries_due for the count,
        // deliveries_pending_created for the oldest): the finished history is never read.
        let (count, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM deliveries WHERE status = 'pending'), \
                    (SELECT (extract(epoch FROM min(created_at)) * 1000)::int8 \
                     FROM deliveries WHERE status = 'pending')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(PendingSummary {
            count: u64::try_from(count).unwrap_or(0),
            oldest_created_at: oldest.map(from_millis),
        })
    }

    async fn breaker_counts(&self) -> Result<crate::store::ops::BreakerCounts> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT breaker_state, count(*) FROM endpoints GROUP BY breaker_state")
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        Ok(crate::store::ops::BreakerCounts::from_rows(rows))
    }

    async fn flagged_endpoints(&self, limit: u32) -> Result<Vec<FlaggedEndpoint>> {
        let rows: Vec<(String, String, bool, Option<String>, String)> = sqlx::query_as(
            "SELECT id, tenant_id, enabled, disabled_reason, breaker_state FROM endpoints \
             WHERE breaker_state <> 'closed' OR NOT enabled ORDER BY id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(
                |(id, tenant_id, enabled, disabled_reason, breaker_state)| FlaggedEndpoint {
                    id,
                    tenant_id,
                    enabled,
                    disabled_reason,
                    breaker_state,
                },
            )
            .collect())
    }

    async fn heartbeat(&self, b: &DispatcherBeat) -> Result<()> {
        sqlx::query(
            "INSERT INTO dispatchers (id, hostname, pid, started_at, last_heartbeat, stopped_at) \
             VALUES ($1, $2, $3, to_timestamp($4 / 1000.0), to_timestamp($5 / 1000.0), \
                     to_timestamp($6 / 1000.0)) \
             ON CONFLICT (id) DO UPDATE SET last_heartbeat = excluded.last_heartbeat, \
             stopped_at = excluded.stopped_at",
        )
        .bind(&b.id)
        .bind(&b.hostname)
        .bind(i64::from(b.pid))
        .bind(ms(b.started_at))
        .bind(ms(b.last_heartbeat))
        .bind(b.stopped_at.map(ms))
        .execute(&self.pool)
        .await
        .map_err(write_error)?;
        Ok(())
    }

    async fn list_dispatchers(&self, since: DateTime<Utc>) -> Result<Vec<DispatcherBeat>> {
        let rows: Vec<BeatRow> = sqlx::query_as(&format!(
            "SELECT {BEAT_COLUMNS} FROM dispatchers \
             WHERE last_heartbeat >= to_timestamp($1 / 1000.0) OR stopped_at IS NULL \
             ORDER BY started_at, id"
        ))
        .bind(ms(since))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.into_iter().map(DispatcherBeat::from).collect())
    }

    async fn insert_leased(&self, e: &Event, d: &Delivery, lease_id: &str) -> Result<()> {
        sqlx::query(
            "WITH ev AS ( \
               INSERT INTO events (id, tenant_id, type, data, actor, idempotency_key, \
                                   traceparent, created_at, deliver_at) \
               VALUES ($1, $2, $3, $4::json, $5, $6, $7, to_timestamp($8 / 1000.0), \
                       to_timestamp($9 / 1000.0)) RETURNING id) \
             INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, attempts, \
                                     max_attempts, next_attempt_at, lease_id, created_at, \
                                     updated_at) \
             SELECT $10, $2, ev.id, $11, $12, $13, $14, to_timestamp($15 / 1000.0), $16, \
                    to_timestamp($17 / 1000.0), to_timestamp($18 / 1000.0) FROM ev",
        )
        .bind(&e.id)
        .bind(&e.tenant_id)
        .bind(&e.event_type)
        .bind(e.data.to_string())
        .bind(&e.actor)
        .bind(&e.idempotency_key)
        .bind(&e.traceparent)
        .bind(ms(e.created_at))
        .bind(e.deliver_at.map(ms))
        .bind(&d.id)
        .bind(&d.endpoint_id)
        .bind(d.status.as_str())
        .bind(i64::from(d.attempts))
        .bind(i64::from(d.max_attempts))
        .bind(d.next_attempt_at.map(ms))
        .bind(lease_id)
        .bind(ms(d.created_at))
        .bind(ms(d.updated_at))
        .execute(&self.pool)
        .await
        .map_err(write_error)?;
        Ok(())
    }

    async fn list_alerts(&self) -> Result<Vec<AlertRecord>> {
        let rows: Vec<AlertRow> = sqlx::query_as(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts ORDER BY fired_at, rule, subject"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter().map(AlertRecord::try_from).collect()
    }

    async fn open_alert(&self, a: &AlertRecord) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO alerts (rule, subject, episode, message, details, fired_at, fired_sent) \
             VALUES ($1, $2, $3, $4, $5::jsonb, to_timestamp($6 / 1000.0), false) \
             ON CONFLICT (rule, subject) DO NOTHING",
        )
        .bind(&a.rule)
        .bind(&a.subject)
        .bind(&a.episode)
        .bind(&a.message)
        .bind(a.details.to_string())
        .bind(ms(a.fired_at))
        .execute(&self.pool)
        .await
        .map_err(write_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn resolve_alert(
        &self,
        rule: &str,
        subject: &str,
        episode: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        if has_nul(&[rule, subject, episode]) {
            return Ok(());
        }
        sqlx::query(
            "UPDATE alerts SET resolved_at = to_timestamp($1 / 1000.0) \
             WHERE rule = $2 AND subject = $3 AND episode = $4 AND resolved_at IS NULL",
        )
        .bind(ms(at))
        .bind(rule)
        .bind(subject)
        .bind(episode)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn alert_sent(
        &self,
        rule: &str,
        subject: &str,
        episode: &str,
        resolved: bool,
    ) -> Result<()> {
        if has_nul(&[rule, subject, episode]) {
            return Ok(());
        }
        let sql = if resolved {
            "DELETE FROM alerts WHERE rule = $1 AND subject = $2 AND episode = $3"
        } else {
            "UPDATE alerts SET fired_sent = true WHERE rule = $1 AND subject = $2 AND episode = $3"
        };
        sqlx::query(sql)
            .bind(rule)
            .bind(subject)
            .bind(episode)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn create_inbox(&self, i: &Inbox) -> Result<()> {
        sqlx::query(
            "INSERT INTO inboxes \
             (id, tenant_id, token, token_hash, secret, description, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7 / 1000.0))",
        )
        .bind(&i.id)
        .bind(&i.tenant_id)
        .bind(&i.token)
        .bind(&i.token_hash)
        .bind(&i.secret)
        .bind(&i.description)
        .bind(ms(i.created_at))
        .execute(&self.pool)
        .await
        .map_err(write_error)?;
        Ok(())
    }

    async fn list_inboxes(&self, tenant_id: &str, page: &Page) -> Result<Vec<Inbox>> {
        if has_nul(&[tenant_id, page.after_id.as_deref().unwrap_or_default()]) {
            return Ok(Vec::new());
        }
        let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new(format!(
            "SELECT {INBOX_COLUMNS} FROM inboxes WHERE tenant_id = "
        ));
        q.push_bind(tenant_id.to_owned());
        push_page(&mut q, page);
        let rows: Vec<InboxRow> = q.build_query_as().fetch_all(&self.pool).await.map_err(db)?;
        Ok(rows.into_iter().map(Inbox::from).collect())
    }

    async fn get_inbox(&self, tenant_id: &str, id: &str) -> Result<Option<Inbox>> {
        if has_nul(&[tenant_id, id]) {
            return Ok(None);
        }
        let row: Option<InboxRow> = sqlx::query_as(&format!(
            "SELECT {INBOX_COLUMNS} FROM inboxes WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(row.map(Inbox::from))
    }

    async fn find_inbox(&self, token_hash: &str) -> Result<Option<Inbox>> {
        if has_nul(&[token_hash]) {
            return Ok(None);
        }
        let row: Option<InboxRow> = sqlx::query_as(&format!(
            "SELECT {INBOX_COLUMNS} FROM inboxes WHERE token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(row.map(Inbox::from))
    }

    async fn set_inbox_credentials(
        &self,
        id: &str,
        token: &str,
        secret: Option<&str>,
    ) -> Result<bool> {
        if has_nul(&[id]) {
            return Ok(false);
        }
        let done = sqlx::query("UPDATE inboxes SET token = $1, secret = $2 WHERE id = $3")
            .bind(token)
            .bind(secret)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(write_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_inbox(&self, tenant_id: &str, id: &str) -> Result<bool> {
        if has_nul(&[tenant_id, id]) {
            return Ok(false);
        }
        let done = sqlx::query("DELETE FROM inboxes WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn add_inbox_message(&self, m: &InboxMessage, keep: u32) -> Result<()> {
        // One statement: the new message in, the oldest beyond `keep` out.
        sqlx::query(&format!(
            "WITH added AS ( \
               INSERT INTO inbox_messages ({}) \
               VALUES ($1, $2, to_timestamp($3 / 1000.0), $4, $5::jsonb, $6, $7, $8, $9) \
               RETURNING id) \
             DELETE FROM inbox_messages WHERE inbox_id = $2 AND id <= ( \
               SELECT id FROM inbox_messages WHERE inbox_id = $2 \
               ORDER BY id DESC OFFSET $10 LIMIT 1) \
             AND EXISTS (SELECT 1 FROM added)",
            "id, inbox_id, received_at, method, headers, body, truncated, verification, \
             verify_error"
        ))
        .bind(&m.id)
        .bind(&m.inbox_id)
        .bind(ms(m.received_at))
        .bind(&m.method)
        .bind(to_json(&m.headers, "headers")?)
        .bind(&m.body)
        .bind(m.truncated)
        .bind(m.verification.as_str())
        .bind(&m.verify_error)
        // The statement sees the table as it was before the insert: of those rows, the
        // `keep - 1` newest stay (none when one is kept), beside the new one.
        .bind(i64::from(keep.max(1)) - 1)
        .execute(&self.pool)
        .await
        .map_err(write_error)?;
        Ok(())
    }

    async fn list_inbox_messages(&self, inbox_id: &str, page: &Page) -> Result<Vec<InboxMessage>> {
        if has_nul(&[inbox_id, page.after_id.as_deref().unwrap_or_default()]) {
            return Ok(Vec::new());
        }
        let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new(format!(
            "SELECT {MESSAGE_COLUMNS} FROM inbox_messages WHERE inbox_id = "
        ));
        q.push_bind(inbox_id.to_owned());
        push_page(&mut q, page);
        let rows: Vec<MessageRow> = q.build_query_as().fetch_all(&self.pool).await.map_err(db)?;
        rows.into_iter().map(InboxMessage::try_from).collect()
    }

    async fn create_source(&self, src: &Source) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO sources ({SOURCE_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
        ))
        .bind(&src.id)
        .bind(&src.tenant_id)
        .bind(&src.url)
        .bind(&src.description)
        .bind(ms(src.created_at))
        .execute(&self.pool)
        .await
        .map_err(write_error)?;
        Ok(())
    }

    async fn list_sources(&self, tenant_id: Option<&str>, page: &Page) -> Result<Vec<Source>> {
        if has_nul(&[
            tenant_id.unwrap_or_default(),
            page.after_id.as_deref().unwrap_or_default(),
        ]) {
            return Ok(Vec::new());
        }
        let mut q: QueryBuilder<'_, Postgres> =
            QueryBuilder::new(format!("SELECT {SOURCE_COLUMNS} FROM sources WHERE true"));
        if let Some(t) = tenant_id {
            q.push(" AND tenant_id = ").push_bind(t.to_owned());
        }
        push_page(&mut q, page);
        let rows: Vec<SourceRow> = q.build_query_as().fetch_all(&self.pool).await.map_err(db)?;
        Ok(rows.into_iter().map(Source::from).collect())
    }

    async fn get_source(&self, tenant_id: &str, id: &str) -> Result<Option<Source>> {
        if has_nul(&[tenant_id, id]) {
            return Ok(None);
        }
        let row: Option<SourceRow> = sqlx::query_as(&format!(
            "SELECT {SOURCE_COLUMNS} FROM sources WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(row.map(Source::from))
    }

    async fn delete_source(&self, tenant_id: &str, id: &str) -> Result<bool> {
        if has_nul(&[tenant_id, id]) {
            return Ok(false);
        }
        let done = sqlx::query("DELETE FROM sources WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(write_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn add_source_rejection(&self, r: &SourceRejection, keep: u32) -> Result<()> {
        // One statement: the new rejection in, the oldest beyond `keep` out.
        sqlx::query(&format!(
            "WITH added AS ( \
               INSERT INTO source_rejections ({REJECTION_COLUMNS}) \
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id) \
             DELETE FROM source_rejections WHERE source_id = $2 AND id <= ( \
               SELECT id FROM source_rejections WHERE source_id = $2 \
               ORDER BY id DESC OFFSET $8 LIMIT 1) \
             AND EXISTS (SELECT 1 FROM added)"
        ))
        .bind(&r.id)
        .bind(&r.source_id)
        .bind(&r.message_id)
        .bind(&r.reason)
        .bind(&r.body)
        .bind(r.truncated)
        .bind(ms(r.received_at))
        // The statement sees the table as it was before the insert: of those rows, the
        // `keep - 1` newest stay (none when one is kept), beside the new one.
        .bind(i64::from(keep.max(1)) - 1)
        .execute(&self.pool)
        .await
        .map_err(write_error)?;
        Ok(())
    }

    async fn list_source_rejections(
        &self,
        source_id: &str,
        page: &Page,
    ) -> Result<Vec<SourceRejection>> {
        if has_nul(&[source_id, page.after_id.as_deref().unwrap_or_default()]) {
            return Ok(Vec::new());
        }
        let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new(format!(
            "SELECT {REJECTION_COLUMNS} FROM source_rejections WHERE source_id = "
        ));
        q.push_bind(source_id.to_owned());
        push_page(&mut q, page);
        let rows: Vec<RejectionRow> = q.build_query_as().fetch_all(&self.pool).await.map_err(db)?;
        Ok(rows.into_iter().map(SourceRejection::from).collect())
    }

    async fn lease_source(
        &self,
        source_id: &str,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let row: Option<(String,)> = sqlx::query_as(
            "INSERT INTO source_leases (source_id, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (source_id) DO UPDATE SET holder = excluded.holder, \
               expires_at = excluded.expires_at \
             WHERE source_leases.holder = excluded.holder OR source_leases.expires_at < $4 \
             RETURNING holder",
        )
        .bind(source_id)
        .bind(holder)
        .bind(ms(until))
        .bind(ms(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(write_error)?;
        Ok(row.is_some())
    }

    async fn source_positions(&self, source_id: &str) -> Result<Vec<(i32, i64)>> {
        if has_nul(&[source_id]) {
            return Ok(Vec::new());
        }
        sqlx::query_as(
            "SELECT partition_id, next_offset FROM source_positions WHERE source_id = $1 \
             ORDER BY partition_id",
        )
        .bind(source_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    async fn set_source_position(&self, source_id: &str, partition: i32, next: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO source_positions (source_id, partition_id, next_offset) \
             VALUES ($1, $2, $3) \
             ON CONFLICT (source_id, partition_id) DO UPDATE \
             SET next_offset = GREATEST(source_positions.next_offset, excluded.next_offset)",
        )
        .bind(source_id)
        .bind(partition)
        .bind(next)
        .execute(&self.pool)
        .await
        .map_err(write_error)?;
        Ok(())
    }

    async fn add_audit(&self, e: &AuditEntry) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (id, tenant_id, actor, action, target, changes, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)",
        )
        .bind(&e.id)
        .bind(&e.tenant_id)
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.target)
        .bind(to_json(&e.changes, "changes")?)
        .bind(ms(e.created_at))
        .execute(&self.pool)
        .await
        .map_err(write_error)?;
        Ok(())
    }

    async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        if has_nul(&[
            f.tenant_id.as_deref().unwrap_or_default(),
            f.action.as_deref().unwrap_or_default(),
            f.actor.as_deref().unwrap_or_default(),
            f.target.as_deref().unwrap_or_default(),
            f.page.after_id.as_deref().unwrap_or_default(),
        ]) {
            return Ok(Vec::new());
        }
        let mut q: QueryBuilder<'_, Postgres> =
            QueryBuilder::new(format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE true"));
        if let Some(t) = &f.tenant_id {
            q.push(" AND tenant_id = ").push_bind(t.clone());
        }
        for (column, value) in [
            ("action", &f.action),
            ("actor", &f.actor),
            ("target", &f.target),
        ] {
            if let Some(v) = value {
                q.push(format!(" AND {column} = ")).push_bind(v.clone());
            }
        }
        if let Some(t) = f.since {
            q.push(" AND id >= ")
                .push_bind(crate::store::ops::id_at("aud", t));
        }
        if let Some(t) = f.until {
            q.push(" AND id < ")
                .push_bind(crate::store::ops::id_at("aud", t));
        }
        push_page(&mut q, &f.page);
        let rows: Vec<AuditRow> = q.build_query_as().fetch_all(&self.pool).await.map_err(db)?;
        rows.into_iter().map(AuditEntry::try_from).collect()
    }

    async fn prune_events(&self, older_than: DateTime<Utc>, limit: u32) -> Result<u64> {
        // Ids are time-ordered (ULIDs), so "created before" is a range of the primary key.
        // Events being pruned by another process are skipped, not waited for.
        let before = crate::store::ops::id_at("evt", older_than);
        let done = sqlx::query(
            "DELETE FROM events WHERE id IN ( \
               SELECT e.id FROM events e WHERE e.id < $1 AND NOT EXISTS ( \
                 SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status = 'pending') \
               ORDER BY e.id LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn prune_operations(
        &self,
        older_than: DateTime<Utc>,
        stats_before_minute: i64,
        dispatchers_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64> {
        let messages = crate::store::ops::id_at("msg", older_than);
        let row = sqlx::query(
            "WITH m AS (DELETE FROM inbox_messages WHERE id IN ( \
                 SELECT id FROM inbox_messages WHERE id < $1 LIMIT $4) RETURNING 1), \
             s AS (DELETE FROM stats_minutely WHERE (minute, dispatcher) IN ( \
                 SELECT minute, dispatcher FROM stats_minutely WHERE minute < $2 LIMIT $4) \
                 RETURNING 1), \
             e AS (DELETE FROM endpoint_stats_minutely \
                 WHERE (endpoint_id, minute, dispatcher) IN ( \
                   SELECT endpoint_id, minute, dispatcher FROM endpoint_stats_minutely \
                   WHERE minute < $2 LIMIT $4) \
                 RETURNING 1), \
             d AS (DELETE FROM dispatchers WHERE id IN ( \
                 SELECT id FROM dispatchers \
                 WHERE last_heartbeat < to_timestamp($3 / 1000.0) LIMIT $4) RETURNING 1), \
             a AS (DELETE FROM audit_log WHERE id IN ( \
                 SELECT id FROM audit_log WHERE id < $5 LIMIT $4) RETURNING 1) \
             SELECT (SELECT count(*) FROM m) + (SELECT count(*) FROM s) + \
                    (SELECT count(*) FROM e) + (SELECT count(*) FROM d) + \
                    (SELECT count(*) FROM a)",
        )
        .bind(messages)
        .bind(stats_before_minute)
        .bind(ms(dispatchers_before))
        .bind(i64::from(limit))
        .bind(crate::store::ops::id_at("aud", older_than))
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        let n: i64 = row.try_get(0).map_err(db)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
