-- The audit trail: every configuration change, who made it (a token id, `admin` for the
-- configured admin token, `system` for hookrelay's own changes), when, and what changed
-- (secrets never). No foreign key: a tenant's trail outlives the tenant. Kept under the
-- retention setting.
CREATE TABLE audit_log (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT,
    changes    TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id);
