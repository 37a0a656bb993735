-- Claims and completions update every delivery twice, and the claim index holds only
-- pending rows: dead entries of rows updated since the last vacuum are what a claim walks
-- past. Vacuum deliveries after 2 % of it (at least 5,000 rows) changed, not the default
-- 20 %, which on a table of millions of rows would leave hundreds of thousands behind.
ALTER TABLE deliveries SET (autovacuum_vacuum_scale_factor = 0.02,
                            autovacuum_vacuum_threshold = 5000,
                            autovacuum_vacuum_insert_scale_factor = 0.05);
