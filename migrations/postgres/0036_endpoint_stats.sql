-- Each endpoint's delivery counters per minute, one row per minute and dispatcher process (so
-- processes never wait for each other), written in the statement that records the attempts:
-- per-endpoint statistics read at most 1,440 minutes per process, never the attempt log.
CREATE TABLE endpoint_stats_minutely (
    endpoint_id     text COLLATE "C" NOT NULL,
    minute          bigint NOT NULL,
    dispatcher      text COLLATE "C" NOT NULL,
    delivered       bigint NOT NULL DEFAULT 0,
    failed          bigint NOT NULL DEFAULT 0,
    retried         bigint NOT NULL DEFAULT 0,
    attempts        bigint NOT NULL DEFAULT 0,
    attempt_ms      bigint NOT NULL DEFAULT 0,
    e2e_ms          bigint NOT NULL DEFAULT 0,
    e2e_b00 bigint NOT NULL DEFAULT 0, e2e_b01 bigint NOT NULL DEFAULT 0, e2e_b02 bigint NOT NULL DEFAULT 0, e2e_b03 bigint NOT NULL DEFAULT 0, e2e_b04 bigint NOT NULL DEFAULT 0, e2e_b05 bigint NOT NULL DEFAULT 0, e2e_b06 bigint NOT NULL DEFAULT 0, e2e_b07 bigint NOT NULL DEFAULT 0, e2e_b08 bigint NOT NULL DEFAULT 0, e2e_b09 bigint NOT NULL DEFAULT 0, e2e_b10 bigint NOT NULL DEFAULT 0, e2e_b11 bigint NOT NULL DEFAULT 0, e2e_b12 bigint NOT NULL DEFAULT 0, e2e_b13 bigint NOT NULL DEFAULT 0, e2e_b14 bigint NOT NULL DEFAULT 0, e2e_b15 bigint NOT NULL DEFAULT 0, e2e_b16 bigint NOT NULL DEFAULT 0,
    -- Unix milliseconds of the minute's last success and last failure, and that failure's error.
    last_success_at bigint,
    last_failure_at bigint,
    last_error      text,
    PRIMARY KEY (endpoint_id, minute, dispatcher)
);
-- For pruning by age.
CREATE INDEX endpoint_stats_minutely_minute ON endpoint_stats_minutely (minute);
