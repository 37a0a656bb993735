-- OAuth2 client credentials of an endpoint, as JSON ({token_url, client_id, client_secret
-- (sealed when a key is set), scope, audience}); NULL when it has none.
ALTER TABLE endpoints ADD COLUMN oauth2 text;
