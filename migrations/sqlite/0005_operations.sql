-- Operations: rolled-up delivery statistics, dispatcher heartbeats, alert state, the
-- built-in test receiver (inbox), and indexes that keep /v1/health off the big tables.

-- Per-minute counters, written by each dispatcher in the same transaction as its attempt
-- results (one row per minute and dispatcher, so processes never contend for a row).
-- minute = Unix milliseconds / 60000. e2e_bNN count delivered deliveries by end-to-end
-- latency bucket (bounds in hookrelay::store::ops::E2E_BOUNDS_MS, the last is +Inf).
CREATE TABLE stats_minutely (
    minute      INTEGER NOT NULL,
    dispatcher  TEXT NOT NULL,
    delivered   INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    retried     INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    attempt_ms  INTEGER NOT NULL DEFAULT 0,
    e2e_ms      INTEGER NOT NULL DEFAULT 0,
    e2e_b00 INTEGER NOT NULL DEFAULT 0, e2e_b01 INTEGER NOT NULL DEFAULT 0,
    e2e_b02 INTEGER NOT NULL DEFAULT 0, e2e_b03 INTEGER NOT NULL DEFAULT 0,
    e2e_b04 INTEGER NOT NULL DEFAULT 0, e2e_b05 INTEGER NOT NULL DEFAULT 0,
    e2e_b06 INTEGER NOT NULL DEFAULT 0, e2e_b07 INTEGER NOT NULL DEFAULT 0,
    e2e_b08 INTEGER NOT NULL DEFAULT 0, e2e_b09 INTEGER NOT NULL DEFAULT 0,
    e2e_b10 INTEGER NOT NULL DEFAULT 0, e2e_b11 INTEGER NOT NULL DEFAULT 0,
    e2e_b12 INTEGER NOT NULL DEFAULT 0, e2e_b13 INTEGER NOT NULL DEFAULT 0,
    e2e_b14 INTEGER NOT NULL DEFAULT 0, e2e_b15 INTEGER NOT NULL DEFAULT 0,
    e2e_b16 INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, dispatcher)
);

-- Each dispatcher process says it is alive every few seconds.
CREATE TABLE dispatchers (
    id              TEXT PRIMARY KEY,
    hostname        TEXT NOT NULL,
    pid             INTEGER NOT NULL,
    started_at      INTEGER NOT NULL,
    last_heartbeat  INTEGER NOT NULL,
    stopped_at      INTEGER
);

-- One row per alert that is firing (or resolved but not yet announced).
CREATE TABLE alerts (
    rule            TEXT NOT NULL,
    subject         TEXT NOT NULL,
    episode         TEXT NOT NULL,
    message         TEXT NOT NULL,
    details         TEXT NOT NULL DEFAULT '{}',
    fired_at        INTEGER NOT NULL,
    fired_sent      INTEGER NOT NULL DEFAULT 0,
    resolved_at     INTEGER,
    PRIMARY KEY (rule, subject)
);

-- The built-in test receiver.
CREATE TABLE inboxes (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    token       TEXT NOT NULL UNIQUE,
    secret      TEXT,
    description TEXT,
    created_at  INTEGER NOT NULL
);
CREATE INDEX inboxes_tenant ON inboxes (tenant_id, id);

CREATE TABLE inbox_messages (
    id           TEXT PRIMARY KEY,
    inbox_id     TEXT NOT NULL REFERENCES inboxes (id) ON DELETE CASCADE,
    received_at  INTEGER NOT NULL,
    method       TEXT NOT NULL,
    headers      TEXT NOT NULL,
    body         TEXT NOT NULL,
    truncated    INTEGER NOT NULL DEFAULT 0,
    verification TEXT NOT NULL,
    verify_error TEXT
);
CREATE INDEX inbox_messages_inbox ON inbox_messages (inbox_id, id);

-- The oldest pending delivery, found at the end of an index of pending rows only.
CREATE INDEX deliveries_pending_created ON deliveries (created_at) WHERE status = 'pending';
-- Open breakers and disabled endpoints, without reading every endpoint.
CREATE INDEX endpoints_breaker_open ON endpoints (id) WHERE breaker_state <> 'closed';
CREATE INDEX endpoints_disabled ON endpoints (id) WHERE enabled = 0;
