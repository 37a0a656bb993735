-- dispatch_webhook() honouring endpoints' routing: payload filters (evaluated here with
-- the same semantics as hookrelay::routing) and ordering keys. Like 0002, nothing is
-- schema-qualified and re-running it is harmless; `hookrelay install-sql` prints 0002, 0006
-- and this file.

-- The value at a dot path (type, actor, id, data, data.a.b, data.items.0) of an event, as
-- hookrelay::routing reads it; NULL when missing.
CREATE OR REPLACE FUNCTION hookrelay_path_value(
    path text, ev_type text, ev_actor text, ev_id text, ev_data jsonb
) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    steps text[] := string_to_array(path, '.');
BEGIN
    CASE steps[1]
        WHEN 'type' THEN RETURN to_jsonb(ev_type);
        WHEN 'actor' THEN RETURN to_jsonb(ev_actor);
        WHEN 'id' THEN RETURN to_jsonb(ev_id);
        WHEN 'data' THEN RETURN ev_data #> coalesce(steps[2:], '{}');
        ELSE RETURN NULL;
    END CASE;
END
$$;

-- Whether an event passes an endpoint's payload filter (NULL: no filter), with the same
-- semantics as hookrelay::routing (the integration tests run one table of cases through
-- both). Filters were validated when they were saved.
CREATE OR REPLACE FUNCTION hookrelay_filter_matches(
    filter jsonb, ev_type text, ev_actor text, ev_id text, ev_data jsonb
) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    item jsonb;
    v jsonb;
    op text;
    arg jsonb;
BEGIN
    IF filter IS NULL OR jsonb_typeof(filter) = 'null' THEN
        RETURN true;
    END IF;
    IF filter ? 'and' THEN
        FOR item IN SELECT jsonb_array_elements(filter -> 'and') LOOP
            IF NOT hookrelay_filter_matches(item, ev_type, ev_actor, ev_id, ev_data) THEN
                RETURN false;
            END IF;
        END LOOP;
        RETURN true;
    ELSIF filter ? 'or' THEN
        FOR item IN SELECT jsonb_array_elements(filter -> 'or') LOOP
            IF hookrelay_filter_matches(item, ev_type, ev_actor, ev_id, ev_data) THEN
                RETURN true;
            END IF;
        END LOOP;
        RETURN false;
    ELSIF filter ? 'not' THEN
        RETURN NOT hookrelay_filter_matches(filter -> 'not', ev_type, ev_actor, ev_id, ev_data);
    END IF;
    v := hookrelay_path_value(filter ->> 'field', ev_type, ev_actor, ev_id, ev_data);
    IF jsonb_typeof(v) = 'null' THEN
        v := NULL;
    END IF;
    SELECT k, val INTO op, arg FROM jsonb_each(filter) AS e(k, val) WHERE k <> 'field' LIMIT 1;
    CASE op
        WHEN 'eq' THEN RETURN v IS NOT NULL AND hookrelay_json_eq(v, arg);
        WHEN 'ne' THEN RETURN v IS NULL OR NOT hookrelay_json_eq(v, arg);
        WHEN 'in' THEN
            RETURN v IS NOT NULL AND EXISTS (
                SELECT 1 FROM jsonb_array_elements(arg) AS a(x) WHERE hookrelay_json_eq(v, a.x));
        WHEN 'gt' THEN RETURN jsonb_typeof(v) = 'number' AND v::numeric > arg::numeric;
        WHEN 'gte' THEN RETURN jsonb_typeof(v) = 'number' AND v::numeric >= arg::numeric;
        WHEN 'lt' THEN RETURN jsonb_typeof(v) = 'number' AND v::numeric < arg::numeric;
        WHEN 'lte' THEN RETURN jsonb_typeof(v) = 'number' AND v::numeric <= arg::numeric;
        WHEN 'exists' THEN RETURN (v IS NOT NULL) = (arg::text = 'true');
        WHEN 'prefix' THEN RETURN jsonb_typeof(v) = 'string' AND starts_with(v #>> '{}', arg #>> '{}');
        ELSE RETURN false;
    END CASE;
END
$$;

-- JSON equality where numbers compare by value (1 equals 1.0), as hookrelay::routing does.
CREATE OR REPLACE FUNCTION hookrelay_json_eq(a jsonb, b jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(a) = 'number' AND jsonb_typeof(b) = 'number'
                THEN a::numeric = b::numeric
                ELSE a = b END
$$;

-- The ordering key of an event for an endpoint's routing (NULL: not ordered): the key's
-- value as text, strings as they are, anything else as JSON, '' when missing.
CREATE OR REPLACE FUNCTION hookrelay_ordering_key(
    routing jsonb, ev_type text, ev_actor text, ev_id text, ev_data jsonb
) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb;
BEGIN
    IF routing IS NULL OR NOT routing ? 'ordering' THEN
        RETURN NULL;
    END IF;
    v := hookrelay_path_value(routing -> 'ordering' ->> 'key', ev_type, ev_actor, ev_id, ev_data);
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RETURN '';
    ELSIF jsonb_typeof(v) = 'string' THEN
        RETURN v #>> '{}';
    END IF;
    RETURN v::text;
END
$$;

-- dispatch_webhook() as in 0006 (with the optional traceparent), now honouring endpoints'
-- payload filters and ordering.
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

    RETURN v_event_id;
END
$$;
