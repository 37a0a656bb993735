//! Where hookrelay's objects live in a PostgreSQL database that it may share with an
//! application: its tables, sequences and helpers in one schema (`hookrelay` by default),
//! and the `dispatch_webhook()` functions that the application calls in another (`public` by
//! default), installed on every start.

use sqlx::{postgres::PgConnectOptions, Connection, PgConnection, PgPool, Row};
use tracing::{info, warn};

use super::db;
use crate::store::{PgSchemas, Result, StoreError, DEFAULT_PG_SCHEMA};

/// The template of the application's functions; `@TABLES@` and `@FUNCTIONS@` name the
/// schemas (plain identifiers, see [`crate::store::valid_schema_name`]).
const FUNCTIONS_TEMPLATE: &str = include_str!("dispatch_webhook.sql");

/// Serializes the installation of the functions among processes starting together.
const INSTALL_LOCK: i64 = 0x686f_6f6b_6673; // "hookfs"

/// The identity arguments (as `pg_get_function_identity_arguments` prints them) of the two
/// functions, in the order the template defines them.
const SIGNATURES: [&str; 2] = [
    "event_type text, event_data jsonb, actor text, tenant text, traceparent text",
    "event_type text, event_data jsonb, actor_user_id uuid",
];

/// The SQL that installs the application's functions into `schemas.functions`, calling into
/// hookrelay's tables in `tables`.
pub fn functions_sql(tables: &str, functions: &str) -> String {
    FUNCTIONS_TEMPLATE
        .replace("@TABLES@", tables)
        .replace("@FUNCTIONS@", functions)
}

/// Decides which schema holds hookrelay's tables and creates it if needed, on a
/// connection of its own. An explicit setting wins; otherwise `hookrelay`, unless that
/// schema holds no installation while the connection's default schema holds one made
/// before schemas existed (hookrelay's migrations table beside `deliveries` and
/// `tenants`): that one keeps working where it is.
pub(super) async fn prepare(options: &PgConnectOptions, schemas: &PgSchemas) -> Result<String> {
    let mut conn = PgConnection::connect_with(options).await.map_err(db)?;
    let schema = match &schemas.tables {
        Some(explicit) => explicit.clone(),
        None => {
            let (installed, legacy): (bool, Option<String>) = sqlx::query_as(
                "SELECT to_regclass(format('%I._sqlx_migrations', $1::text)) IS NOT NULL,
                        (SELECT s FROM (SELECT current_schema() AS s) c
                          WHERE s IS NOT NULL
                            AND to_regclass(format('%I._sqlx_migrations', s)) IS NOT NULL
                            AND to_regclass(format('%I.deliveries', s)) IS NOT NULL
                            AND to_regclass(format('%I.tenants', s)) IS NOT NULL)",
            )
            .bind(DEFAULT_PG_SCHEMA)
            .fetch_one(&mut conn)
            .await
            .map_err(db)?;
            match legacy {
                Some(s) if !installed && crate::store::valid_schema_name(&s) => {
                    warn!(
                        schema = %s,
                        "hookrelay's tables are in the schema {s}, where installations made \
                         before hookrelay had a schema of its own keep them; they stay there. \
                         Set pg_schema = \"{s}\" to say so, or see the README (Upgrading) to \
                         move them"
                    );
                    s
                }
                _ => DEFAULT_PG_SCHEMA.to_owned(),
            }
        }
    };
    if !schema_exists(&mut conn, &schema).await? {
        // Two processes starting together may both try; the loser's error is harmless.
        let created = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&mut conn)
            .await;
        if let Err(e) = created {
            if !schema_exists(&mut conn, &schema).await? {
                return Err(StoreError::Setup(format!(
                    "cannot create the schema {schema} for hookrelay's tables: {e}"
                )));
            }
        }
        info!(schema = %schema, "created the schema for hookrelay's tables");
    }
    let _ = conn.close().await;
    Ok(schema)
}

async fn schema_exists(conn: &mut PgConnection, schema: &str) -> Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(conn)
        .await
        .map_err(db)
}

/// One existing function named `dispatch_webhook` in the function schema.
struct Existing {
    oid: i64,
    signature: String,
    returns_text: bool,
    source: String,
    security_definer: bool,
    config: Vec<String>,
    /// Roles (quoted) granted to execute it, besides its owner; PUBLIC is never carried
    /// over to hookrelay's functions.
    grantees: Vec<String>,
}

/// Installs (or brings up to date) the application's functions in `functions`, in one
/// transaction. Other functions of that name in that schema (such as the community
/// platform's own `dispatch_webhook`) are dropped, so that no call is ambiguous, and the
/// roles granted to execute them may execute hookrelay's. Installing revokes EXECUTE from
/// PUBLIC; grants to named roles are kept.
/// Functions already up to date are left alone, so a role that does not own them can start.
pub(super) async fn install_functions(pool: &PgPool, tables: &str, functions: &str) -> Result<()> {
    let sql = functions_sql(tables, functions);
    // The bodies, between the dollar quotes, as `prosrc` holds them.
    let bodies: Vec<&str> = sql.split("$$").skip(1).step_by(2).collect();
    let search_path = format!("search_path={tables}, pg_temp");
    let mut tx = pool.begin().await.map_err(db)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(INSTALL_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    let existing: Vec<Existing> = sqlx::query(
        "SELECT p.oid::int8 AS oid,
                pg_get_function_identity_arguments(p.oid) AS signature,
                p.prorettype = 'text'::regtype AS returns_text,
                p.prosrc AS source, p.prosecdef AS security_definer,
                coalesce(p.proconfig, '{}') AS config,
                coalesce((SELECT array_agg(quote_ident(r.rolname))
                            FROM aclexplode(p.proacl) a
                            JOIN pg_roles r ON r.oid = a.grantee
                           WHERE a.privilege_type = 'EXECUTE'
                             AND a.grantee <> p.proowner), '{}') AS grantees
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = $1 AND p.proname = 'dispatch_webhook'",
    )
    .bind(functions)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?
    .into_iter()
    .map(|r| Existing {
        oid: r.get("oid"),
        signature: r.get("signature"),
        returns_text: r.get("returns_text"),
        source: r.get("source"),
        security_definer: r.get("security_definer"),
        config: r.get("config"),
        grantees: r.get("grantees"),
    })
    .collect();

    let ours = |e: &Existing| e.returns_text && SIGNATURES.contains(&e.signature.as_str());
    let up_to_date = SIGNATURES.iter().zip(&bodies).all(|(signature, body)| {
        existing.iter().any(|e| {
            ours(e)
                && e.signature == *signature
                && e.source == *body
                && e.security_definer
                && e.config == [search_path.clone()]
        })
    });
    let foreign: Vec<&Existing> = existing.iter().filter(|e| !ours(e)).collect();
    // The copy that the migrations leave in hookrelay's own schema, without a search path
    // of its own: only the one in the function schema is meant to be called.
    let stale_copy = tables != functions && {
        let copy = format!("{tables}.dispatch_webhook(text, jsonb, text, text, text)");
        sqlx::query_scalar::<_, bool>("SELECT to_regprocedure($1) IS NOT NULL")
            .bind(copy)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?
    };
    if up_to_date && foreign.is_empty() && !stale_copy {
        return tx.commit().await.map_err(db);
    }

    let mut carried: Vec<String> = Vec::new();
    for old in &foreign {
        let name: String = sqlx::query_scalar("SELECT $1::oid::regprocedure::text")
            .bind(old.oid)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(&format!("DROP FUNCTION {name}"))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                StoreError::Setup(format!(
                    "cannot replace the function {name} with hookrelay's dispatch_webhook(): {e}"
                ))
            })?;
        info!(function = %name, "replaced an existing function with hookrelay's dispatch_webhook()");
        carried.extend(old.grantees.iter().cloned());
    }
    if !up_to_date {
        sqlx::raw_sql(&sql).execute(&mut *tx).await.map_err(|e| {
            StoreError::Setup(format!(
                "cannot install dispatch_webhook() in the schema {functions} (install it as \
                 its owner with `hookrelay install-sql | psql`, or choose another \
                 pg_function_schema): {e}"
            ))
        })?;
    }
    for signature in SIGNATURES {
        let target = format!("{functions}.dispatch_webhook({signature})");
        for grantee in &carried {
            sqlx::query(&format!("GRANT EXECUTE ON FUNCTION {target} TO {grantee}"))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
    }
    if stale_copy {
        sqlx::query(&format!(
            "DROP FUNCTION IF EXISTS {tables}.dispatch_webhook(text, jsonb, text, text, text)"
        ))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_names_both_schemas_and_two_bodies() {
        let sql = functions_sql("hr", "app");
        assert!(!sql.contains('@'));
        assert!(sql.contains("SET search_path = app, pg_catalog;"));
        assert!(sql.contains("CREATE OR REPLACE FUNCTION dispatch_webhook("));
        assert!(sql.contains("SELECT app.dispatch_webhook(event_type"));
        assert!(sql.trim_end().ends_with("RESET search_path;"));
        assert!(sql.contains("SET search_path = hr, pg_temp"));
        assert_eq!(sql.split("$$").count(), 5, "two dollar-quoted bodies");
        assert!(
            sql.contains("REVOKE ALL ON FUNCTION dispatch_webhook(text, jsonb, uuid) FROM PUBLIC")
        );
    }
}
