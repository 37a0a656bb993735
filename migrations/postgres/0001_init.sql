-- hookrelay schema, PostgreSQL flavour: the same tables and columns as the SQLite schema.
--
-- Times are timestamptz with millisecond precision (hookrelay writes whole milliseconds and
-- reads them back as epoch milliseconds). JSON values are jsonb, except event data (json). Identifiers use the "C"
-- collation, so that ids sort (and compare, for cursors) byte-wise exactly as on SQLite,
-- whatever the database's default collation is.

CREATE TABLE tenants (
    id          text COLLATE "C" PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL
);

INSERT INTO tenants (id, name, created_at)
VALUES ('default', 'Default tenant', date_trunc('milliseconds', now()));

-- Bearer tokens, stored as SHA-256 hashes. tenant_id NULL = admin token.
CREATE TABLE tokens (
    id          text COLLATE "C" PRIMARY KEY,
    tenant_id   text COLLATE "C" REFERENCES tenants (id) ON DELETE CASCADE,
    hash        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL
);
CREATE INDEX tokens_tenant ON tokens (tenant_id);

CREATE TABLE event_types (
    name        text COLLATE "C" PRIMARY KEY,
    description text,
    schema      jsonb,
    created_at  timestamptz NOT NULL
);

CREATE TABLE endpoints (
    id              text COLLATE "C" PRIMARY KEY,
    tenant_id       text COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url             text NOT NULL,
    description     text,
    event_types     jsonb NOT NULL DEFAULT '[]',
    secret          text NOT NULL,
    previous_secret text,
    previous_secret_expires_at timestamptz,
    rate_limit      bigint,
    max_attempts    bigint,
    headers         jsonb NOT NULL DEFAULT '{}',
    enabled         boolean NOT NULL DEFAULT true,
    disabled_reason text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX endpoints_tenant ON endpoints (tenant_id, id);

CREATE TABLE events (
    id              text COLLATE "C" PRIMARY KEY,
    tenant_id       text COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    type            text COLLATE "C" NOT NULL,
    -- json, not jsonb: the payload is kept byte for byte, key order included, as posted.
    data            json NOT NULL,
    actor           text,
    idempotency_key text,
    traceparent     text,
    created_at      timestamptz NOT NULL,
    deliver_at      timestamptz
);
CREATE INDEX events_tenant ON events (tenant_id, id);
CREATE UNIQUE INDEX events_idempotency ON events (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- One event to one endpoint. A claimed delivery keeps status 'pending'; its lease is
-- next_attempt_at moved to the lease end plus lease_id, so an abandoned claim is simply due again.
-- endpoint_id is not a foreign key: the delivery history outlives a deleted endpoint.
CREATE TABLE deliveries (
    id              text COLLATE "C" PRIMARY KEY,
    tenant_id       text COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    event_id        text COLLATE "C" NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    endpoint_id     text COLLATE "C" NOT NULL,
    status          text NOT NULL
        CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts        bigint NOT NULL DEFAULT 0,
    max_attempts    bigint NOT NULL,
    next_attempt_at timestamptz,
    lease_id        text,
    last_error      text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
-- The claim index: only pending rows are in it, so finished history never slows claiming.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_tenant ON deliveries (tenant_id, id);
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, id);

CREATE TABLE attempts (
    id              text COLLATE "C" PRIMARY KEY,
    delivery_id     text COLLATE "C" NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt_number  bigint NOT NULL,
    started_at      timestamptz NOT NULL,
    duration_ms     bigint NOT NULL,
    status_code     bigint,
    response        text,
    error           text,
    outcome         text NOT NULL CHECK (outcome IN ('success', 'retry', 'failed')),
    next_attempt_at timestamptz
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, attempt_number);
-- Retention prunes the oldest attempts first.
CREATE INDEX attempts_started ON attempts (started_at);

-- Server settings that SQL functions need (dispatch_webhook reads default_max_attempts).
CREATE TABLE settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- Wake-ups: every committed insert of pending deliveries (by hookrelay or by the
-- dispatch_webhook SQL function inside an application's transaction) notifies the
-- dispatchers of every process. NOTIFY is delivered at commit, and not at all on rollback.
CREATE FUNCTION hookrelay_wake() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_deliveries WHERE status = 'pending') THEN
        PERFORM pg_notify('hookrelay_wake', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER deliveries_wake
    AFTER INSERT ON deliveries
    REFERENCING NEW TABLE AS new_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION hookrelay_wake();
