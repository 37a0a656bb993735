-- Names of an endpoint's signature headers when a receiver demands others than
-- webhook-id, webhook-timestamp and webhook-signature, as JSON ({id, timestamp, signature},
-- each optional); NULL keeps the standard names.
ALTER TABLE endpoints ADD COLUMN signature_headers text;
