-- Each endpoint's delivery counters per minute and dispatcher process, written in the
-- transaction that records the attempts: per-endpoint statistics read at most 1,440 minutes
-- per process, never the attempt log.
CREATE TABLE endpoint_stats_minutely (
    endpoint_id     TEXT NOT NULL,
    minute          INTEGER NOT NULL,
    dispatcher      TEXT NOT NULL,
    delivered       INTEGER NOT NULL DEFAULT 0,
    failed          INTEGER NOT NULL DEFAULT 0,
    retried         INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    attempt_ms      INTEGER NOT NULL DEFAULT 0,
    e2e_ms          INTEGER NOT NULL DEFAULT 0,
    e2e_b00 INTEGER NOT NULL DEFAULT 0, e2e_b01 INTEGER NOT NULL DEFAULT 0, e2e_b02 INTEGER NOT NULL DEFAULT 0, e2e_b03 INTEGER NOT NULL DEFAULT 0, e2e_b04 INTEGER NOT NULL DEFAULT 0, e2e_b05 INTEGER NOT NULL DEFAULT 0, e2e_b06 INTEGER NOT NULL DEFAULT 0, e2e_b07 INTEGER NOT NULL DEFAULT 0, e2e_b08 INTEGER NOT NULL DEFAULT 0, e2e_b09 INTEGER NOT NULL DEFAULT 0, e2e_b10 INTEGER NOT NULL DEFAULT 0, e2e_b11 INTEGER NOT NULL DEFAULT 0, e2e_b12 INTEGER NOT NULL DEFAULT 0, e2e_b13 INTEGER NOT NULL DEFAULT 0, e2e_b14 INTEGER NOT NULL DEFAULT 0, e2e_b15 INTEGER NOT NULL DEFAULT 0, e2e_b16 INTEGER NOT NULL DEFAULT 0,
    -- Unix milliseconds of the minute's last success and last failure, and that failure's error.
    last_success_at INTEGER,
    last_failure_at INTEGER,
    last_error      TEXT,
    PRIMARY KEY (endpoint_id, minute, dispatcher)
);
CREATE INDEX endpoint_stats_minutely_minute ON endpoint_stats_minutely (minute);
