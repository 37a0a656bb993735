-- What an endpoint's rate_limit counts per: 'second' (the default, as before) or 'minute'.
ALTER TABLE endpoints ADD COLUMN rate_period TEXT NOT NULL DEFAULT 'second';
