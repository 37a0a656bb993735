-- What an endpoint's rate_limit counts per: 'second' (the default, as before) or 'minute'.
ALTER TABLE endpoints ADD COLUMN rate_period text NOT NULL DEFAULT 'second';
