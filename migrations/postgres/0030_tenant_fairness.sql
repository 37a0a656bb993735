-- Fair claims: each tenant's due deliveries, oldest first, found without walking the
-- backlog of other tenants (a claim reads a few rows of each tenant it may serve).
CREATE INDEX deliveries_pending_tenant ON deliveries (tenant_id, next_attempt_at)
    WHERE status = 'pending';
