-- Routing beyond event types (payload filter, ordering, transformation), as the JSON the
-- API took; compiled in the process (hookrelay::routing).
ALTER TABLE endpoints ADD COLUMN routing TEXT;
-- Ordered delivery: the key of an ordered endpoint's delivery, and whether a delivery that
-- failed for good holds back the later ones of its key. Order within a key is rowid order
-- (insertion order: rowids only grow while the largest row exists).
ALTER TABLE deliveries ADD COLUMN ordering_key TEXT;
ALTER TABLE deliveries ADD COLUMN ordering_blocks INTEGER NOT NULL DEFAULT 0;
CREATE INDEX deliveries_ordering ON deliveries (endpoint_id, ordering_key, status)
    WHERE ordering_key IS NOT NULL;
