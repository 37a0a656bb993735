-- Operations: rolled-up delivery statistics, dispatcher heartbeats, alert state, the
-- built-in test receiver (inbox), and indexes that keep /v1/health off the big tables.

-- Per-minute counters, written by each dispatcher in the same transaction as its attempt
-- results (one row per minute and dispatcher, so processes never contend for a row).
-- minute = Unix milliseconds / 60000. e2e_bNN count delivered deliveries by end-to-end
-- latency bucket (bounds in hookrelay::store::ops::E2E_BOUNDS_MS, the last is +Inf).
CREATE TABLE stats_minutely (
    minute      bigint NOT NULL,
    dispatcher  text COLLATE "C" NOT NULL,
    delivered   bigint NOT NULL DEFAULT 0,
    failed      bigint NOT NULL DEFAULT 0,
    retried     bigint NOT NULL DEFAULT 0,
    attempts    bigint NOT NULL DEFAULT 0,
    attempt_ms  bigint NOT NULL DEFAULT 0,
    e2e_ms      bigint NOT NULL DEFAULT 0,
    e2e_b00 bigint NOT NULL DEFAULT 0, e2e_b01 bigint NOT NULL DEFAULT 0,
    e2e_b02 bigint NOT NULL DEFAULT 0, e2e_b03 bigint NOT NULL DEFAULT 0,
    e2e_b04 bigint NOT NULL DEFAULT 0, e2e_b05 bigint NOT NULL DEFAULT 0,
    e2e_b06 bigint NOT NULL DEFAULT 0, e2e_b07 bigint NOT NULL DEFAULT 0,
    e2e_b08 bigint NOT NULL DEFAULT 0, e2e_b09 bigint NOT NULL DEFAULT 0,
    e2e_b10 bigint NOT NULL DEFAULT 0, e2e_b11 bigint NOT NULL DEFAULT 0,
    e2e_b12 bigint NOT NULL DEFAULT 0, e2e_b13 bigint NOT NULL DEFAULT 0,
    e2e_b14 bigint NOT NULL DEFAULT 0, e2e_b15 bigint NOT NULL DEFAULT 0,
    e2e_b16 bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, dispatcher)
);

-- Each dispatcher process says it is alive every few seconds.
CREATE TABLE dispatchers (
    id              text COLLATE "C" PRIMARY KEY,
    hostname        text NOT NULL,
    pid             bigint NOT NULL,
    started_at      timestamptz NOT NULL,
    last_heartbeat  timestamptz NOT NULL,
    stopped_at      timestamptz
);

-- One row per alert that is firing (or resolved but not yet announced).
CREATE TABLE alerts (
    rule            text COLLATE "C" NOT NULL,
    subject         text COLLATE "C" NOT NULL,
    episode         text NOT NULL,
    message         text NOT NULL,
    details         jsonb NOT NULL DEFAULT '{}',
    fired_at        timestamptz NOT NULL,
    fired_sent      boolean NOT NULL DEFAULT false,
    resolved_at     timestamptz,
    PRIMARY KEY (rule, subject)
);

-- The built-in test receiver.
CREATE TABLE inboxes (
    id          text COLLATE "C" PRIMARY KEY,
    tenant_id   text COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    token       text COLLATE "C" NOT NULL UNIQUE,
    secret      text,
    description text,
    created_at  timestamptz NOT NULL
);
CREATE INDEX inboxes_tenant ON inboxes (tenant_id, id);

CREATE TABLE inbox_messages (
    id           text COLLATE "C" PRIMARY KEY,
    inbox_id     text COLLATE "C" NOT NULL REFERENCES inboxes (id) ON DELETE CASCADE,
    received_at  timestamptz NOT NULL,
    method       text NOT NULL,
    headers      jsonb NOT NULL,
    body         text NOT NULL,
    truncated    boolean NOT NULL DEFAULT false,
    verification text NOT NULL,
    verify_error text
);
CREATE INDEX inbox_messages_inbox ON inbox_messages (inbox_id, id);

-- The oldest pending delivery, found at the end of an index of pending rows only.
CREATE INDEX deliveries_pending_created ON deliveries (created_at) WHERE status = 'pending';
-- Open breakers and disabled endpoints, without reading every endpoint.
CREATE INDEX endpoints_breaker_open ON endpoints (id) WHERE breaker_state <> 'closed';
CREATE INDEX endpoints_disabled ON endpoints (id) WHERE NOT enabled;
