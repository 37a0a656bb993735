-- Unordered deliveries parked unscheduled (a disabled endpoint's, or those an open breaker
-- held) by endpoint: once the breaker has closed, claims release its backlog a window at a
-- time, oldest first, and find it here without reading the parked ordered deliveries.
CREATE INDEX deliveries_unscheduled ON deliveries (endpoint_id, created_at)
    WHERE status = 'pending' AND next_attempt_at IS NULL AND ordering_key IS NULL;
