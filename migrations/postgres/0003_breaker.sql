-- The circuit breaker of each endpoint, persisted and shared by every dispatcher process.
ALTER TABLE endpoints
    ADD COLUMN breaker_state text NOT NULL DEFAULT 'closed'
        CHECK (breaker_state IN ('closed', 'open', 'half_open')),
    ADD COLUMN consecutive_failures bigint NOT NULL DEFAULT 0,
    ADD COLUMN breaker_until timestamptz,
    ADD COLUMN failing_since timestamptz;
-- Pending deliveries by endpoint: the breaker's probe takes the endpoint's next due one.
CREATE INDEX deliveries_pending_endpoint ON deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
