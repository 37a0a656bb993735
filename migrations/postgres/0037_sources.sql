-- Sources: brokers whose messages become events of a tenant. The URL's password is sealed
-- like an endpoint's when an encryption key is configured.
CREATE TABLE sources (
    id          text COLLATE "C" PRIMARY KEY,
    tenant_id   text COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url         text NOT NULL,
    description text,
    created_at  bigint NOT NULL
);
CREATE INDEX sources_tenant ON sources (tenant_id, id);

-- Messages a source could not turn into an event, with the reason; each source keeps its
-- newest ones only.
CREATE TABLE source_rejections (
    id          text COLLATE "C" PRIMARY KEY,
    source_id   text COLLATE "C" NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    message_id  text NOT NULL,
    reason      text NOT NULL,
    body        text NOT NULL,
    truncated   boolean NOT NULL DEFAULT false,
    received_at bigint NOT NULL
);
CREATE INDEX source_rejections_source ON source_rejections (source_id, id);
