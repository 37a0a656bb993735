-- Transactional outbox: an application enqueues an event inside its own transaction,
--
--     BEGIN;
--     INSERT INTO memberships ...;
--     SELECT dispatch_webhook('user.joined_community', '{"user_id": "u_42"}', 'u_42');
--     COMMIT;
--
-- so that the event exists exactly when the business row does: nothing is sent if the
-- transaction rolls back, and the dispatchers of every hookrelay process are woken at
-- commit (the deliveries insert trigger notifies them).
--
-- Nothing here is schema-qualified: `hookrelay install-sql` prints this file for
-- applications that install it next to hookrelay's tables (resolved through search_path).
-- Re-running it is harmless.

-- A new id in hookrelay's format: PREFIX_ + a 26-character ULID in Crockford base32
-- (48-bit Unix time in milliseconds, then 80 random bits), e.g. evt_01JD8X3R5M2N4P6Q8S0T2V4W6Y.
-- Ids made later sort after ids made earlier, like the ids hookrelay makes itself.
CREATE OR REPLACE FUNCTION hookrelay_ulid(prefix text, at timestamptz DEFAULT clock_timestamp())
RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    alphabet constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    ms bigint := floor(extract(epoch FROM at) * 1000)::bigint;
    uuid bytea := uuid_send(gen_random_uuid());
    -- A version 4 UUID has fixed bits in bytes 6 and 8; bytes 0-5 and 10-13 are all random.
    rnd bit(80) := ('x' || encode(substring(uuid FROM 1 FOR 6) || substring(uuid FROM 11 FOR 4), 'hex'))::bit(80);
    id text := '';
BEGIN
    IF ms < 0 OR ms >= 281474976710656 THEN
        RAISE EXCEPTION 'hookrelay_ulid: time % is out of range', at
            USING ERRCODE = 'datetime_field_overflow';
    END IF;
    -- 10 characters of time (50 bits, the top 2 always zero), most significant first.
    FOR i IN REVERSE 9..0 LOOP
        id := id || substr(alphabet, ((ms >> (5 * i)) & 31)::int + 1, 1);
    END LOOP;
    -- 16 characters of randomness.
    FOR i IN 0..15 LOOP
        id := id || substr(alphabet, substring(rnd FROM 5 * i + 1 FOR 5)::int + 1, 1);
    END LOOP;
    RETURN prefix || '_' || id;
END
$$;

-- Enqueues an event of type event_type with data event_data (and optional actor) for
-- tenant, fanned out to the tenant's enabled endpoints whose filter accepts the type, as
-- hookrelay's own ingest does: an empty filter or `*` accepts every type, `prefix*` (e.g.
-- `user.*`) every type starting with prefix, anything else that exact type. Each delivery
-- gets the endpoint's max_attempts, else the server's (settings.default_max_attempts), else
-- 15, and is due at once. Returns the new event id (evt_...). Raises an exception for an
-- unknown tenant or invalid arguments. Data is not checked against the type's JSON Schema.
CREATE OR REPLACE FUNCTION dispatch_webhook(
    event_type text,
    event_data jsonb,
    actor text DEFAULT NULL,
    tenant text DEFAULT 'default'
) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_now timestamptz := date_trunc('milliseconds', clock_timestamp());
    v_event_id text := hookrelay_ulid('evt', v_now);
    v_default_max bigint;
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

    INSERT INTO events (id, tenant_id, type, data, actor, created_at)
    VALUES (v_event_id, dispatch_webhook.tenant, dispatch_webhook.event_type, event_data::json,
            dispatch_webhook.actor, v_now);

    INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, attempts,
                            max_attempts, next_attempt_at, created_at, updated_at)
    -- The endpoints are held (KEY SHARE, as a foreign key would) until commit, as
    -- hookrelay's own ingest does: deleting one waits for this transaction and then
    -- cancels its pending deliveries, these included.
    SELECT hookrelay_ulid('dlv', v_now), ep.tenant_id, v_event_id, ep.id, 'pending', 0,
           coalesce(ep.max_attempts, v_default_max, 15), v_now, v_now, v_now
    FROM endpoints ep
    WHERE ep.tenant_id = dispatch_webhook.tenant
      AND ep.enabled
      AND (jsonb_array_length(ep.event_types) = 0
           OR EXISTS (
               SELECT 1 FROM jsonb_array_elements_text(ep.event_types) AS f(pattern)
               WHERE f.pattern = dispatch_webhook.event_type
                  OR (right(f.pattern, 1) = '*'
                      AND starts_with(dispatch_webhook.event_type, left(f.pattern, -1)))))
    ORDER BY ep.id
    FOR KEY SHARE OF ep;

    RETURN v_event_id;
END
$$;
