-- Consumer portal links: each opens the portal for one tenant until it expires or is
-- revoked. Only the SHA-256 of the link's token is kept. event_types is a JSON array of the
-- event types endpoints may subscribe to through the portal, or NULL for the whole catalog.
CREATE TABLE portal_links (
    id            text COLLATE "C" PRIMARY KEY,
    tenant_id     text COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    token_hash    text COLLATE "C" NOT NULL UNIQUE,
    read_only     boolean NOT NULL DEFAULT false,
    event_types   text,
    allow_brokers boolean NOT NULL DEFAULT false,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz
);
CREATE INDEX portal_links_tenant ON portal_links (tenant_id, id);
