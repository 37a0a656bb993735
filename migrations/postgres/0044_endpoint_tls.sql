-- An endpoint's client certificate for mutual TLS, as JSON ({certificate, key (sealed when a
-- key is set), ca}); NULL when it has none. tls_expires_at is the certificate's expiry, for
-- the alert before it expires.
ALTER TABLE endpoints ADD COLUMN tls text;
ALTER TABLE endpoints ADD COLUMN tls_expires_at timestamptz;
CREATE INDEX endpoints_tls_expiry ON endpoints (tls_expires_at) WHERE tls_expires_at IS NOT NULL;
