-- Consumer portal links: each opens the portal for one tenant until it expires or is
-- revoked. Only the SHA-256 of the link's token is kept. event_types is a JSON array of the
-- event types endpoints may subscribe to through the portal, or NULL for the whole catalog.
CREATE TABLE portal_links (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    token_hash    TEXT NOT NULL UNIQUE,
    read_only     INTEGER NOT NULL DEFAULT 0,
    event_types   TEXT,
    allow_brokers INTEGER NOT NULL DEFAULT 0,
    created_by    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);
CREATE INDEX portal_links_tenant ON portal_links (tenant_id, id);
