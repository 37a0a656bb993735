-- Retention prunes the oldest attempts first.
CREATE INDEX attempts_started ON attempts (started_at);
