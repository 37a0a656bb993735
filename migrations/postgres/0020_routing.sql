-- Routing beyond event types (payload filter, ordering, transformation), as the JSON the
-- API took; compiled in the process (hookrelay::routing), and evaluated by the SQL below
-- for dispatch_webhook().
ALTER TABLE endpoints ADD COLUMN routing text;
-- Ordered delivery: the key of an ordered endpoint's delivery, whether a delivery that
-- failed for good holds back the later ones of its key, and the insertion order.
ALTER TABLE deliveries ADD COLUMN ordering_key text COLLATE "C";
ALTER TABLE deliveries ADD COLUMN ordering_blocks boolean NOT NULL DEFAULT false;
ALTER TABLE deliveries ADD COLUMN seq bigserial;
CREATE INDEX deliveries_ordering ON deliveries (endpoint_id, ordering_key, seq)
    WHERE ordering_key IS NOT NULL;
