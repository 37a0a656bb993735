-- Due ordered deliveries, for the sweep that parks those waiting for an earlier one of
-- their key (next_attempt_at NULL, out of every claim's index range) until it is their turn;
-- the parked ones (NULL) are found through it too.
CREATE INDEX deliveries_ordered_due ON deliveries (next_attempt_at)
    WHERE status = 'pending' AND ordering_key IS NOT NULL;
