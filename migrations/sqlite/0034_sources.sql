-- Sources: brokers whose messages become events of a tenant. The URL's password is sealed
-- like an endpoint's when an encryption key is configured.
CREATE TABLE sources (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url         TEXT NOT NULL,
    description TEXT,
    created_at  INTEGER NOT NULL
);
CREATE INDEX sources_tenant ON sources (tenant_id, id);

-- Messages a source could not turn into an event, with the reason; each source keeps its
-- newest ones only.
CREATE TABLE source_rejections (
    id          TEXT PRIMARY KEY,
    source_id   TEXT NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    message_id  TEXT NOT NULL,
    reason      TEXT NOT NULL,
    body        TEXT NOT NULL,
    truncated   INTEGER NOT NULL DEFAULT 0,
    received_at INTEGER NOT NULL
);
CREATE INDEX source_rejections_source ON source_rejections (source_id, id);
