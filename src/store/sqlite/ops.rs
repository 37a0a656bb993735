//! [`OpsStore`] on SQLite: statistics, heartbeats, alerts, inbox and retention.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::{db, ms, push_page, to_json, SqliteStore};
use crate::domain::{from_millis, BreakerPolicy, Delivery, Event};
use crate::store::{
    ops::{
        counter_columns, stats_from_row, stats_to_json, AlertRecord, AlertRow, AuditEntry,
        AuditFilter, AuditRow, BatchStats, BeatRow, DispatcherBeat, EndpointHistory,
        EndpointMinute, FlaggedEndpoint, Inbox, InboxMessage, InboxRow, MessageRow, MinuteStats,
        OpsStore, PendingSummary, RejectionRow, Source, SourceRejection, SourceRow,
        REJECTION_COLUMNS, SOURCE_COLUMNS,
    },
    Completion, Page, Result,
};

const AUDIT_COLUMNS: &str = "id, tenant_id, actor, action, target, changes, created_at";

impl SqliteStore {
    /// Gives inboxes written before tokens were hashed (migration 0031) their token hash;
    /// their token is still plaintext then. Returns how many were hashed.
    pub(super) async fn hash_inbox_tokens(&self) -> Result<u64> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT id, token FROM inboxes WHERE token_hash IS NULL")
                .fetch_all(&self.writer)
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
                "UPDATE inboxes SET token_hash = ? WHERE id = ? AND token_hash IS NULL",
            )
            .bind(Inbox::hash_token(&token))
            .bind(&id)
            .execute(&self.writer)
            .await
            .map_err(db)?;
            hashed += done.rows_affected();
        }
        Ok(hashed)
    }
}

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

const INBOX_COLUMNS: &str = "id, tenant_id, token, token_hash, secret, description, created_at";
const MESSAGE_COLUMNS: &str =
    "id, inbox_id, received_at, method, headers, body, truncated, verification, verify_error";

/// `sum(c), …` over the counter columns, in [`counter_columns`] order.
fn summed_counters() -> String {
    counter_columns()
        .iter()
        .map(|c| format!("sum({c})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows of `minute, summed counters…` as [`MinuteStats`].
fn minute_rows(rows: &[sqlx::sqlite::SqliteRow]) -> Result<Vec<MinuteStats>> {
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
impl OpsStore for SqliteStore {
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
        let sums = summed_counters();
        let rows = sqlx::query(&format!(
            "SELECT minute, {} FROM endpoint_stats_minutely \
             WHERE endpoint_id = ? AND minute >= ? GROUP BY minute ORDER BY minute",
            sums
        ))
        .bind(endpoint_id)
        .bind(since_minute)
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        let minutes = minute_rows(&rows)?;
        let (success, failure, error): (Option<i64>, Option<i64>, Option<String>) = sqlx::query_as(
            "SELECT (SELECT nullif(max(last_success_at), 0) FROM endpoint_stats_minutely \
                          WHERE endpoint_id = ?1 AND minute >= ?2), \
                        (SELECT nullif(last_failure_at, 0) FROM endpoint_stats_minutely \
                          WHERE endpoint_id = ?1 AND minute >= ?2 \
                          ORDER BY last_failure_at DESC LIMIT 1), \
                        (SELECT last_error FROM endpoint_stats_minutely \
                          WHERE endpoint_id = ?1 AND minute >= ?2 AND last_failure_at > 0 \
                          ORDER BY last_failure_at DESC LIMIT 1)",
        )
        .bind(endpoint_id)
        .bind(since_minute)
        .fetch_one(&self.reader)
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
            "SELECT minute, {} FROM stats_minutely WHERE minute >= ? GROUP BY minute \
             ORDER BY minute",
            sums
        ))
        .bind(since_minute)
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        minute_rows(&rows)
    }

    async fn pending_summary(&self) -> Result<PendingSummary> {
        let (count, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM deliveries WHERE status = 'pending'), \
                    (SELECT min(created_at) FROM deliveries WHERE status = 'pending')",
        )
        .fetch_one(&self.reader)
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
                .fetch_all(&self.reader)
                .await
                .map_err(db)?;
        Ok(crate::store::ops::BreakerCounts::from_rows(rows))
    }

    async fn flagged_endpoints(&self, limit: u32) -> Result<Vec<FlaggedEndpoint>> {
        let rows: Vec<(String, String, bool, Option<String>, String)> = sqlx::query_as(
            "SELECT id, tenant_id, enabled, disabled_reason, breaker_state FROM endpoints \
             WHERE id IN (SELECT id FROM endpoints WHERE breaker_state <> 'closed' \
                          UNION SELECT id FROM endpoints WHERE enabled = 0) \
             ORDER BY id LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
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
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET \
             last_heartbeat = excluded.last_heartbeat, stopped_at = excluded.stopped_at",
        )
        .bind(&b.id)
        .bind(&b.hostname)
        .bind(i64::from(b.pid))
        .bind(ms(b.started_at))
        .bind(ms(b.last_heartbeat))
        .bind(b.stopped_at.map(ms))
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn list_dispatchers(&self, since: DateTime<Utc>) -> Result<Vec<DispatcherBeat>> {
        let rows: Vec<BeatRow> = sqlx::query_as(
            "SELECT id, hostname, pid, started_at, last_heartbeat, stopped_at FROM dispatchers \
             WHERE last_heartbeat >= ? OR stopped_at IS NULL ORDER BY started_at, id",
        )
        .bind(ms(since))
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        Ok(rows.into_iter().map(DispatcherBeat::from).collect())
    }

    async fn insert_leased(&self, e: &Event, d: &Delivery, lease_id: &str) -> Result<()> {
        let mut tx = self.writer.begin().await.map_err(db)?;
        sqlx::query(
            "INSERT INTO events (id, tenant_id, type, data, actor, idempotency_key, traceparent, \
             created_at, deliver_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, attempts, \
             max_attempts, next_attempt_at, lease_id, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&d.id)
        .bind(&d.tenant_id)
        .bind(&d.event_id)
        .bind(&d.endpoint_id)
        .bind(d.status.as_str())
        .bind(i64::from(d.attempts))
        .bind(i64::from(d.max_attempts))
        .bind(d.next_attempt_at.map(ms))
        .bind(lease_id)
        .bind(ms(d.created_at))
        .bind(ms(d.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn list_alerts(&self) -> Result<Vec<AlertRecord>> {
        let rows: Vec<AlertRow> = sqlx::query_as(
            "SELECT rule, subject, episode, message, details, fired_at, fired_sent, resolved_at \
             FROM alerts ORDER BY fired_at, rule, subject",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        rows.into_iter().map(AlertRecord::try_from).collect()
    }

    async fn open_alert(&self, a: &AlertRecord) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO alerts (rule, subject, episode, message, details, fired_at, fired_sent) \
             VALUES (?, ?, ?, ?, ?, ?, 0) ON CONFLICT (rule, subject) DO NOTHING",
        )
        .bind(&a.rule)
        .bind(&a.subject)
        .bind(&a.episode)
        .bind(&a.message)
        .bind(a.details.to_string())
        .bind(ms(a.fired_at))
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn resolve_alert(
        &self,
        rule: &str,
        subject: &str,
        episode: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE alerts SET resolved_at = ? WHERE rule = ? AND subject = ? AND episode = ? \
             AND resolved_at IS NULL",
        )
        .bind(ms(at))
        .bind(rule)
        .bind(subject)
        .bind(episode)
        .execute(&self.writer)
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
        let sql = if resolved {
            "DELETE FROM alerts WHERE rule = ? AND subject = ? AND episode = ?"
        } else {
            "UPDATE alerts SET fired_sent = 1 WHERE rule = ? AND subject = ? AND episode = ?"
        };
        sqlx::query(sql)
            .bind(rule)
            .bind(subject)
            .bind(episode)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn create_inbox(&self, i: &Inbox) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO inboxes ({INBOX_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&i.id)
        .bind(&i.tenant_id)
        .bind(&i.token)
        .bind(&i.token_hash)
        .bind(&i.secret)
        .bind(&i.description)
        .bind(ms(i.created_at))
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn list_inboxes(&self, tenant_id: &str, page: &Page) -> Result<Vec<Inbox>> {
        let mut q: QueryBuilder<'_, Sqlite> = QueryBuilder::new(format!(
            "SELECT {INBOX_COLUMNS} FROM inboxes WHERE tenant_id = "
        ));
        q.push_bind(tenant_id.to_owned());
        push_page(&mut q, page);
        let rows: Vec<InboxRow> = q
            .build_query_as()
            .fetch_all(&self.reader)
            .await
            .map_err(db)?;
        Ok(rows.into_iter().map(Inbox::from).collect())
    }

    async fn get_inbox(&self, tenant_id: &str, id: &str) -> Result<Option<Inbox>> {
        let row: Option<InboxRow> = sqlx::query_as(&format!(
            "SELECT {INBOX_COLUMNS} FROM inboxes WHERE tenant_id = ? AND id = ?"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        Ok(row.map(Inbox::from))
    }

    async fn find_inbox(&self, token_hash: &str) -> Result<Option<Inbox>> {
        let row: Option<InboxRow> = sqlx::query_as(&format!(
            "SELECT {INBOX_COLUMNS} FROM inboxes WHERE token_hash = ?"
        ))
        .bind(token_hash)
        .fetch_optional(&self.reader)
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
        let done = sqlx::query("UPDATE inboxes SET token = ?, secret = ? WHERE id = ?")
            .bind(token)
            .bind(secret)
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_inbox(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM inboxes WHERE tenant_id = ? AND id = ?")
            .bind(tenant_id)
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn add_inbox_message(&self, m: &InboxMessage, keep: u32) -> Result<()> {
        let mut tx = self.writer.begin().await.map_err(db)?;
        sqlx::query(&format!(
            "INSERT INTO inbox_messages ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&m.id)
        .bind(&m.inbox_id)
        .bind(ms(m.received_at))
        .bind(&m.method)
        .bind(to_json(&m.headers)?)
        .bind(&m.body)
        .bind(m.truncated)
        .bind(m.verification.as_str())
        .bind(&m.verify_error)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "DELETE FROM inbox_messages WHERE inbox_id = ?1 AND id < ( \
               SELECT id FROM inbox_messages WHERE inbox_id = ?1 \
               ORDER BY id DESC LIMIT 1 OFFSET ?2)",
        )
        .bind(&m.inbox_id)
        .bind(i64::from(keep.max(1)) - 1)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn list_inbox_messages(&self, inbox_id: &str, page: &Page) -> Result<Vec<InboxMessage>> {
        let mut q: QueryBuilder<'_, Sqlite> = QueryBuilder::new(format!(
            "SELECT {MESSAGE_COLUMNS} FROM inbox_messages WHERE inbox_id = "
        ));
        q.push_bind(inbox_id.to_owned());
        push_page(&mut q, page);
        let rows: Vec<MessageRow> = q
            .build_query_as()
            .fetch_all(&self.reader)
            .await
            .map_err(db)?;
        rows.into_iter().map(InboxMessage::try_from).collect()
    }

    async fn create_source(&self, src: &Source) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO sources ({SOURCE_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
        ))
        .bind(&src.id)
        .bind(&src.tenant_id)
        .bind(&src.url)
        .bind(&src.description)
        .bind(ms(src.created_at))
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn list_sources(&self, tenant_id: Option<&str>, page: &Page) -> Result<Vec<Source>> {
        let mut q: QueryBuilder<'_, Sqlite> =
            QueryBuilder::new(format!("SELECT {SOURCE_COLUMNS} FROM sources WHERE true"));
        if let Some(t) = tenant_id {
            q.push(" AND tenant_id = ").push_bind(t.to_owned());
        }
        push_page(&mut q, page);
        let rows: Vec<SourceRow> = q
            .build_query_as()
            .fetch_all(&self.reader)
            .await
            .map_err(db)?;
        Ok(rows.into_iter().map(Source::from).collect())
    }

    async fn get_source(&self, tenant_id: &str, id: &str) -> Result<Option<Source>> {
        let row: Option<SourceRow> = sqlx::query_as(&format!(
            "SELECT {SOURCE_COLUMNS} FROM sources WHERE tenant_id = ? AND id = ?"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        Ok(row.map(Source::from))
    }

    async fn delete_source(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM sources WHERE tenant_id = ? AND id = ?")
            .bind(tenant_id)
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn add_source_rejection(&self, r: &SourceRejection, keep: u32) -> Result<()> {
        let mut tx = self.writer.begin().await.map_err(db)?;
        sqlx::query(&format!(
            "INSERT INTO source_rejections ({REJECTION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&r.id)
        .bind(&r.source_id)
        .bind(&r.message_id)
        .bind(&r.reason)
        .bind(&r.body)
        .bind(r.truncated)
        .bind(ms(r.received_at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "DELETE FROM source_rejections WHERE source_id = ?1 AND id < ( \
               SELECT id FROM source_rejections WHERE source_id = ?1 \
               ORDER BY id DESC LIMIT 1 OFFSET ?2)",
        )
        .bind(&r.source_id)
        .bind(i64::from(keep.max(1)) - 1)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn list_source_rejections(
        &self,
        source_id: &str,
        page: &Page,
    ) -> Result<Vec<SourceRejection>> {
        let mut q: QueryBuilder<'_, Sqlite> = QueryBuilder::new(format!(
            "SELECT {REJECTION_COLUMNS} FROM source_rejections WHERE source_id = "
        ));
        q.push_bind(source_id.to_owned());
        push_page(&mut q, page);
        let rows: Vec<RejectionRow> = q
            .build_query_as()
            .fetch_all(&self.reader)
            .await
            .map_err(db)?;
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
            "INSERT INTO source_leases (source_id, holder, expires_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (source_id) DO UPDATE SET holder = excluded.holder, \
               expires_at = excluded.expires_at \
             WHERE source_leases.holder = excluded.holder OR source_leases.expires_at < ?4 \
             RETURNING holder",
        )
        .bind(source_id)
        .bind(holder)
        .bind(ms(until))
        .bind(ms(now))
        .fetch_optional(&self.writer)
        .await
        .map_err(db)?;
        Ok(row.is_some())
    }

    async fn source_positions(&self, source_id: &str) -> Result<Vec<(i32, i64)>> {
        sqlx::query_as(
            "SELECT partition_id, next_offset FROM source_positions WHERE source_id = ?1 \
             ORDER BY partition_id",
        )
        .bind(source_id)
        .fetch_all(&self.reader)
        .await
        .map_err(db)
    }

    async fn set_source_position(&self, source_id: &str, partition: i32, next: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO source_positions (source_id, partition_id, next_offset) \
             VALUES (?1, ?2, ?3) \
             ON CONFLICT (source_id, partition_id) DO UPDATE \
             SET next_offset = max(source_positions.next_offset, excluded.next_offset)",
        )
        .bind(source_id)
        .bind(partition)
        .bind(next)
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn add_audit(&self, e: &AuditEntry) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&e.id)
        .bind(&e.tenant_id)
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.target)
        .bind(to_json(&e.changes)?)
        .bind(ms(e.created_at))
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let mut q: QueryBuilder<'_, Sqlite> =
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
        let rows: Vec<AuditRow> = q
            .build_query_as()
            .fetch_all(&self.reader)
            .await
            .map_err(db)?;
        rows.into_iter().map(AuditEntry::try_from).collect()
    }

    async fn prune_events(&self, older_than: DateTime<Utc>, limit: u32) -> Result<u64> {
        // Ids are time-ordered (ULIDs), so "created before" is a range of the primary key.
        let before = crate::store::ops::id_at("evt", older_than);
        let done = sqlx::query(
            "DELETE FROM events WHERE id IN ( \
               SELECT e.id FROM events e WHERE e.id < ? AND NOT EXISTS ( \
                 SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status = 'pending') \
               ORDER BY e.id LIMIT ?)",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(&self.writer)
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
        let audit = crate::store::ops::id_at("aud", older_than);
        let mut total = 0;
        for (sql, bind) in [
            (
                "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log \
                 WHERE id < ? LIMIT ?)",
                serde_json::json!(audit),
            ),
            (
                "DELETE FROM inbox_messages WHERE id IN (SELECT id FROM inbox_messages \
                 WHERE id < ? LIMIT ?)",
                serde_json::json!(messages),
            ),
            (
                "DELETE FROM stats_minutely WHERE rowid IN (SELECT rowid FROM stats_minutely \
                 WHERE minute < ? LIMIT ?)",
                serde_json::json!(stats_before_minute),
            ),
            (
                "DELETE FROM endpoint_stats_minutely WHERE rowid IN (SELECT rowid \
                 FROM endpoint_stats_minutely WHERE minute < ? LIMIT ?)",
                serde_json::json!(stats_before_minute),
            ),
            (
                "DELETE FROM dispatchers WHERE id IN (SELECT id FROM dispatchers \
                 WHERE last_heartbeat < ? LIMIT ?)",
                serde_json::json!(ms(dispatchers_before)),
            ),
        ] {
            let q = sqlx::query(sql);
            let q = match bind {
                serde_json::Value::String(s) => q.bind(s),
                other => q.bind(other.as_i64().unwrap_or(0)),
            };
            let done = q
                .bind(i64::from(limit))
                .execute(&self.writer)
                .await
                .map_err(db)?;
            total += done.rows_affected();
        }
        Ok(total)
    }
}
