-- The body shape and signature an endpoint's deliveries carry: 'standard-webhooks' (the
-- default) or 'community' (the community platform's `X-Webhook-Signature: sha256=` format).
ALTER TABLE endpoints ADD COLUMN IF NOT EXISTS format text NOT NULL DEFAULT 'standard-webhooks'
    CHECK (format IN ('standard-webhooks', 'community'));
