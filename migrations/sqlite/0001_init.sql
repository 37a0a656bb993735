-- hookrelay schema, SQLite flavour. Times are integer milliseconds since the Unix epoch.
-- JSON values are stored as text.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

INSERT INTO tenants (id, name, created_at)
VALUES ('default', 'Default tenant', CAST(strftime('%s', 'now') AS INTEGER) * 1000);

-- Bearer tokens, stored as SHA-256 hashes. tenant_id NULL = admin token.
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    hash        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE event_types (
    name        TEXT PRIMARY KEY,
    description TEXT,
    schema      TEXT,
    created_at  INTEGER NOT NULL
);

CREATE TABLE endpoints (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url             TEXT NOT NULL,
    description     TEXT,
    event_types     TEXT NOT NULL DEFAULT '[]',
    secret          TEXT NOT NULL,
    previous_secret TEXT,
    previous_secret_expires_at INTEGER,
    rate_limit      INTEGER,
    max_attempts    INTEGER,
    headers         TEXT NOT NULL DEFAULT '{}',
    enabled         INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX endpoints_tenant ON endpoints (tenant_id, id);

CREATE TABLE events (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    type            TEXT NOT NULL,
    data            TEXT NOT NULL,
    actor           TEXT,
    idempotency_key TEXT,
    traceparent     TEXT,
    created_at      INTEGER NOT NULL,
    deliver_at      INTEGER
);
CREATE INDEX events_tenant ON events (tenant_id, id);
CREATE UNIQUE INDEX events_idempotency ON events (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- One event to one endpoint. A claimed delivery keeps status 'pending'; its lease is
-- next_attempt_at moved to the lease end plus lease_id, so an abandoned claim is simply due again.
CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    event_id        TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    endpoint_id     TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    next_attempt_at INTEGER,
    lease_id        TEXT,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
-- The claim index: only pending rows are in it, so finished history never slows claiming.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_tenant ON deliveries (tenant_id, id);
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, id);

CREATE TABLE attempts (
    id              TEXT PRIMARY KEY,
    delivery_id     TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt_number  INTEGER NOT NULL,
    started_at      INTEGER NOT NULL,
    duration_ms     INTEGER NOT NULL,
    status_code     INTEGER,
    response        TEXT,
    error           TEXT,
    outcome         TEXT NOT NULL,
    next_attempt_at INTEGER
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, attempt_number);
