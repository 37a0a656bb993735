-- dispatch_webhook() without NOTIFY (see 0032): the deliveries it makes are announced by
-- drawing a number from hookrelay_wake_seq, which every waiting dispatcher reads every few
-- milliseconds. Like 0021, nothing is schema-qualified and re-running it is harmless;
-- `hookrelay install-sql` prints 0002, 0006, 0021 and this file.

-- Moved by every write that makes deliveries due; its value means nothing else.
CREATE SEQUENCE IF NOT EXISTS hookrelay_wake_seq;

-- dispatch_webhook() as in 0021, announcing its deliveries through hookrelay_wake_seq.
CREATE OR REPLACE FUNCTION dispatch_webhook(
    event_type text,
    event_data jsonb,
    actor text DEFAULT NULL,
    tenant text DEFAULT 'default',
    traceparent text DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_now timestamptz := date_trunc('milliseconds', clock_timestamp());
    v_event_id text := hookrelay_ulid('evt', v_now);
    v_default_max bigint;
    v_fanned bigint;
    -- A W3C trace context is kept only when well formed (as the HTTP API does): version,
    -- 32 hex digits of trace id, 16 of parent id, 2 of flags; all-zero ids are invalid.
    v_traceparent text := CASE
        WHEN dispatch_webhook.traceparent COLLATE "C" ~* '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
             AND lower(left(dispatch_webhook.traceparent, 2)) <> 'ff'
             AND substr(dispatch_webhook.traceparent, 4, 32) <> repeat('0', 32)
             AND substr(dispatch_webhook.traceparent, 37, 16) <> repeat('0', 16)
        THEN dispatch_webhook.traceparent END;
BEGIN
    IF dispatch_webhook.event_type IS NULL
        OR length(dispatch_webhook.event_type) > 128
        OR NOT (dispatch_webhook.event_type COLLATE "C" ~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$')
    THEN
        RAISE EXCEPTION 'dispatch_webhook: invalid event type %', quote_nullable(dispatch_webhook.event_type)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use dot-separated words of letters, digits, ''_'' and ''-'' (at most 128 characters), e.g. user.joined_community';
    END IF;
    IF event_data IS NULL OR jsonb_typeof(event_data) = 'null' THEN
        RAISE EXCEPTION 'dispatch_webhook: event data is required'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF length(dispatch_webhook.actor) > 256 THEN
        RAISE EXCEPTION 'dispatch_webhook: actor is longer than 256 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM 1 FROM tenants t WHERE t.id = dispatch_webhook.tenant FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'dispatch_webhook: tenant % not found', quote_nullable(dispatch_webhook.tenant)
            USING ERRCODE = 'foreign_key_violation';
    END IF;

    SELECT s.value::bigint INTO v_default_max FROM settings s WHERE s.key = 'default_max_attempts';

    INSERT INTO events (id, tenant_id, type, data, actor, traceparent, created_at)
    VALUES (v_event_id, dispatch_webhook.tenant, dispatch_webhook.event_type, event_data::json,
            dispatch_webhook.actor, v_traceparent, v_now);

    INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, attempts,
                            max_attempts, next_attempt_at, created_at, updated_at,
                            ordering_key, ordering_blocks)
    -- The endpoints are held (KEY SHARE, as a foreign key would) until commit, as
    -- hookrelay's own ingest does: deleting one waits for this transaction and then
    -- cancels its pending deliveries, these included.
    SELECT hookrelay_ulid('dlv', v_now), ep.tenant_id, v_event_id, ep.id, 'pending', 0,
           coalesce(ep.max_attempts, v_default_max, 15), v_now, v_now, v_now,
           hookrelay_ordering_key(ep.routing::jsonb, dispatch_webhook.event_type,
                                  dispatch_webhook.actor, v_event_id, event_data),
           coalesce(ep.routing::jsonb -> 'ordering' ->> 'on_failure', 'block') = 'block'
    FROM endpoints ep
    WHERE ep.tenant_id = dispatch_webhook.tenant
      AND ep.enabled
      AND (jsonb_array_length(ep.event_types) = 0
           OR EXISTS (
               SELECT 1 FROM jsonb_array_elements_text(ep.event_types) AS f(pattern)
               WHERE f.pattern = dispatch_webhook.event_type
                  OR (right(f.pattern, 1) = '*'
                      AND starts_with(dispatch_webhook.event_type, left(f.pattern, -1)))))
      AND hookrelay_filter_matches(ep.routing::jsonb -> 'filter', dispatch_webhook.event_type,
                                   dispatch_webhook.actor, v_event_id, event_data)
    ORDER BY ep.id
    FOR KEY SHARE OF ep;
    GET DIAGNOSTICS v_fanned = ROW_COUNT;

    -- Waiting dispatchers read this sequence and claim when it moves. Unlike NOTIFY it takes
    -- no lock that outlives the call, so concurrent callers' commits do not queue behind
    -- each other. It moves before this transaction commits: dispatchers look again a few
    -- times after a move, and poll as a backstop.
    IF v_fanned > 0 THEN
        PERFORM nextval('hookrelay_wake_seq');
    END IF;

    RETURN v_event_id;
END
$$;
