-- The circuit breaker of each endpoint, persisted and shared by every dispatcher.
ALTER TABLE endpoints ADD COLUMN breaker_state TEXT NOT NULL DEFAULT 'closed';
ALTER TABLE endpoints ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE endpoints ADD COLUMN breaker_until INTEGER;
ALTER TABLE endpoints ADD COLUMN failing_since INTEGER;
-- Pending deliveries by endpoint: the breaker's probe takes the endpoint's next due one.
CREATE INDEX deliveries_pending_endpoint ON deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
