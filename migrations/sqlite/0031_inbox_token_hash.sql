-- Inbox tokens are credentials: an inbox is found by the SHA-256 of its token (lowercase
-- hex), and `token` keeps the token sealed when an encryption key is configured. Rows
-- written before this migration get their hash when hookrelay starts.
ALTER TABLE inboxes ADD COLUMN token_hash TEXT;
CREATE UNIQUE INDEX inboxes_token_hash ON inboxes (token_hash);
