//! The store's plain reads and writes, written once for both databases.
//!
//! A method here has one SQL text and one body. The text is PostgreSQL's, with `$n`
//! parameters (which sqlx also binds on SQLite) and two markers for the times that
//! PostgreSQL keeps as `timestamptz` and SQLite as Unix milliseconds: `MS(column)` reads a
//! time as milliseconds and `TS($n)` writes milliseconds as a time. [`Dialect::sql`] turns
//! the text into each database's: on SQLite the markers and the `::type` casts go.
//!
//! The body runs through [`on_db!`], which compiles it once for each database's pool types,
//! so it is checked against both without a generic bound in sight. Only the hot path that
//! truly differs (ingest, claim, complete, wake-ups, rate-limit reservation) is written per
//! database, in `sqlite.rs` and `postgres.rs`.

use std::borrow::Cow;

use sqlx::{postgres::PgRow, sqlite::SqliteRow, Database, Pool, Postgres, QueryBuilder, Sqlite};

use super::{Page, Result, StoreError};

pub(in crate::store) mod catalog;
pub(super) mod ops;

/// Which database a text is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The text for this database: see the module documentation for the markers.
    pub fn sql(self, text: &str) -> Cow<'_, str> {
        let marked = text.contains("MS(") || text.contains("TS(");
        let casts = self == Dialect::Sqlite && text.contains("::");
        if !marked && !casts {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len() + 64);
        let mut rest = text;
        while let Some(at) = next_marker(rest, self) {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            if let Some(cast) = rest.strip_prefix("::") {
                // SQLite has no casts of this form: the value keeps its stored type.
                let end = cast
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(cast.len());
                rest = &cast[end..];
                continue;
            }
            let write = rest.starts_with("TS(");
            let (inner, after) = split_call(&rest[3..]);
            match (self, write) {
                (Dialect::Sqlite, _) => out.push_str(inner),
                (Dialect::Postgres, false) => {
                    out.push_str("(extract(epoch FROM ");
                    out.push_str(inner);
                    out.push_str(") * 1000)::int8");
                }
                (Dialect::Postgres, true) => {
                    out.push_str("to_timestamp(");
                    out.push_str(inner);
                    out.push_str(" / 1000.0)");
                }
            }
            rest = after;
        }
        out.push_str(rest);
        Cow::Owned(out)
    }
}

impl Dialect {
    /// `clause` (row locks) on PostgreSQL, where processes share the tables; nothing on
    /// SQLite, whose one writer already excludes every other.
    pub fn row_locks(self, clause: &'static str) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => clause,
        }
    }
}

/// Where the next marker (or, on SQLite, cast) starts: `MS(` or `TS(` not inside a longer
/// name.
fn next_marker(text: &str, dialect: Dialect) -> Option<usize> {
    let bytes = text.as_bytes();
    (0..bytes.len()).find(|&i| {
        let rest = &bytes[i..];
        let marker = (rest.starts_with(b"MS(") || rest.starts_with(b"TS("))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        marker || (dialect == Dialect::Sqlite && rest.starts_with(b"::"))
    })
}

/// Splits `inner) rest` at the parenthesis that closes the call.
fn split_call(text: &str) -> (&str, &str) {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return (&text[..i], &text[i + 1..]),
            ')' => depth -= 1,
            _ => {}
        }
    }
    (text, "")
}

/// A database's pools: SQLite has a reader pool and one writer, PostgreSQL one pool for
/// both.
pub struct Db<'a, DB: Database> {
    pub reader: &'a Pool<DB>,
    pub writer: &'a Pool<DB>,
    pub dialect: Dialect,
}

impl<DB: Database> Db<'_, DB> {
    /// [`Dialect::sql`] for this database.
    pub fn sql<'t>(&self, text: &'t str) -> Cow<'t, str> {
        self.dialect.sql(text)
    }
}

/// The pools of a store, of either database.
pub enum Pools<'a> {
    Sqlite(Db<'a, Sqlite>),
    Postgres(Db<'a, Postgres>),
}

/// A store whose plain reads and writes are the ones written here once; it brings its own
/// hot path.
#[async_trait::async_trait]
pub trait SqlStore: Send + Sync {
    fn pools(&self) -> Pools<'_>;

    /// Seals the credentials this store writes and opens those it reads.
    fn sealer(&self) -> &super::sealed::Sealer;

    /// [`super::Store::complete`], adding `stats` to the dispatcher's per-minute counters
    /// in the same transaction.
    async fn complete_in(
        &self,
        completions: &[super::Completion],
        policy: &crate::domain::BreakerPolicy,
        stats: Option<(&str, &super::ops::BatchStats)>,
    ) -> Result<()>;

    /// Makes what applications committed elsewhere visible to the reads of events and
    /// deliveries (PostgreSQL's outbox); nothing to do on SQLite.
    async fn settle(&self) -> Result<()> {
        Ok(())
    }

    /// Tells the dispatchers of other processes that deliveries just committed are due
    /// (PostgreSQL's wake-up sequence); nothing to do on SQLite, whose writers all live in
    /// this process, where the service wakes the dispatcher itself.
    async fn wake_others(&self) -> Result<()> {
        Ok(())
    }
}

/// Runs `$body` with `$db` bound to the store's [`Db`], compiled once for each database.
macro_rules! on_db {
    ($store:expr, |$db:ident| $body:expr) => {
        match $crate::store::sql::SqlStore::pools($store) {
            $crate::store::sql::Pools::Sqlite($db) => $body,
            $crate::store::sql::Pools::Postgres($db) => $body,
        }
    };
}
pub(super) use on_db;

/// Classifies an sqlx error: connection trouble (on PostgreSQL also a server shutting down,
/// too many connections, a serialization failure or a deadlock) is `Unavailable`, to be
/// tried again; the rest is `Database`.
pub(super) fn db(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(d) = &e {
        if let Some(code) = d.code() {
            // SQLite's codes are numbers without a leading zero: none of these.
            let transient = code.starts_with("08")
                || matches!(
                    code.as_ref(),
                    "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01"
                );
            if transient {
                return StoreError::Unavailable(e);
            }
        }
    }
    StoreError::from_sqlx(e)
}

const NUL_MESSAGE: &str = "text and JSON strings may not contain the NUL character (\\u0000)";

/// Maps the errors of a write with client-supplied text. PostgreSQL refuses the NUL
/// character in text (`22021`) and `\u0000` in jsonb (`22P05`), which SQLite stores: that
/// is bad input, not a server error.
pub(super) fn write_error(e: sqlx::Error) -> StoreError {
    let unstorable = matches!(&e, sqlx::Error::Database(d)
        if matches!(d.code().as_deref(), Some("22021") | Some("22P05")));
    if unstorable {
        StoreError::InvalidData(NUL_MESSAGE.to_owned())
    } else {
        db(e)
    }
}

/// Whether any of these keys holds NUL, which PostgreSQL text cannot: such a key names
/// nothing that is stored, so a lookup by it finds nothing (on either database).
pub(super) fn has_nul(keys: &[&str]) -> bool {
    keys.iter().any(|k| k.contains('\0'))
}

/// Appends a page: ids below the cursor, newest first.
pub(super) fn push_page<'a, DB: Database>(q: &mut QueryBuilder<'a, DB>, page: &Page)
where
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    if let Some(after) = &page.after_id {
        q.push(" AND id < ").push_bind(after.clone());
    }
    q.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(page.limit));
}

/// Deletes a tenant's row of `table` by id; whether there was one.
pub(super) async fn delete_owned(
    store: &impl SqlStore,
    table: &str,
    tenant_id: &str,
    id: &str,
) -> Result<bool> {
    if has_nul(&[tenant_id, id]) {
        return Ok(false);
    }
    let sql = format!("DELETE FROM {table} WHERE tenant_id = $1 AND id = $2");
    let done = on_db!(store, |p| sqlx::query(&sql)
        .bind(tenant_id)
        .bind(id)
        .execute(p.writer)
        .await
        .map_err(db)?
        .rows_affected());
    Ok(done > 0)
}

/// How many deliveries of one endpoint a closed breaker makes due at a time from the backlog
/// it held: enough to keep the endpoint busy, few enough that the other endpoints of its
/// tenant, whose deliveries are newer and come after, wait behind a window and not behind
/// the whole backlog.
pub const RECOVERY_WINDOW: i64 = 1000;

/// Releases, a window at a time, the backlog that an open breaker held once the breaker has
/// closed (the completion that closes it releases the first window): for each enabled
/// endpoint with a closed breaker and unordered deliveries still parked, as many as bring
/// its due ones back to [`RECOVERY_WINDOW`]. It runs with the claims' breaker check, so a
/// backlog is never left parked, whether its deliveries then succeed or not. (Parked ordered
/// deliveries go in their order through the ordered release.) Notes in `recovering` whether
/// any is left.
pub(super) async fn release_recovered(
    store: &impl SqlStore,
    now: chrono::DateTime<chrono::Utc>,
    recovering: &super::Recovering,
) -> Result<()> {
    let find = "SELECT e.id, (SELECT count(*) FROM (SELECT 1 FROM deliveries q \
           WHERE q.endpoint_id = e.id AND q.status = 'pending' \
           AND q.next_attempt_at <= TS($1) LIMIT $2) w) \
         FROM endpoints e WHERE e.enabled AND e.breaker_state = 'closed' \
         AND EXISTS (SELECT 1 FROM deliveries d WHERE d.endpoint_id = e.id \
           AND d.status = 'pending' AND d.next_attempt_at IS NULL AND d.ordering_key IS NULL)";
    let now = super::rows::ms(now);
    on_db!(store, |p| {
        let release = format!(
            "UPDATE deliveries SET next_attempt_at = TS($1) WHERE id IN ( \
               SELECT d.id FROM deliveries d WHERE d.endpoint_id = $2 AND d.status = 'pending' \
               AND d.next_attempt_at IS NULL AND d.ordering_key IS NULL \
               ORDER BY d.created_at LIMIT $3{locks})",
            locks = p.dialect.row_locks(" FOR UPDATE SKIP LOCKED")
        );
        // On the writer: a few index probes per endpoint, and SQLite's readers are left
        // to the API (each reader connection opened costs its own page cache).
        let found: Vec<(String, i64)> = sqlx::query_as(&p.sql(find))
            .bind(now)
            .bind(RECOVERY_WINDOW)
            .fetch_all(p.writer)
            .await
            .map_err(db)?;
        recovering.set(!found.is_empty());
        for (endpoint_id, due) in found {
            if due < RECOVERY_WINDOW {
                sqlx::query(&p.sql(&release))
                    .bind(now)
                    .bind(&endpoint_id)
                    .bind(RECOVERY_WINDOW - due)
                    .execute(p.writer)
                    .await
                    .map_err(db)?;
            }
        }
    });
    Ok(())
}

/// A row type both databases can read.
pub(super) trait AnyRow:
    Send + Unpin + for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow>
{
}

impl<R> AnyRow for R where
    R: Send + Unpin + for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow>
{
}

/// A row type read whole from one table: its name and the columns of a `SELECT`.
pub(super) trait Table: AnyRow {
    const TABLE: &'static str;
    const COLUMNS: &'static str;
}

/// Declares the [`Table`] of each row type: `Row => "table", COLUMNS;`.
macro_rules! tables {
    ($($row:ty => $table:literal, $columns:expr;)+) => {
        $(impl $crate::store::sql::Table for $row {
            const TABLE: &'static str = $table;
            const COLUMNS: &'static str = $columns;
        })+
    };
}
pub(super) use tables;

/// A tenant's row of `R`'s table by id ([`fetch_row`]).
pub(super) async fn fetch_owned<R: Table>(
    store: &(impl SqlStore + ?Sized),
    tenant_id: &str,
    id: &str,
) -> Result<Option<R>> {
    fetch_row(store, &[("tenant_id", tenant_id), ("id", id)]).await
}

/// `SELECT columns FROM table WHERE k1 = $1 AND …` of `R`'s table for `keys`
/// (`(column, value)`): the one row, or `None` (also when a key holds NUL, which names
/// nothing stored).
pub(super) async fn fetch_row<R: Table>(
    store: &(impl SqlStore + ?Sized),
    keys: &[(&str, &str)],
) -> Result<Option<R>> {
    let (columns, table) = (R::COLUMNS, R::TABLE);
    if keys.iter().any(|(_, v)| v.contains('\0')) {
        return Ok(None);
    }
    let matching: Vec<String> = (1..)
        .zip(keys)
        .map(|(n, (column, _))| format!("{column} = ${n}"))
        .collect();
    let sql = format!(
        "SELECT {columns} FROM {table} WHERE {}",
        matching.join(" AND ")
    );
    on_db!(store, |p| {
        let text = p.sql(&sql);
        let mut q = sqlx::query_as(&text);
        for (_, value) in keys {
            q = q.bind(*value);
        }
        q.fetch_optional(p.reader).await.map_err(db)
    })
}

/// The rows made in a time window, by their time-ordered ids: `[since, until)` of the ids
/// with `prefix`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window<'a> {
    pub prefix: &'a str,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

/// A page of `R`'s table whose `keys` columns equal their values, made in `window` when
/// given: ids below the cursor, newest first (nothing when a key holds NUL, which names
/// nothing stored).
pub(super) async fn fetch_page<R: Table>(
    store: &(impl SqlStore + ?Sized),
    keys: &[(&str, &str)],
    window: Option<Window<'_>>,
    page: &Page,
) -> Result<Vec<R>> {
    let (columns, table) = (R::COLUMNS, R::TABLE);
    if has_nul(&[page_key(page)]) || keys.iter().any(|(_, v)| has_nul(&[v])) {
        return Ok(Vec::new());
    }
    let bounds = window.map(|w| {
        let at = |t| crate::domain::first_id_at(w.prefix, t);
        (w.since.map(at), w.until.map(at))
    });
    let sql = format!("SELECT {columns} FROM {table} WHERE true");
    on_db!(store, |p| {
        let mut q = QueryBuilder::new(p.sql(&sql));
        for (column, value) in keys {
            q.push(format!(" AND {column} = "))
                .push_bind((*value).to_owned());
        }
        if let Some((since, until)) = &bounds {
            if let Some(id) = since {
                q.push(" AND id >= ").push_bind(id.clone());
            }
            if let Some(id) = until {
                q.push(" AND id < ").push_bind(id.clone());
            }
        }
        push_page(&mut q, page);
        q.build_query_as().fetch_all(p.reader).await.map_err(db)
    })
}

/// The keys of a page request, for [`has_nul`].
pub(super) fn page_key(page: &Page) -> &str {
    page.after_id.as_deref().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::Dialect::{Postgres, Sqlite};

    #[test]
    fn markers_become_each_databases_time_conversions() {
        let text = "SELECT MS(created_at) AS created_at, MS(min(x)) FROM t \
                    WHERE at < TS($1) AND d = $2::jsonb AND ITEMS(1)";
        assert_eq!(
            Sqlite.sql(text),
            "SELECT created_at AS created_at, min(x) FROM t \
             WHERE at < $1 AND d = $2 AND ITEMS(1)"
        );
        assert_eq!(
            Postgres.sql(text),
            "SELECT (extract(epoch FROM created_at) * 1000)::int8 AS created_at, \
             (extract(epoch FROM min(x)) * 1000)::int8 FROM t \
             WHERE at < to_timestamp($1 / 1000.0) AND d = $2::jsonb AND ITEMS(1)"
        );
    }

    #[test]
    fn texts_without_markers_are_kept_as_they_are() {
        let text = "SELECT a::text FROM t WHERE b = $1";
        assert!(matches!(
            Postgres.sql(text),
            std::borrow::Cow::Borrowed(t) if t == text
        ));
        assert_eq!(Sqlite.sql(text), "SELECT a FROM t WHERE b = $1");
    }
}
