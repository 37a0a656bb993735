-- The disabled-endpoint index in the form the shared SQL asks for (`NOT enabled`, as on
-- PostgreSQL): SQLite uses a partial index only for a condition written as its own.
DROP INDEX endpoints_disabled;
CREATE INDEX endpoints_disabled ON endpoints (id) WHERE NOT enabled;
