-- Ordered deliveries: only what is still open matters to ordering. A delivery of an
-- ordering key waits while an earlier one of its endpoint and key is pending or has failed
-- for good where it blocks; finished history is never read again, so it stays out of the
-- index (a key with a million delivered events costs its next delivery one index probe).
CREATE INDEX deliveries_ordering_open ON deliveries (endpoint_id, ordering_key, seq)
    WHERE ordering_key IS NOT NULL
      AND (status = 'pending' OR (status = 'failed' AND ordering_blocks));
DROP INDEX deliveries_ordering;
-- Due ordered deliveries, for the sweep that parks those waiting for an earlier one of
-- their key (next_attempt_at NULL, out of every claim's index range) until it is their turn.
CREATE INDEX deliveries_ordered_due ON deliveries (next_attempt_at)
    WHERE status = 'pending' AND ordering_key IS NOT NULL;
