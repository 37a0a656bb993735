-- The functions an application calls to enqueue an event inside its own transaction (the
-- transactional outbox). hookrelay installs them on every start into the function schema
-- (@FUNCTIONS@), next to the application's own functions, and `hookrelay install-sql` prints
-- them. They run with the rights of their owner (SECURITY DEFINER) and hookrelay's schema
-- (@TABLES@) as their search_path: a caller needs EXECUTE on them and nothing on
-- hookrelay's tables, which hold endpoint secrets. Executing them is not granted to PUBLIC.
--
-- The application's transaction writes one narrow row, the event, into hookrelay_outbox;
-- hookrelay fans it out moments after the commit in its own transactions (see the README).

-- The functions are created in the function schema: it is the first on the search path
-- while they are (the names below are not qualified, as applications call them).
SET search_path = @FUNCTIONS@, pg_catalog;

-- dispatch_webhook(event_type, event_data, actor, tenant, traceparent): enqueues an event
-- of type event_type with data event_data (and optional actor) for tenant. traceparent
-- (optional) is a W3C trace context kept with the event (a malformed one is dropped).
-- Returns the new event id (evt_...). Raises an exception for an unknown tenant or invalid
-- arguments. Data is not checked against the type's JSON Schema.
CREATE OR REPLACE FUNCTION dispatch_webhook(
    event_type text,
    event_data jsonb,
    actor text DEFAULT NULL,
    tenant text DEFAULT 'default',
    traceparent text DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = @TABLES@, pg_temp
AS $$
DECLARE
    v_now timestamptz := date_trunc('milliseconds', clock_timestamp());
    v_event_id text := hookrelay_ulid('evt', v_now);
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

    -- Checked now for the error; not locked: an event of a tenant deleted before hookrelay
    -- fans it out is dropped with the tenant's other events.
    PERFORM 1 FROM tenants t WHERE t.id = dispatch_webhook.tenant;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'dispatch_webhook: tenant % not found', quote_nullable(dispatch_webhook.tenant)
            USING ERRCODE = 'foreign_key_violation';
    END IF;

    INSERT INTO hookrelay_outbox (id, tenant_id, type, data, actor, traceparent, created_at)
    VALUES (v_event_id, dispatch_webhook.tenant, dispatch_webhook.event_type, event_data,
            dispatch_webhook.actor, v_traceparent, v_now);

    RETURN v_event_id;
END
$$;

-- dispatch_webhook(event_type, event_data, actor_user_id uuid): the call of applications
-- written for the community platform's webhook system, by name or by position, through
-- PostgREST's RPC as well as plain SQL; it replaces that system's function of the same
-- signature. The actor is kept as the uuid's text, for the default tenant. No argument has
-- a default, so that no call can match both functions.
CREATE OR REPLACE FUNCTION dispatch_webhook(
    event_type text,
    event_data jsonb,
    actor_user_id uuid
) RETURNS text
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = @TABLES@, pg_temp
AS $$
    SELECT @FUNCTIONS@.dispatch_webhook(event_type, event_data, actor_user_id::text)
$$;

-- Only the roles granted EXECUTE may call them (grants to named roles are kept).
REVOKE ALL ON FUNCTION dispatch_webhook(text, jsonb, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION dispatch_webhook(text, jsonb, uuid) FROM PUBLIC;

RESET search_path;
