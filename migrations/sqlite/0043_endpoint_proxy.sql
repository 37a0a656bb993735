-- The proxy an endpoint's deliveries leave through instead of --egress-proxy (a URL, its
-- password sealed when a key is set), or 'direct'; NULL follows --egress-proxy.
ALTER TABLE endpoints ADD COLUMN proxy TEXT;
