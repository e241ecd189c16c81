-- pghub 0.3: events (topic, bigint[] key, jsonb value) over LISTEN/NOTIFY.
-- The wire format is docs/wire-format.md; the Python encoder writes the same bytes.

\echo Use "CREATE EXTENSION pghub" to load this file. \quit

-- ==== Core: channel, encode, decode, notify (the foundation) ====
-- Errors (docs/sql.md): 22023 bad topic, 22004 NULL key element, 2202E key array of more than
-- one dimension, 54000 payload over 7999 bytes, 22P02 payload that fails to decode.
-- Backslashes are written in E'' strings so that the bodies mean the same whatever
-- standard_conforming_strings says. Triggers call these per row: the common path avoids
-- PL/pgSQL loops and capturing regular expressions (both cost microseconds a call).

-- CREATE EXTENSION makes the schema (control file) before running this script, and refuses
-- CREATE SCHEMA IF NOT EXISTS on a schema the extension does not own. Run outside CREATE
-- EXTENSION (the no-file-access installer), the script makes it itself.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'pghub') THEN
        CREATE SCHEMA pghub;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA pghub TO public;

CREATE OR REPLACE FUNCTION pghub.version()
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT '0.3'::text $$;

COMMENT ON FUNCTION pghub.version() IS
'The version of the pghub SQL code (0.3).';

CREATE OR REPLACE FUNCTION pghub._topic_fault(topic text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    shown text := left(topic, 100) || CASE WHEN length(topic) > 100 THEN '...' ELSE '' END;
    bad text := substring(topic FROM '[^A-Za-z0-9_]');
BEGIN
    IF topic = '' THEN
        RAISE EXCEPTION 'invalid topic "": a topic cannot be empty'
            USING ERRCODE = 'invalid_parameter_value',
                HINT = 'A topic is 1 to 63 characters, each in [A-Za-z0-9_].';
    END IF;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'invalid topic "%": bad character % at position %',
            shown, to_json(bad), strpos(topic, bad)
            USING ERRCODE = 'invalid_parameter_value',
                HINT = 'A topic is 1 to 63 characters, each in [A-Za-z0-9_].';
    END IF;
    IF length(topic) > 63 THEN
        RAISE EXCEPTION 'invalid topic "%": too long, % characters (at most 63)',
            shown, length(topic)
            USING ERRCODE = 'invalid_parameter_value',
                HINT = 'A topic is 1 to 63 characters, each in [A-Za-z0-9_].';
    END IF;
    RETURN lower(topic COLLATE "C");  -- not reached: pghub.channel calls this for bad topics
END
$$;

COMMENT ON FUNCTION pghub._topic_fault(text) IS
'Internal to pghub.channel: raises 22023 naming the topic and its fault (empty, bad '
'character and its 1-based position, too long and its length).';

-- LANGUAGE sql and not STRICT (a STRICT function with a CASE body is not inlined): a NULL
-- topic still gives NULL, through the STRICT pghub._topic_fault.
CREATE OR REPLACE FUNCTION pghub.channel(topic text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
SELECT CASE
    WHEN length(topic) BETWEEN 1 AND 63 AND topic !~ '[^A-Za-z0-9_]'
        -- The C collation folds ASCII A-Z only, whatever the database's locale (Turkish I).
        THEN lower(topic COLLATE "C")
    ELSE pghub._topic_fault(topic)
END
$$;

COMMENT ON FUNCTION pghub.channel(text) IS
'The notification channel of a topic: the topic with A-Z folded to a-z. A topic is 1 to 63 '
'characters of [A-Za-z0-9_]; anything else raises 22023 naming the topic and the fault. '
'NULL gives NULL.';

CREATE OR REPLACE FUNCTION pghub.encode(key bigint[] DEFAULT NULL, value jsonb DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    payload text := 'e';
    json text;
    null_at integer;
BEGIN
    IF key IS NOT NULL THEN
        IF array_ndims(key) > 1 THEN
            RAISE EXCEPTION 'invalid key: an array of % dimensions, a key has one', array_ndims(key)
                USING ERRCODE = 'array_subscript_error';
        END IF;
        null_at := array_position(key, NULL);
        IF null_at IS NOT NULL THEN
            RAISE EXCEPTION 'invalid key: element key[%] is NULL', null_at
                USING ERRCODE = 'null_value_not_allowed';
        END IF;
        payload := 'e' || array_to_string(key, ',');
    END IF;
    IF value IS NOT NULL AND value <> 'null'::jsonb THEN
        -- jsonb::text already sorts object members, prints numbers as numeric and escapes
        -- strings as the wire wants; it only adds a space after each ',' and ':'.
        json := value::text;
        IF strpos(json, ': null') = 0 THEN
            -- Fast: json_strip_nulls re-emits a json text token by token with no whitespace
            -- (strings through the same escaper as jsonb). It drops object members whose
            -- value is null, so it is used only when the text has no ': null' at all.
            json := json_strip_nulls(json::json)::text;
        ELSE
            -- Each match is a whole string (kept) or a space outside strings (dropped).
            json := regexp_replace(json, E'("(?:[^"\\\\]|\\\\.)*")| ', E'\\1', 'g');
        END IF;
        -- '$' occurs only inside strings, where \u0024 means the same.
        payload := payload || ':' || replace(json, '$', E'\\u0024');
    END IF;
    IF octet_length(payload) > 7999 THEN
        RAISE EXCEPTION 'payload too large: % bytes, the limit is 7999', octet_length(payload)
            USING ERRCODE = 'program_limit_exceeded',
                HINT = 'PostgreSQL refuses notification payloads of 8000 bytes and more.';
    END IF;
    RETURN payload;
END
$$;

COMMENT ON FUNCTION pghub.encode(bigint[], jsonb) IS
'The canonical pghub payload of a key and a value: e, the key as decimal integers joined by '
'commas, and :JSON without whitespace and with $ as \u0024. A NULL or empty key writes no '
'key list, a NULL or JSON null value no JSON part. Raises 22004 for a NULL key element, 2202E '
'for a key of more than one dimension, 54000 for a payload over 7999 bytes.';

CREATE OR REPLACE FUNCTION pghub._payload_fault(payload text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    pos integer := 2;  -- 1-based position of the character being read
    n integer := length(payload);
    start integer;
    c text;
    expected text;
    found text;
BEGIN
    -- Walks the prefix and key list of a payload already known to be bad, and raises at
    -- the first fault. Every character before it is ASCII: character offset = byte offset.
    IF left(payload, 1) IS DISTINCT FROM 'e' THEN
        pos := 1;
        expected := '"e"';
    END IF;
    WHILE expected IS NULL AND pos <= n AND substr(payload, pos, 1) <> ':' LOOP
        start := pos;
        IF substr(payload, pos, 1) = '-' THEN
            pos := pos + 1;
        END IF;
        c := substr(payload, pos, 1);
        IF c = '0' AND pos > start THEN
            expected := 'a digit 1-9 (no negative zero)';
        ELSIF c = '0' THEN
            pos := pos + 1;
        ELSIF c BETWEEN '1' AND '9' THEN
            WHILE substr(payload, pos, 1) BETWEEN '0' AND '9' LOOP
                pos := pos + 1;
            END LOOP;
            IF pos - start >= 19
                AND substr(payload, start, pos - start)::numeric
                NOT BETWEEN -9223372036854775808 AND 9223372036854775807 THEN
                found := substr(payload, start, pos - start);
                pos := start;
                expected := 'an integer within the signed 64-bit range';
            END IF;
        ELSE
            expected := 'an integer (0 or -?[1-9][0-9]*)';
        END IF;
        IF expected IS NULL AND pos <= n THEN
            c := substr(payload, pos, 1);
            IF c = ',' THEN
                pos := pos + 1;
                IF pos > n OR substr(payload, pos, 1) = ':' THEN
                    expected := 'an integer (0 or -?[1-9][0-9]*)';
                END IF;
            ELSIF c <> ':' THEN
                expected := '",", ":" or the end';
            END IF;
        END IF;
    END LOOP;
    IF expected IS NULL THEN
        -- Prefix and keys are fine: the fault is in the JSON text after the ':'.
        pos := pos + 1;
        expected := 'a JSON text';
    END IF;
    IF found IS NULL THEN
        found := CASE WHEN pos > n THEN 'the end' ELSE to_json(substr(payload, pos, 1))::text END;
    END IF;
    RAISE EXCEPTION 'invalid payload at byte %: expected %, found %', pos - 1, expected, found
        USING ERRCODE = 'invalid_text_representation',
            DETAIL = format('payload: %s', left(payload, 200));
END
$$;

COMMENT ON FUNCTION pghub._payload_fault(text) IS
'Internal to pghub.decode: raises 22P02 with the byte offset of the first fault in the prefix '
'or key list of a payload that pghub.decode found bad.';

CREATE OR REPLACE FUNCTION pghub.decode(payload text, OUT key bigint[], OUT value jsonb)
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    colon integer := strpos(payload, ':');  -- keys hold no ':', so the first one ends them
    head text;
    why text;
BEGIN
    head := CASE WHEN colon = 0 THEN payload ELSE left(payload, colon - 1) END;
    IF head !~ '^e(?:(?:0|-?[1-9][0-9]*)(?:,(?:0|-?[1-9][0-9]*))*)?$' THEN
        PERFORM pghub._payload_fault(payload);
    END IF;
    -- Integers of 19 digits and more may overflow: then find which (rare, slow path).
    -- Nested IFs: a condition with a subquery runs through the executor on every call, and
    -- a counted repetition costs microseconds even on short text.
    IF length(head) >= 20 THEN
        IF head ~ '[0-9]{19}' AND EXISTS (
            SELECT FROM unnest(string_to_array(substr(head, 2), ',')) AS e (n)
            WHERE n::numeric NOT BETWEEN -9223372036854775808 AND 9223372036854775807
        ) THEN
            PERFORM pghub._payload_fault(payload);
        END IF;
    END IF;
    key := string_to_array(substr(head, 2), ',')::bigint[];
    IF colon > 0 THEN
        BEGIN
            value := substr(payload, colon + 1)::jsonb;
        EXCEPTION WHEN data_exception THEN
            -- The JSON text starts after the ASCII prefix and keys and the ':'.
            GET STACKED DIAGNOSTICS why = pg_exception_detail;
            RAISE EXCEPTION 'invalid payload at byte %: expected a JSON text: %',
                colon, coalesce(nullif(why, ''), sqlerrm)
                USING ERRCODE = 'invalid_text_representation',
                    DETAIL = format('payload: %s', left(payload, 200));
        END;
        IF value = 'null'::jsonb THEN
            value := NULL;
        END IF;
    END IF;
END
$$;

COMMENT ON FUNCTION pghub.decode(text) IS
'Reads a pghub payload back into its key (an empty array when there is none) and value (NULL '
'when there is none or it is JSON null). Strict: a payload no encoder could write raises '
'22P02 with the byte offset where it goes wrong.';

CREATE OR REPLACE FUNCTION pghub.notify(
    topic text, key bigint[] DEFAULT NULL, value jsonb DEFAULT NULL
)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $$
BEGIN
    IF topic IS NULL THEN
        RAISE EXCEPTION 'invalid topic: NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- channel() and encode() raise before anything is queued; encode() checks the size.
    PERFORM pg_notify(pghub.channel(topic), pghub.encode(key, value));
END
$$;

COMMENT ON FUNCTION pghub.notify(text, bigint[], jsonb) IS
'Sends the event (topic, key, value) as NOTIFY on the channel of the topic with the canonical '
'payload, delivered at commit. Raises (and sends nothing) on a bad or NULL topic (22023), a '
'NULL key element (22004), a key of more than one dimension (2202E), a payload over 7999 '
'bytes (54000).';

GRANT EXECUTE ON FUNCTION
pghub.version(),
pghub._topic_fault(text),
pghub.channel(text),
pghub.encode(bigint[], jsonb),
pghub._payload_fault(text),
pghub.decode(text),
pghub.notify(text, bigint[], jsonb)
TO public;

-- ==== Triggers: row and statement publishing ====
