//! [`OpsStore`] on both databases: statistics, heartbeats, alerts, inbox, sources, audit
//! and retention, written once (see [`super`]). Only the statistics added inside the
//! completion transaction are written per database, beside the completion.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{
    catalog::{bind_delivery, bind_event, INSERT_DELIVERY, INSERT_EVENT},
    db, fetch_owned, fetch_page, fetch_row, has_nul, on_db, write_error, SqlStore, Window,
};
use crate::domain::{first_id_at, from_millis, BreakerPolicy, Delivery, Event};
use crate::store::{
    ops::{
        counter_columns, stats_from_row, AlertRecord, AlertRow, AuditEntry, AuditFilter, AuditRow,
        BatchStats, BeatRow, BreakerCounts, DispatcherBeat, EndpointHistory, ExpiringCertificate,
        FlaggedEndpoint, Inbox, InboxMessage, InboxRow, MessageRow, MinuteStats, OpsStore,
        PendingSummary, PortalLink, PortalLinkRow, RejectionRow, Source, SourceRejection,
        SourceRow, PORTAL_LINK_COLUMNS, REJECTION_COLUMNS, SOURCE_COLUMNS,
    },
    rows::{ms, to_json},
    Completion, Page, Result,
};

const BEAT_COLUMNS: &str = "id, hostname, pid, MS(started_at) AS started_at, \
     MS(last_heartbeat) AS last_heartbeat, MS(stopped_at) AS stopped_at";

const ALERT_COLUMNS: &str = "rule, subject, episode, message, details::text AS details, \
     MS(fired_at) AS fired_at, fired_sent, MS(resolved_at) AS resolved_at";

const INBOX_COLUMNS: &str =
    "id, tenant_id, token, token_hash, secret, description, MS(created_at) AS created_at";

const MESSAGE_COLUMNS: &str = "id, inbox_id, MS(received_at) AS received_at, method, \
     headers::text AS headers, body, truncated, verification, verify_error";

const AUDIT_COLUMNS: &str =
    "id, tenant_id, actor, action, target, changes::text AS changes, created_at";

super::tables! {
    InboxRow => "inboxes", INBOX_COLUMNS;
    MessageRow => "inbox_messages", MESSAGE_COLUMNS;
    SourceRow => "sources", SOURCE_COLUMNS;
    RejectionRow => "source_rejections", REJECTION_COLUMNS;
    AuditRow => "audit_log", AUDIT_COLUMNS;
    PortalLinkRow => "portal_links", PORTAL_LINK_COLUMNS;
}

/// `sum(c), …` over the counter columns, in [`counter_columns`] order.
fn summed_counters() -> String {
    counter_columns()
        .iter()
        .map(|c| format!("sum({c})::int8"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows of `minute, summed counters…` as [`MinuteStats`].
fn minute_rows<R: Row>(rows: &[R]) -> Result<Vec<MinuteStats>>
where
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
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

/// Gives inboxes written before tokens were hashed (migration 0031) their token hash;
/// their token is still plaintext then. Several processes starting together write the
/// same hashes. Returns how many were hashed.
pub(in crate::store) async fn hash_inbox_tokens(store: &impl SqlStore) -> Result<u64> {
    let rows: Vec<(String, String)> = on_db!(store, |p| sqlx::query_as(
        "SELECT id, token FROM inboxes WHERE token_hash IS NULL"
    )
    .fetch_all(p.reader)
    .await
    .map_err(db)?);
    let mut hashed = 0;
    for (id, token) in rows {
        if crate::secrets::is_sealed(&token) {
            // Not written by any version that lacked the hash: leave it unfindable.
            tracing::warn!(inbox = %id, "inbox has a sealed token but no token hash");
            continue;
        }
        let sql = "UPDATE inboxes SET token_hash = $1 WHERE id = $2 AND token_hash IS NULL";
        hashed += on_db!(store, |p| sqlx::query(sql)
            .bind(Inbox::hash_token(&token))
            .bind(&id)
            .execute(p.writer)
            .await
            .map_err(db)?
            .rows_affected());
    }
    Ok(hashed)
}

/// Keeps the `keep` newest rows of `table` with this `owner` (the newest just added).
const TRIM: &str = "DELETE FROM {table} WHERE {owner} = $1 AND id < ( \
     SELECT id FROM {table} WHERE {owner} = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)";

fn trim(table: &str, owner: &str) -> String {
    TRIM.replace("{table}", table).replace("{owner}", owner)
}

#[async_trait]
impl<S: SqlStore> OpsStore for S {
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
        let sql = format!(
            "SELECT minute, {} FROM endpoint_stats_minutely \
             WHERE endpoint_id = $1 AND minute >= $2 GROUP BY minute ORDER BY minute",
            summed_counters()
        );
        // SQLite keeps 0 where PostgreSQL keeps NULL for "never".
        let last = "SELECT (SELECT nullif(max(last_success_at), 0) FROM endpoint_stats_minutely \
                     WHERE endpoint_id = $1 AND minute >= $2), \
                    (SELECT last_failure_at FROM endpoint_stats_minutely \
                     WHERE endpoint_id = $1 AND minute >= $2 AND last_failure_at > 0 \
                     ORDER BY last_failure_at DESC LIMIT 1), \
                    (SELECT last_error FROM endpoint_stats_minutely \
                     WHERE endpoint_id = $1 AND minute >= $2 AND last_failure_at > 0 \
                     ORDER BY last_failure_at DESC LIMIT 1)";
        let (minutes, (success, failure, error)) = on_db!(self, |p| {
            let rows = sqlx::query(&p.sql(&sql))
                .bind(endpoint_id)
                .bind(since_minute)
                .fetch_all(p.reader)
                .await
                .map_err(db)?;
            let last: (Option<i64>, Option<i64>, Option<String>) = sqlx::query_as(last)
                .bind(endpoint_id)
                .bind(since_minute)
                .fetch_one(p.reader)
                .await
                .map_err(db)?;
            (minute_rows(&rows)?, last)
        });
        Ok(EndpointHistory {
            minutes,
            last_success_at: success.map(from_millis),
            last_failure_at: failure.map(from_millis),
            last_error: error,
        })
    }

    async fn stats_since(&self, since_minute: i64) -> Result<Vec<MinuteStats>> {
        let sql = format!(
            "SELECT minute, {} FROM stats_minutely WHERE minute >= $1 GROUP BY minute \
             ORDER BY minute",
            summed_counters()
        );
        on_db!(self, |p| {
            let rows = sqlx::query(&p.sql(&sql))
                .bind(since_minute)
                .fetch_all(p.reader)
                .await
                .map_err(db)?;
            minute_rows(&rows)
        })
    }

    async fn pending_summary(&self) -> Result<PendingSummary> {
        // Both read only the partial indexes of pending rows (deliveries_due for the count,
        // deliveries_pending_created for the oldest): the finished history is never read.
        let sql = "SELECT (SELECT count(*) FROM deliveries WHERE status = 'pending'), \
                   (SELECT MS(min(created_at)) FROM deliveries WHERE status = 'pending')";
        let (count, oldest): (i64, Option<i64>) = on_db!(self, |p| sqlx::query_as(&p.sql(sql))
            .fetch_one(p.reader)
            .await
            .map_err(db)?);
        Ok(PendingSummary {
            count: u64::try_from(count).unwrap_or(0),
            oldest_created_at: oldest.map(from_millis),
        })
    }

    async fn breaker_counts(&self) -> Result<BreakerCounts> {
        let sql = "SELECT breaker_state, count(*) FROM endpoints GROUP BY breaker_state";
        let rows: Vec<(String, i64)> = on_db!(self, |p| sqlx::query_as(sql)
            .fetch_all(p.reader)
            .await
            .map_err(db)?);
        Ok(BreakerCounts::from_rows(rows))
    }

    async fn flagged_endpoints(&self, limit: u32) -> Result<Vec<FlaggedEndpoint>> {
        // Each half reads its partial index (endpoints_breaker_open, endpoints_disabled).
        let sql = "SELECT id, tenant_id, enabled, disabled_reason, breaker_state FROM endpoints \
                   WHERE id IN (SELECT id FROM endpoints WHERE breaker_state <> 'closed' \
                                UNION SELECT id FROM endpoints WHERE NOT enabled) \
                   ORDER BY id LIMIT $1";
        let rows: Vec<(String, String, bool, Option<String>, String)> =
            on_db!(self, |p| sqlx::query_as(sql)
                .bind(i64::from(limit))
                .fetch_all(p.reader)
                .await
                .map_err(db)?);
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

    async fn expiring_certificates(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ExpiringCertificate>> {
        let sql = "SELECT id, tenant_id, MS(tls_expires_at) FROM endpoints \
                   WHERE tls_expires_at < TS($1) AND enabled \
                   ORDER BY tls_expires_at, id LIMIT $2";
        let rows: Vec<(String, String, i64)> = on_db!(self, |p| sqlx::query_as(&p.sql(sql))
            .bind(ms(before))
            .bind(i64::from(limit))
            .fetch_all(p.reader)
            .await
            .map_err(db)?);
        Ok(rows
            .into_iter()
            .map(|(id, tenant_id, at)| ExpiringCertificate {
                id,
                tenant_id,
                expires_at: from_millis(at),
            })
            .collect())
    }

    async fn heartbeat(&self, b: &DispatcherBeat) -> Result<()> {
        let sql = "INSERT INTO dispatchers \
                   (id, hostname, pid, started_at, last_heartbeat, stopped_at) \
                   VALUES ($1, $2, $3, TS($4), TS($5), TS($6)) \
                   ON CONFLICT (id) DO UPDATE SET last_heartbeat = excluded.last_heartbeat, \
                   stopped_at = excluded.stopped_at";
        on_db!(self, |p| {
            sqlx::query(&p.sql(sql))
                .bind(&b.id)
                .bind(&b.hostname)
                .bind(i64::from(b.pid))
                .bind(ms(b.started_at))
                .bind(ms(b.last_heartbeat))
                .bind(b.stopped_at.map(ms))
                .execute(p.writer)
                .await
                .map_err(write_error)?;
        });
        Ok(())
    }

    async fn list_dispatchers(&self, since: DateTime<Utc>) -> Result<Vec<DispatcherBeat>> {
        let sql = format!(
            "SELECT {BEAT_COLUMNS} FROM dispatchers \
             WHERE last_heartbeat >= TS($1) OR stopped_at IS NULL ORDER BY started_at, id"
        );
        let rows: Vec<BeatRow> = on_db!(self, |p| sqlx::query_as(&p.sql(&sql))
            .bind(ms(since))
            .fetch_all(p.reader)
            .await
            .map_err(db)?);
        Ok(rows.into_iter().map(DispatcherBeat::from).collect())
    }

    async fn insert_leased(&self, e: &Event, d: &Delivery, lease_id: &str) -> Result<()> {
        let (insert, values) = INSERT_DELIVERY;
        let delivery = format!("{insert} VALUES ({values})");
        on_db!(self, |p| {
            let mut tx = p.writer.begin().await.map_err(db)?;
            bind_event(sqlx::query(&p.sql(INSERT_EVENT)), e)
                .execute(&mut *tx)
                .await
                .map_err(write_error)?;
            bind_delivery(sqlx::query(&p.sql(&delivery)), d, Some(lease_id))
                .execute(&mut *tx)
                .await
                .map_err(write_error)?;
            tx.commit().await.map_err(db)?;
        });
        Ok(())
    }

    async fn list_alerts(&self) -> Result<Vec<AlertRecord>> {
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts ORDER BY fired_at, rule, subject");
        let rows: Vec<AlertRow> = on_db!(self, |p| sqlx::query_as(&p.sql(&sql))
            .fetch_all(p.reader)
            .await
            .map_err(db)?);
        rows.into_iter().map(AlertRecord::try_from).collect()
    }

    async fn open_alert(&self, a: &AlertRecord) -> Result<bool> {
        let sql = "INSERT INTO alerts \
                   (rule, subject, episode, message, details, fired_at, fired_sent) \
                   VALUES ($1, $2, $3, $4, $5::jsonb, TS($6), false) \
                   ON CONFLICT (rule, subject) DO NOTHING";
        let done = on_db!(self, |p| sqlx::query(&p.sql(sql))
            .bind(&a.rule)
            .bind(&a.subject)
            .bind(&a.episode)
            .bind(&a.message)
            .bind(a.details.to_string())
            .bind(ms(a.fired_at))
            .execute(p.writer)
            .await
            .map_err(write_error)?
            .rows_affected());
        Ok(done > 0)
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
        let sql = "UPDATE alerts SET resolved_at = TS($1) \
                   WHERE rule = $2 AND subject = $3 AND episode = $4 AND resolved_at IS NULL";
        on_db!(self, |p| {
            sqlx::query(&p.sql(sql))
                .bind(ms(at))
                .bind(rule)
                .bind(subject)
                .bind(episode)
                .execute(p.writer)
                .await
                .map_err(db)?;
        });
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
        on_db!(self, |p| {
            sqlx::query(sql)
                .bind(rule)
                .bind(subject)
                .bind(episode)
                .execute(p.writer)
                .await
                .map_err(db)?;
        });
        Ok(())
    }

    async fn create_inbox(&self, i: &Inbox) -> Result<()> {
        let sql = "INSERT INTO inboxes \
                   (id, tenant_id, token, token_hash, secret, description, created_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, TS($7))";
        let (token, secret) =
            self.sealer()
                .seal_inbox_credentials(&i.id, &i.token, i.secret.as_deref());
        on_db!(self, |p| {
            sqlx::query(&p.sql(sql))
                .bind(&i.id)
                .bind(&i.tenant_id)
                .bind(&*token)
                .bind(&i.token_hash)
                .bind(secret.as_deref())
                .bind(&i.description)
                .bind(ms(i.created_at))
                .execute(p.writer)
                .await
                .map_err(write_error)?;
        });
        Ok(())
    }

    async fn list_inboxes(&self, tenant_id: &str, page: &Page) -> Result<Vec<Inbox>> {
        let rows: Vec<InboxRow> = fetch_page(self, &[("tenant_id", tenant_id)], None, page).await?;
        rows.into_iter()
            .map(|r| self.sealer().open_inbox(Inbox::from(r)))
            .collect()
    }

    async fn get_inbox(&self, tenant_id: &str, id: &str) -> Result<Option<Inbox>> {
        let row: Option<InboxRow> = fetch_owned(self, tenant_id, id).await?;
        row.map(|r| self.sealer().open_inbox(Inbox::from(r)))
            .transpose()
    }

    async fn find_inbox(&self, token_hash: &str) -> Result<Option<Inbox>> {
        let row: Option<InboxRow> = fetch_row(self, &[("token_hash", token_hash)]).await?;
        row.map(|r| self.sealer().open_inbox(Inbox::from(r)))
            .transpose()
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
        let sql = "UPDATE inboxes SET token = $1, secret = $2 WHERE id = $3";
        let (token, secret) = self.sealer().seal_inbox_credentials(id, token, secret);
        let done = on_db!(self, |p| sqlx::query(sql)
            .bind(&*token)
            .bind(secret.as_deref())
            .bind(id)
            .execute(p.writer)
            .await
            .map_err(write_error)?
            .rows_affected());
        Ok(done > 0)
    }

    async fn delete_inbox(&self, tenant_id: &str, id: &str) -> Result<bool> {
        super::delete_owned(self, "inboxes", tenant_id, id).await
    }

    async fn add_inbox_message(&self, m: &InboxMessage, keep: u32) -> Result<()> {
        let insert = "INSERT INTO inbox_messages (id, inbox_id, received_at, method, headers, \
                      body, truncated, verification, verify_error) \
                      VALUES ($1, $2, TS($3), $4, $5::jsonb, $6, $7, $8, $9)";
        let trim = trim("inbox_messages", "inbox_id");
        let headers = to_json(&m.headers, "headers")?;
        on_db!(self, |p| {
            let mut tx = p.writer.begin().await.map_err(db)?;
            sqlx::query(&p.sql(insert))
                .bind(&m.id)
                .bind(&m.inbox_id)
                .bind(ms(m.received_at))
                .bind(&m.method)
                .bind(&headers)
                .bind(&m.body)
                .bind(m.truncated)
                .bind(m.verification.as_str())
                .bind(&m.verify_error)
                .execute(&mut *tx)
                .await
                .map_err(write_error)?;
            sqlx::query(&trim)
                .bind(&m.inbox_id)
                .bind(i64::from(keep.max(1)) - 1)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
        });
        Ok(())
    }

    async fn list_inbox_messages(&self, inbox_id: &str, page: &Page) -> Result<Vec<InboxMessage>> {
        let rows: Vec<MessageRow> = fetch_page(self, &[("inbox_id", inbox_id)], None, page).await?;
        rows.into_iter().map(InboxMessage::try_from).collect()
    }

    async fn create_source(&self, src: &Source) -> Result<()> {
        let sql = format!("INSERT INTO sources ({SOURCE_COLUMNS}) VALUES ($1, $2, $3, $4, $5)");
        let url = self.sealer().seal_source_url(&src.id, &src.url);
        on_db!(self, |p| {
            sqlx::query(&sql)
                .bind(&src.id)
                .bind(&src.tenant_id)
                .bind(&*url)
                .bind(&src.description)
                .bind(ms(src.created_at))
                .execute(p.writer)
                .await
                .map_err(write_error)?;
        });
        Ok(())
    }

    async fn list_sources(&self, tenant_id: Option<&str>, page: &Page) -> Result<Vec<Source>> {
        let owner: Vec<(&str, &str)> = tenant_id.map(|t| ("tenant_id", t)).into_iter().collect();
        let rows: Vec<SourceRow> = fetch_page(self, &owner, None, page).await?;
        rows.into_iter()
            .map(|r| self.sealer().open_source(Source::from(r)))
            .collect()
    }

    async fn get_source(&self, tenant_id: &str, id: &str) -> Result<Option<Source>> {
        let row: Option<SourceRow> = fetch_owned(self, tenant_id, id).await?;
        row.map(|r| self.sealer().open_source(Source::from(r)))
            .transpose()
    }

    async fn delete_source(&self, tenant_id: &str, id: &str) -> Result<bool> {
        super::delete_owned(self, "sources", tenant_id, id).await
    }

    async fn add_source_rejection(&self, r: &SourceRejection, keep: u32) -> Result<()> {
        let insert = format!(
            "INSERT INTO source_rejections ({REJECTION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
        );
        let trim = trim("source_rejections", "source_id");
        on_db!(self, |p| {
            let mut tx = p.writer.begin().await.map_err(db)?;
            sqlx::query(&insert)
                .bind(&r.id)
                .bind(&r.source_id)
                .bind(&r.message_id)
                .bind(&r.reason)
                .bind(&r.body)
                .bind(r.truncated)
                .bind(ms(r.received_at))
                .execute(&mut *tx)
                .await
                .map_err(write_error)?;
            sqlx::query(&trim)
                .bind(&r.source_id)
                .bind(i64::from(keep.max(1)) - 1)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
        });
        Ok(())
    }

    async fn list_source_rejections(
        &self,
        source_id: &str,
        page: &Page,
    ) -> Result<Vec<SourceRejection>> {
        let rows: Vec<RejectionRow> =
            fetch_page(self, &[("source_id", source_id)], None, page).await?;
        Ok(rows.into_iter().map(SourceRejection::from).collect())
    }

    async fn lease_source(
        &self,
        source_id: &str,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let sql = "INSERT INTO source_leases (source_id, holder, expires_at) VALUES ($1, $2, $3) \
                   ON CONFLICT (source_id) DO UPDATE SET holder = excluded.holder, \
                     expires_at = excluded.expires_at \
                   WHERE source_leases.holder = excluded.holder \
                      OR source_leases.expires_at < $4 \
                   RETURNING holder";
        let row: Option<(String,)> = on_db!(self, |p| sqlx::query_as(sql)
            .bind(source_id)
            .bind(holder)
            .bind(ms(until))
            .bind(ms(now))
            .fetch_optional(p.writer)
            .await
            .map_err(write_error)?);
        Ok(row.is_some())
    }

    async fn source_positions(&self, source_id: &str) -> Result<Vec<(i32, i64)>> {
        if has_nul(&[source_id]) {
            return Ok(Vec::new());
        }
        let sql = "SELECT partition_id, next_offset FROM source_positions WHERE source_id = $1 \
                   ORDER BY partition_id";
        on_db!(self, |p| sqlx::query_as(sql)
            .bind(source_id)
            .fetch_all(p.reader)
            .await
            .map_err(db))
    }

    async fn set_source_position(&self, source_id: &str, partition: i32, next: i64) -> Result<()> {
        // Never backwards: a slower holder that lost its lease may still write.
        let sql = "INSERT INTO source_positions (source_id, partition_id, next_offset) \
                   VALUES ($1, $2, $3) \
                   ON CONFLICT (source_id, partition_id) DO UPDATE SET next_offset = \
                     CASE WHEN excluded.next_offset > source_positions.next_offset \
                          THEN excluded.next_offset ELSE source_positions.next_offset END";
        on_db!(self, |p| {
            sqlx::query(sql)
                .bind(source_id)
                .bind(partition)
                .bind(next)
                .execute(p.writer)
                .await
                .map_err(write_error)?;
        });
        Ok(())
    }

    async fn add_audit(&self, e: &AuditEntry) -> Result<()> {
        let sql = "INSERT INTO audit_log (id, tenant_id, actor, action, target, changes, \
                   created_at) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)";
        let changes = to_json(&e.changes, "changes")?;
        on_db!(self, |p| {
            sqlx::query(&p.sql(sql))
                .bind(&e.id)
                .bind(&e.tenant_id)
                .bind(&e.actor)
                .bind(&e.action)
                .bind(&e.target)
                .bind(&changes)
                .bind(ms(e.created_at))
                .execute(p.writer)
                .await
                .map_err(write_error)?;
        });
        Ok(())
    }

    async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let keys: Vec<(&str, &str)> = [
            ("tenant_id", &f.tenant_id),
            ("action", &f.action),
            ("actor", &f.actor),
            ("target", &f.target),
        ]
        .into_iter()
        .filter_map(|(column, value)| value.as_deref().map(|v| (column, v)))
        .collect();
        let window = Window {
            prefix: "aud",
            since: f.since,
            until: f.until,
        };
        let rows: Vec<AuditRow> = fetch_page(self, &keys, Some(window), &f.page).await?;
        rows.into_iter().map(AuditEntry::try_from).collect()
    }

    async fn prune_events(&self, older_than: DateTime<Utc>, limit: u32) -> Result<u64> {
        // Ids are time-ordered (ULIDs), so "created before" is a range of the primary key.
        // On PostgreSQL, events being pruned by another process are skipped, not waited for.
        let before = first_id_at("evt", older_than);
        let done = on_db!(self, |p| {
            let sql = format!(
                "DELETE FROM events WHERE id IN ( \
                   SELECT e.id FROM events e WHERE e.id < $1 AND NOT EXISTS ( \
                     SELECT 1 FROM deliveries d \
                     WHERE d.event_id = e.id AND d.status = 'pending') \
                   ORDER BY e.id LIMIT $2{})",
                p.dialect.row_locks(" FOR UPDATE SKIP LOCKED")
            );
            sqlx::query(&sql)
                .bind(&before)
                .bind(i64::from(limit))
                .execute(p.writer)
                .await
                .map_err(db)?
                .rows_affected()
        });
        Ok(done)
    }

    async fn create_portal_link(&self, l: &PortalLink) -> Result<()> {
        let sql = "INSERT INTO portal_links (id, tenant_id, token_hash, read_only, event_types, \
                   allow_brokers, created_by, created_at, expires_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, TS($8), TS($9))";
        let types = l
            .event_types
            .as_ref()
            .map(|t| to_json(t, "event_types"))
            .transpose()?;
        on_db!(self, |p| {
            sqlx::query(&p.sql(sql))
                .bind(&l.id)
                .bind(&l.tenant_id)
                .bind(&l.token_hash)
                .bind(l.read_only)
                .bind(&types)
                .bind(l.allow_brokers)
                .bind(&l.created_by)
                .bind(ms(l.created_at))
                .bind(ms(l.expires_at))
                .execute(p.writer)
                .await
                .map_err(write_error)?;
        });
        Ok(())
    }

    async fn find_portal_link(&self, token_hash: &str) -> Result<Option<PortalLink>> {
        let row: Option<PortalLinkRow> = fetch_row(self, &[("token_hash", token_hash)]).await?;
        row.map(PortalLink::try_from).transpose()
    }

    async fn list_portal_links(&self, tenant_id: &str, page: &Page) -> Result<Vec<PortalLink>> {
        let rows: Vec<PortalLinkRow> =
            fetch_page(self, &[("tenant_id", tenant_id)], None, page).await?;
        rows.into_iter().map(PortalLink::try_from).collect()
    }

    async fn revoke_portal_link(
        &self,
        tenant_id: &str,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<PortalLink>> {
        if has_nul(&[tenant_id, id]) {
            return Ok(None);
        }
        let sql = "UPDATE portal_links SET revoked_at = coalesce(revoked_at, TS($3)) \
                   WHERE tenant_id = $1 AND id = $2";
        on_db!(self, |p| {
            sqlx::query(&p.sql(sql))
                .bind(tenant_id)
                .bind(id)
                .bind(ms(at))
                .execute(p.writer)
                .await
                .map_err(db)?;
        });
        let row: Option<PortalLinkRow> = fetch_owned(self, tenant_id, id).await?;
        row.map(PortalLink::try_from).transpose()
    }

    async fn prune_operations(
        &self,
        older_than: DateTime<Utc>,
        stats_before_minute: i64,
        dispatchers_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64> {
        let audit = first_id_at("aud", older_than);
        let messages = first_id_at("msg", older_than);
        let stats = Bound::Number(stats_before_minute);
        // (table, key, condition on `$1`, `$1`): each pass deletes at most `limit` rows.
        let passes = [
            ("audit_log", "id", "id < $1", Bound::Text(&audit)),
            ("inbox_messages", "id", "id < $1", Bound::Text(&messages)),
            ("stats_minutely", "minute, dispatcher", "minute < $1", stats),
            (
                "endpoint_stats_minutely",
                "endpoint_id, minute, dispatcher",
                "minute < $1",
                stats,
            ),
            (
                "dispatchers",
                "id",
                "last_heartbeat < TS($1)",
                Bound::Number(ms(dispatchers_before)),
            ),
            (
                "portal_links",
                "id",
                "expires_at < TS($1)",
                Bound::Number(ms(older_than)),
            ),
        ];
        let mut total = 0;
        for (table, key, condition, bound) in passes {
            let sql = format!(
                "DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} \
                 WHERE {condition} LIMIT $2)"
            );
            total += on_db!(self, |p| {
                let text = p.sql(&sql);
                let q = sqlx::query(&text);
                let q = match bound {
                    Bound::Text(s) => q.bind(s),
                    Bound::Number(n) => q.bind(n),
                };
                q.bind(i64::from(limit))
                    .execute(p.writer)
                    .await
                    .map_err(db)?
                    .rows_affected()
            });
        }
        Ok(total)
    }
}

/// The bound of a retention pass: an id, or a number.
#[derive(Clone, Copy)]
enum Bound<'a> {
    Text(&'a str),
    Number(i64),
}

/// [`crate::store::Catalog::reseal`] for inboxes and sources.
pub(super) async fn reseal_inboxes_and_sources(store: &impl SqlStore) -> Result<u64> {
    let sealer = store.sealer();
    let mut rewritten = 0;
    let sql = format!("SELECT {INBOX_COLUMNS} FROM inboxes WHERE id > $1 ORDER BY id LIMIT 500");
    let mut after = String::new();
    loop {
        let rows: Vec<InboxRow> = on_db!(store, |p| sqlx::query_as(&p.sql(&sql))
            .bind(&after)
            .fetch_all(p.reader)
            .await
            .map_err(db)?);
        let Some(last) = rows.last() else { break };
        after = last.id.clone();
        for raw in rows.into_iter().map(Inbox::from) {
            if !sealer.inbox_is_current(&raw) {
                let plain = sealer.open_inbox(raw)?;
                let done = store
                    .set_inbox_credentials(&plain.id, &plain.token, plain.secret.as_deref())
                    .await?;
                rewritten += u64::from(done);
            }
        }
    }
    let sql = format!("SELECT {SOURCE_COLUMNS} FROM sources WHERE id > $1 ORDER BY id LIMIT 500");
    let mut after = String::new();
    loop {
        let rows: Vec<SourceRow> = on_db!(store, |p| sqlx::query_as(&sql)
            .bind(&after)
            .fetch_all(p.reader)
            .await
            .map_err(db)?);
        let Some(last) = rows.last() else { break };
        after = last.id.clone();
        for raw in rows.into_iter().map(Source::from) {
            if !sealer.source_is_current(&raw) {
                let plain = sealer.open_source(raw)?;
                let url = sealer.seal_source_url(&plain.id, &plain.url);
                let done = on_db!(store, |p| sqlx::query(
                    "UPDATE sources SET url = $1 WHERE id = $2"
                )
                .bind(&*url)
                .bind(&plain.id)
                .execute(p.writer)
                .await
                .map_err(db)?
                .rows_affected());
                rewritten += done;
            }
        }
    }
    Ok(rewritten)
}
