-- pghub 0.3: events (topic, bigint[] key, jsonb value) over LISTEN/NOTIFY.
-- The wire format is docs/wire-format.md; the Python encoder writes the same bytes.

\echo Use "CREATE EXTENSION pghub" to load this file. \quit

-- ==== Security (docs/security.md) ====
-- These functions run inside other roles' statements and triggers, a superuser's included, so
-- nothing in them may resolve to an object that another role can create:
-- - every function but two pins its search_path to pg_catalog, pg_temp (pg_catalog first,
--   pg_temp last, where no function or operator is ever looked up). pghub's own functions
--   are called schema-qualified, with arguments of their exact declared types;
-- - pghub.channel and pghub.notify are LANGUAGE sql functions that the planner inlines into
--   the calling query, which a SET clause would prevent. Inlined, a body is parsed in the
--   caller's search_path, so theirs name everything with its schema: functions as
--   pg_catalog.f, operators as OPERATOR(pg_catalog.op), the collation and literal types too;
-- - dynamic SQL quotes names with format('%I') or quote_ident and values with quote_literal;
-- - no function is SECURITY DEFINER: each runs with its caller's rights.
-- The script itself runs with the same path, and makes schema pghub itself: under CREATE
-- EXTENSION (the control file names pg_catalog as the extension's schema) the schema is then
-- owned by the bootstrap superuser, not by the role that ran CREATE EXTENSION, and a schema
-- pghub that some role made beforehand is refused instead of used.
SET LOCAL search_path = pg_catalog, pg_temp;

-- ==== Core: channel, encode, decode, notify (the foundation) ====
-- Errors (docs/sql.md): 22023 bad topic, 22004 NULL key element, 2202E key array of more than
-- one dimension, 54000 payload over 7999 bytes, 54001 value nested too deeply to be written,
-- 22P02 payload that fails to decode.
-- Backslashes are written in E'' strings so that the bodies mean the same whatever
-- standard_conforming_strings says. Triggers call these per row: the common path avoids
-- PL/pgSQL loops and capturing regular expressions (both cost microseconds a call).

-- The schema. Under CREATE EXTENSION it must not exist yet: whoever made it could own or write
-- into the schema pghub's functions run from. Run outside CREATE EXTENSION (the script route,
-- docs/install.md) the installing role owns everything it creates; a schema pghub is then
-- accepted only if it is that role's own earlier pghub install, which this run replaces.
-- Every refusal is SQLSTATE 42P06 (duplicate_schema) and names the schema's owner.
DO $$
DECLARE
    schema_oid oid;
    schema_owner name;
    why text;
    by_extension boolean := EXISTS (
        SELECT FROM pg_catalog.pg_extension AS e WHERE e.extname OPERATOR(pg_catalog.=) 'pghub'
    );
BEGIN
    SELECT n.oid, pg_catalog.pg_get_userbyid(n.nspowner)
    INTO schema_oid, schema_owner
    FROM pg_catalog.pg_namespace AS n
    WHERE n.nspname OPERATOR(pg_catalog.=) 'pghub';
    IF schema_oid IS NULL THEN
        CREATE SCHEMA pghub;
        RETURN;
    END IF;
    IF by_extension AND EXISTS (
        SELECT FROM pg_catalog.pg_depend AS d
        WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass
            AND d.objid OPERATOR(pg_catalog.=) schema_oid
            AND d.deptype OPERATOR(pg_catalog.=) 'e'
    ) THEN
        RAISE EXCEPTION 'pghub: pghub is installed in this database by CREATE EXTENSION'
            USING ERRCODE = 'duplicate_schema',
                HINT = 'Update it with ALTER EXTENSION pghub UPDATE, not with its script.';
    END IF;
    IF by_extension THEN
        RAISE EXCEPTION 'pghub: schema pghub already exists (owner %); CREATE EXTENSION pghub '
            'makes its own schema and does not install into one made beforehand', schema_owner
            USING ERRCODE = 'duplicate_schema',
                DETAIL = 'Whoever owns or can create objects in schema pghub could plant '
                    'functions and operators that pghub''s functions would then run.',
                HINT = 'Find out who made schema pghub and why, drop it, then install again.';
    END IF;
    IF schema_owner OPERATOR(pg_catalog.<>) CURRENT_USER THEN
        why := pg_catalog.format('belongs to role %I, not to %I, who runs this install',
            schema_owner, CURRENT_USER);
    ELSIF pg_catalog.to_regprocedure('pghub.version()') IS NULL THEN
        why := 'holds no pghub install (it has no function pghub.version())';
    ELSIF EXISTS (
        SELECT FROM pg_catalog.pg_proc AS p
        WHERE p.pronamespace OPERATOR(pg_catalog.=) schema_oid
            AND p.proowner OPERATOR(pg_catalog.<>) (
                SELECT n.nspowner FROM pg_catalog.pg_namespace AS n
                WHERE n.oid OPERATOR(pg_catalog.=) schema_oid
            )
    ) THEN
        why := 'holds functions of other roles than its owner';
    END IF;
    IF why IS NOT NULL THEN
        RAISE EXCEPTION 'pghub: schema pghub already exists and %', why
            USING ERRCODE = 'duplicate_schema',
                DETAIL = 'The script route installs into a schema pghub that it creates, or '
                    'replaces an install that the same role made; it does not adopt a schema '
                    'made by anyone else, even an empty one.',
                HINT = 'Install as the role that owns the earlier install, or find out who '
                    'made schema pghub and why, drop it, then install again.';
    END IF;
    -- The same role's earlier script install: the CREATE OR REPLACE below replace its functions.
END
$$;
GRANT USAGE ON SCHEMA pghub TO public;

CREATE OR REPLACE FUNCTION pghub.version()
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT '0.3'::text $$;

COMMENT ON FUNCTION pghub.version() IS
'The version of the pghub SQL code (0.3).';

CREATE OR REPLACE FUNCTION pghub._topic_fault(topic text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shown text := left(topic, 100) || CASE WHEN length(topic) > 100 THEN '...' ELSE '' END;
    bad text := substring(topic FROM '[^A-Za-z0-9_]');
BEGIN
    IF topic IS NULL THEN
        RAISE EXCEPTION 'invalid topic: NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
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
    RETURN lower(topic COLLATE "C");  -- not reached: called for bad topics only
END
$$;

COMMENT ON FUNCTION pghub._topic_fault(text) IS
'Internal to pghub.channel and pghub.notify: raises 22023 naming the topic and its fault '
'(NULL, empty, bad character and its 1-based position, too long and its length).';

-- LANGUAGE sql and not STRICT, so that the planner inlines it into the calling query (it
-- does not inline a STRICT function whose body is a CASE). A NULL topic gives NULL.
-- No SET search_path: that would stop the inlining, which a trigger's row pays for (measured,
-- docs/security.md). Inlined, the body is parsed in the caller's search_path, where any
-- role's schema may come first, so every name in it is qualified: an unqualified call or
-- operator could resolve to another role's better-matching one and run with the caller's
-- rights. topic is text, the type every call below takes, and the pattern a pg_catalog.text.
CREATE OR REPLACE FUNCTION pghub.channel(topic text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
SELECT CASE
    WHEN pg_catalog.length(topic) OPERATOR(pg_catalog.>=) 1
        AND pg_catalog.length(topic) OPERATOR(pg_catalog.<=) 63
        AND topic OPERATOR(pg_catalog.!~) '[^A-Za-z0-9_]'::pg_catalog.text
        -- The C collation folds ASCII A-Z only, whatever the database's locale (Turkish I).
        THEN pg_catalog.lower(topic COLLATE pg_catalog."C")
    WHEN topic IS NULL THEN NULL
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
SET search_path = pg_catalog, pg_temp
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
        ELSIF strpos(json, ':[null]') = 0 AND strpos(json, ': [null]') = 0 THEN
            -- Null members (rows with NULL columns): wrap each null after ': ' in [] so that
            -- it survives, then unwrap. Outside strings that gives ':[null]', inside strings
            -- (kept as they are) ': [null]'; neither was in the text before, so both unwrap
            -- exactly where they were wrapped.
            json := replace(replace(
                json_strip_nulls(replace(json, ': null', ': [null]')::json)::text,
                ':[null]', ':null'
            ), ': [null]', ': null');
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
'for a key of more than one dimension, 54000 for a payload over 7999 bytes, 54001 for a value '
'nested too deeply for the server to write as text (no payload could hold it).';

CREATE OR REPLACE FUNCTION pghub._payload_fault(payload text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
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
SET search_path = pg_catalog, pg_temp
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
        EXCEPTION
            WHEN data_exception THEN
                -- The JSON text starts after the ASCII prefix and keys and the ':'.
                GET STACKED DIAGNOSTICS why = pg_exception_detail;
                RAISE EXCEPTION 'invalid payload at byte %: expected a JSON text: %',
                    colon, coalesce(nullif(why, ''), sqlerrm)
                    USING ERRCODE = 'invalid_text_representation',
                        DETAIL = format('payload: %s', left(payload, 200));
            WHEN statement_too_complex THEN
                -- 54001, stack depth exceeded: JSON nested deeper than the parser can go is
                -- a payload that cannot be decoded, like any other (the Python decoder says
                -- the same of what nests too deeply for Python).
                RAISE EXCEPTION 'invalid payload at byte %: expected a JSON text: %', colon,
                    'it nests too deeply for the server'
                    USING ERRCODE = 'invalid_text_representation',
                        DETAIL = format('payload: %s', left(payload, 200));
        END;
        IF value = 'null'::jsonb THEN
            value := NULL;
        END IF;
        -- PostgreSQL 16 and later read an exponent of 1073741823 and more (0e1073741823 is 0)
        -- where 14 and 15 refuse it: refuse it everywhere, as the Python decoder does. The
        -- cheap test rules out nearly every payload; the second skips exponents in strings.
        IF substr(payload, colon + 1) ~ '[eE][-+]?0*[1-9][0-9]{9}' THEN
            IF EXISTS (
                SELECT FROM regexp_matches(
                    substr(payload, colon + 1), E'"(?:[^"\\\\]|\\\\.)*"|[eE]([-+]?[0-9]+)', 'g'
                ) AS m (g)
                WHERE abs(m.g[1]::numeric) >= 1073741823
            ) THEN
                RAISE EXCEPTION 'invalid payload at byte %: expected a JSON text: %', colon,
                    'a number''s exponent is outside numeric''s range'
                    USING ERRCODE = 'invalid_text_representation',
                        DETAIL = format('payload: %s', left(payload, 200));
            END IF;
        END IF;
    END IF;
END
$$;

COMMENT ON FUNCTION pghub.decode(text) IS
'Reads a pghub payload back into its key (an empty array when there is none) and value (NULL '
'when there is none or it is JSON null). Strict: a payload no encoder could write raises '
'22P02 with the byte offset where it goes wrong.';

-- LANGUAGE sql: inlined into the calling query or PL/pgSQL expression (a trigger's PERFORM),
-- which saves a function call a row. The arguments of pg_notify are computed, left to right,
-- before it queues anything: the topic is checked first, then the key, the value and the size
-- (by encode). coalesce reaches pghub._topic_fault only for a NULL topic.
-- No SET search_path, as for pghub.channel: every call is qualified and takes exactly the
-- argument types given (text, bigint[], jsonb).
CREATE OR REPLACE FUNCTION pghub.notify(
    topic text, key bigint[] DEFAULT NULL, value jsonb DEFAULT NULL
)
RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE
AS $$
SELECT pg_catalog.pg_notify(
    coalesce(pghub.channel(topic), pghub._topic_fault(topic)),
    pghub.encode(key, value)
)
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
-- Tables publish their changes as events on a topic. Two shapes (docs/sql.md, "Publishing tables"):
--   per row:       one event per changed row, key = the row's key, optionally with the row;
--   per statement: one event per statement (or as few as fit in 7999 bytes each), key = the
--                  flattened keys of every affected row, read from the transition tables in
--                  one set-based query.
-- TRUNCATE is published by both (op "tru", no key). publish_table() writes the triggers.
-- SQLSTATEs raised here: 22004 (NULL table), 22023 (bad topic or option), 42703 (no such key
-- column), 42701 (key column twice), 42804 (key column not smallint/integer/bigint), 42809 (not
-- a table), 55000 (no primary key and no key columns; nullable key column), 39P01 (trigger used
-- wrongly).

CREATE OR REPLACE FUNCTION pghub.key_columns(tbl regclass, columns text[] DEFAULT NULL)
RETURNS name[]
LANGUAGE plpgsql
STABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    resolved name[];
    all_good boolean;
    bad record;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'pghub: the table must not be NULL' USING ERRCODE = '22004';
    END IF;
    -- The common case in one indexed catalog query; the diagnosis below runs only on failure.
    IF columns IS NULL OR cardinality(columns) = 0 THEN
        SELECT array_agg(a.attname ORDER BY k.n),
               bool_and(coalesce(nullif(t.typbasetype, 0), t.oid) IN (20, 21, 23))
        INTO resolved, all_good
        FROM pg_catalog.pg_index AS i
        CROSS JOIN LATERAL unnest(i.indkey::smallint[]) WITH ORDINALITY AS k (attnum, n)
        INNER JOIN pg_catalog.pg_attribute AS a
            ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        INNER JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
        WHERE i.indrelid = tbl AND i.indisprimary;
        IF resolved IS NULL THEN
            RAISE EXCEPTION 'pghub: table % has no primary key and no key columns were given', tbl
                USING ERRCODE = '55000',
                      HINT = 'Add a primary key or name integer key columns.';
        END IF;
    ELSE
        SELECT array_agg(a.attname ORDER BY u.n),
               bool_and(coalesce(coalesce(nullif(t.typbasetype, 0), t.oid) IN (20, 21, 23)
                                 AND a.attnotnull, false))
               AND count(DISTINCT u.col) = count(*)
        INTO resolved, all_good
        FROM unnest(columns) WITH ORDINALITY AS u (col, n)
        LEFT JOIN pg_catalog.pg_attribute AS a
            ON a.attrelid = tbl AND a.attname = u.col AND a.attnum > 0 AND NOT a.attisdropped
        LEFT JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid;
    END IF;
    IF all_good THEN
        RETURN resolved;
    END IF;
    -- The first offending column, in the order given, with what is wrong with it.
    SELECT u.col, u.n, a.attname IS NULL AS missing, t.oid AS typ,
           coalesce(nullif(t.typbasetype, 0), t.oid) IN (20, 21, 23) AS integral,
           a.attnotnull AS notnull,
           count(*) OVER (PARTITION BY u.col) AS times
    INTO bad
    FROM unnest(coalesce(nullif(columns, '{}'), resolved::text[])) WITH ORDINALITY AS u (col, n)
    LEFT JOIN pg_catalog.pg_attribute AS a
        ON a.attrelid = tbl AND a.attname = u.col AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
    ORDER BY a.attname IS NULL DESC,
             coalesce(nullif(t.typbasetype, 0), t.oid) IN (20, 21, 23) ASC,
             count(*) OVER (PARTITION BY u.col) DESC,
             a.attnotnull ASC,
             u.n
    LIMIT 1;
    IF bad.missing THEN
        RAISE EXCEPTION 'pghub: key column "%" (number %) does not exist in table %',
            bad.col, bad.n, tbl
            USING ERRCODE = '42703';
    ELSIF NOT bad.integral THEN
        RAISE EXCEPTION 'pghub: key column "%" of table % is of type %, %',
            bad.col, tbl, bad.typ::regtype, 'not smallint, integer or bigint'
            USING ERRCODE = '42804';
    ELSIF bad.times > 1 THEN
        RAISE EXCEPTION 'pghub: key column "%" of table % is named more than once', bad.col, tbl
            USING ERRCODE = '42701';
    END IF;
    RAISE EXCEPTION 'pghub: key column "%" of table % can be NULL', bad.col, tbl
        USING ERRCODE = '55000',
              HINT = 'A key element cannot be NULL: declare the column NOT NULL.';
END;
$$;

COMMENT ON FUNCTION pghub.key_columns(regclass, text[]) IS
'The key columns pghub publishes for a table: the given column names (exact, case-sensitive) or, '
'when none are given, the primary key. Errors: 22004 NULL table, 55000 no primary key or a '
'nullable column, 42703 no such column, 42804 not smallint/integer/bigint, 42701 named twice.';

CREATE OR REPLACE FUNCTION pghub.row_trigger()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    first integer := 0;  -- TG_ARGV index of the topic: options come before it
    topic text;
    tbl text := format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME);
    columns text[];
    with_data boolean := false;
    key_cols name[];
    col name;
    new_row jsonb;
    old_row jsonb;
    new_key bigint[] := '{}'::bigint[];
    old_key bigint[] := '{}'::bigint[];
    event_key bigint[];
    data jsonb;
    value jsonb;
    data_text text;
    bound integer;
    seq bigint;
BEGIN
    -- Options, each starting with '+' (which no topic has), come before the topic; every
    -- argument after the topic is a key column, whatever its name ('+data' included).
    WHILE first < TG_NARGS AND left(TG_ARGV[first], 1) = '+' LOOP
        IF TG_ARGV[first] <> '+data' THEN
            RAISE EXCEPTION 'pghub.row_trigger: unknown option %', quote_literal(TG_ARGV[first])
                USING ERRCODE = '39P01',
                    HINT = 'The only option is ''+data'', before the topic.';
        END IF;
        with_data := true;
        first := first + 1;
    END LOOP;
    IF TG_WHEN <> 'AFTER' OR first >= TG_NARGS THEN
        RAISE EXCEPTION 'pghub.row_trigger must run AFTER, with the topic as argument '
            '(after the options, if any)'
            USING ERRCODE = '39P01';
    END IF;
    topic := TG_ARGV[first];
    columns := TG_ARGV[first + 1:TG_NARGS - 1];
    -- The event's number in its transaction ("seq"): no two events of a transaction are then
    -- identical, which PostgreSQL would deliver once (a row updated 1, 2, 1 must end at 1).
    -- A transaction-local setting: it starts again with each transaction.
    seq := pg_catalog.set_config('pghub.seq', (coalesce(nullif(
        pg_catalog.current_setting('pghub.seq', true), ''), '0')::bigint + 1)::text, true)::bigint;
    IF TG_LEVEL = 'STATEMENT' THEN
        IF TG_OP = 'TRUNCATE' THEN
            PERFORM pghub.notify(topic, NULL::bigint[],
                jsonb_build_object('op', 'tru', 'table', tbl, 'seq', seq));
            RETURN NULL;
        END IF;
        RAISE EXCEPTION 'pghub.row_trigger runs FOR EACH ROW (or AFTER TRUNCATE), %',
            format('not for %s statements', TG_OP)
            USING ERRCODE = '39P01';
    END IF;
    -- Named key columns are taken as given (publish_table checked them once), so a row costs
    -- no catalog query; only the primary-key default needs one lookup per row.
    IF cardinality(columns) = 0 THEN
        key_cols := pghub.key_columns(TG_RELID::regclass, NULL::text[]);
    ELSE
        key_cols := columns;
    END IF;

    -- Key values are read through jsonb: one conversion per row, no dynamic SQL to plan.
    IF TG_OP <> 'DELETE' THEN
        new_row := to_jsonb(NEW);
    END IF;
    IF TG_OP <> 'INSERT' THEN
        old_row := to_jsonb(OLD);
    END IF;
    FOREACH col IN ARRAY key_cols LOOP
        IF NOT coalesce(new_row, old_row) ? col THEN
            IF left(col, 1) = '+' THEN  -- an option written after the topic, most likely
                RAISE EXCEPTION 'pghub: key column "%" does not exist in table %', col, tbl
                    USING ERRCODE = '42703',
                        HINT = 'Options such as ''+data'' go before the topic: '
                            'pghub.row_trigger(''+data'', ''topic'', key columns...).';
            END IF;
            RAISE EXCEPTION 'pghub: key column "%" does not exist in table %', col, tbl
                USING ERRCODE = '42703';
        END IF;
        new_key := new_key || (new_row ->> col)::bigint;
        old_key := old_key || (old_row ->> col)::bigint;
    END LOOP;

    value := jsonb_build_object('op', lower(left(TG_OP, 3)), 'table', tbl, 'seq', seq);
    IF TG_OP = 'DELETE' THEN
        event_key := old_key;
        data := old_row;
    ELSE
        event_key := new_key;
        data := new_row;
        IF TG_OP = 'UPDATE' AND old_key <> new_key THEN
            value := value || jsonb_build_object('old_key', to_jsonb(old_key));
        END IF;
    END IF;

    IF NOT with_data THEN
        PERFORM pghub.notify(topic, event_key, value);
        RETURN NULL;
    END IF;
    -- Canonical JSON is jsonb's text without the blanks after ':' and ',', with each '$' six bytes
    -- long: this bound is never below the real size, so most rows need no trial encoding
    -- (a trial costs a subtransaction).
    data_text := data::text;
    bound := octet_length(pghub.encode(event_key, value)) + 8 + octet_length(data_text)
        + 5 * (length(data_text) - length(replace(data_text, '$', '')));
    IF bound <= 7999 THEN
        PERFORM pghub.notify(topic, event_key, value || jsonb_build_object('data', data));
    ELSE
        BEGIN
            PERFORM pghub.notify(topic, event_key, value || jsonb_build_object('data', data));
        EXCEPTION WHEN program_limit_exceeded THEN
            PERFORM pghub.notify(topic, event_key, value || '{"data_omitted": true}'::jsonb);
        END;
    END IF;
    RETURN NULL;
END;
$$;

COMMENT ON FUNCTION pghub.row_trigger() IS
'Trigger: AFTER INSERT OR UPDATE OR DELETE ... FOR EACH ROW EXECUTE FUNCTION '
'pghub.row_trigger([''+data'', ] ''topic'' [, key column ...]). One event per row: '
'key = the row key (default: primary key), value = {"op": "ins"|"upd"|"del", "table": '
'"schema.table", "seq": number of the event in its transaction}, plus "old_key" when an UPDATE '
'changed the key, plus "data" (the row) with ''+data'', or "data_omitted": true when the row '
'does not fit in 7999 bytes. AFTER TRUNCATE FOR EACH STATEMENT: op "tru", no key. Errors: '
'39P01 misuse, 42703 a named key column that does not exist, and those of pghub.key_columns.';

CREATE OR REPLACE FUNCTION pghub.statement_trigger()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    topic text := TG_ARGV[0];
    tbl text := format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME);
    key_cols name[];
    arity integer;
    new_name name;
    old_name name;
    selected text;
    source text;
    header jsonb;
    chunk_key bigint[];
    chunk_count bigint;
    chunk_total bigint;
    chunk_part bigint;
    chunk_parts bigint;
    seq bigint := coalesce(nullif(pg_catalog.current_setting('pghub.seq', true), ''), '0')::bigint;
BEGIN
    IF TG_WHEN <> 'AFTER' OR TG_LEVEL <> 'STATEMENT' OR TG_NARGS < 1 THEN
        RAISE EXCEPTION 'pghub.statement_trigger must run AFTER ... FOR EACH STATEMENT, '
            'with the topic as first argument'
            USING ERRCODE = '39P01';
    END IF;
    -- "seq" numbers the events of a transaction, as in pghub.row_trigger.
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_catalog.set_config('pghub.seq', (seq + 1)::text, true);
        PERFORM pghub.notify(topic, NULL::bigint[],
            jsonb_build_object('op', 'tru', 'table', tbl, 'seq', seq + 1));
        RETURN NULL;
    END IF;
    key_cols := pghub.key_columns(TG_RELID::regclass, TG_ARGV[1:TG_NARGS - 1]);
    arity := cardinality(key_cols);

    -- The transition tables' names, whatever the CREATE TRIGGER called them.
    SELECT t.tgnewtable, t.tgoldtable
    INTO new_name, old_name
    FROM pg_catalog.pg_trigger AS t
    WHERE t.tgrelid = TG_RELID AND t.tgname = TG_NAME;
    IF (TG_OP IN ('INSERT', 'UPDATE') AND new_name IS NULL)
        OR (TG_OP IN ('UPDATE', 'DELETE') AND old_name IS NULL) THEN
        RAISE EXCEPTION 'pghub.statement_trigger on % needs its transition table(s) for %',
            tbl, TG_OP
            USING ERRCODE = '39P01',
                  HINT = 'Create one trigger per event with REFERENCING NEW TABLE AS n '
                      '(INSERT), OLD TABLE AS o NEW TABLE AS n (UPDATE), OLD TABLE AS o (DELETE).';
    END IF;

    SELECT 'SELECT DISTINCT ' || string_agg(format('%I::bigint AS k%s', c, n), ', ' ORDER BY n)
           || ' FROM '
    INTO selected
    FROM unnest(key_cols) WITH ORDINALITY AS u (c, n);
    source := CASE TG_OP
        WHEN 'INSERT' THEN selected || quote_ident(new_name)
        WHEN 'DELETE' THEN selected || quote_ident(old_name)
        ELSE selected || quote_ident(old_name) || ' UNION ' || selected || quote_ident(new_name)
    END;
    header := jsonb_build_object('op', lower(left(TG_OP, 3)), 'table', tbl, 'arity', arity);

    -- One pass: a running sum of each key's text width (digits plus its commas) cuts the sorted
    -- keys into chunks. The budget is what 7999 bytes leave after the header, whose numbers are
    -- sized as the total (none is larger; seq as the last one this statement can take), less one
    -- widest key (21 bytes a column) so that a key that straddles a boundary still fits.
    FOR chunk_key, chunk_count, chunk_total, chunk_part, chunk_parts IN EXECUTE format(
        $q$
        WITH keys AS MATERIALIZED (%1$s),
        budget AS MATERIALIZED (
            SELECT n.total,
                   8000 - %2$s * 21 - octet_length(pghub.encode(NULL::bigint[],
                       $1 || jsonb_build_object('count', n.total, 'total', n.total,
                           'part', n.total, 'parts', n.total, 'seq', $2 + n.total))) AS bytes
            FROM (SELECT count(*) AS total FROM keys) AS n
        ),
        ends AS (
            SELECT ARRAY[%3$s] AS k,
                   sum(%4$s + %2$s) OVER (ORDER BY %5$s ROWS UNBOUNDED PRECEDING) AS e
            FROM keys
        ),
        chunks AS (
            SELECT (ends.e - 1) / budget.bytes AS c, budget.total,
                   count(*) AS n,
                   array_agg(ends.k ORDER BY ends.e) AS ks
            FROM ends CROSS JOIN budget
            GROUP BY 1, 2
        )
        SELECT ARRAY(SELECT unnest(chunks.ks)) AS key, chunks.n, chunks.total,
               row_number() OVER (ORDER BY chunks.c) AS part, count(*) OVER () AS parts
        FROM chunks
        ORDER BY chunks.c
        $q$,
        source,
        arity,
        (SELECT string_agg(format('k%s', n), ', ') FROM generate_series(1, arity) AS n),
        (SELECT string_agg(format('octet_length(k%s::text)', n), ' + ')
         FROM generate_series(1, arity) AS n),
        (SELECT string_agg(format('k%s', n), ', ') FROM generate_series(1, arity) AS n)
    ) USING header, seq
    LOOP
        PERFORM pg_catalog.set_config('pghub.seq', (seq + chunk_part)::text, true);
        PERFORM pghub.notify(topic, chunk_key, header || jsonb_build_object(
            'count', chunk_count, 'total', chunk_total, 'part', chunk_part, 'parts', chunk_parts,
            'seq', seq + chunk_part));
    END LOOP;
    RETURN NULL;
END;
$$;

COMMENT ON FUNCTION pghub.statement_trigger() IS
'Trigger: AFTER INSERT, UPDATE or DELETE (one trigger per event, REFERENCING its transition '
'tables) FOR EACH STATEMENT EXECUTE FUNCTION pghub.statement_trigger(''topic'' [, key column '
'...]). Sends the distinct keys of the affected rows (an UPDATE: old and new keys), sorted and '
'flattened column by column, in as few events as fit in 7999 bytes each; value = {"op", '
'"table", "arity", "count": keys in this event, "total": keys of the statement, "part", '
'"parts", "seq": number of the event in its transaction}. Nothing for a statement that touched '
'no row. AFTER TRUNCATE: op "tru", no key. Errors: 39P01 misuse (no transition table), and '
'those of pghub.key_columns.';

CREATE OR REPLACE FUNCTION pghub.unpublish_table(tbl regclass)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    trigger_name name;
    dropped integer := 0;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'pghub: the table must not be NULL' USING ERRCODE = '22004';
    END IF;
    -- Every trigger of this table that runs a pghub trigger function, however it was created;
    -- clones on partitions go with their parent.
    FOR trigger_name IN
        SELECT t.tgname
        FROM pg_catalog.pg_trigger AS t
        WHERE t.tgrelid = tbl
            AND t.tgparentid = 0
            AND t.tgfoid IN ('pghub.row_trigger()'::regprocedure,
                             'pghub.statement_trigger()'::regprocedure)
        ORDER BY t.tgname
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trigger_name, tbl);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END;
$$;

COMMENT ON FUNCTION pghub.unpublish_table(regclass) IS
'Drops every trigger of the table that runs pghub.row_trigger or pghub.statement_trigger and '
'returns how many it dropped (0 when the table was not published). Error: 22004 NULL table.';

CREATE OR REPLACE FUNCTION pghub.publish_table(
    tbl regclass,
    topic text DEFAULT NULL,
    level text DEFAULT 'statement',
    key_columns text[] DEFAULT NULL,
    with_data boolean DEFAULT FALSE
)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel record;
    channel text;
    cols name[];
    args text;
    fn text;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'pghub: the table must not be NULL' USING ERRCODE = '22004';
    END IF;
    SELECT c.relname, c.relkind INTO rel FROM pg_catalog.pg_class AS c WHERE c.oid = tbl;
    IF rel.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'pghub: % is not a table (relkind %)', tbl, rel.relkind
            USING ERRCODE = '42809';
    END IF;
    topic := coalesce(topic, rel.relname);
    channel := pghub.channel(topic);
    IF level IS NULL OR level NOT IN ('row', 'statement') THEN
        RAISE EXCEPTION 'pghub: level must be ''row'' or ''statement'', not %',
            coalesce(quote_literal(level), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF with_data IS NULL OR (with_data AND level = 'statement') THEN
        RAISE EXCEPTION 'pghub: with_data => true needs level => ''row'''
            USING ERRCODE = '22023';
    END IF;
    cols := pghub.key_columns(tbl, key_columns);

    PERFORM pghub.unpublish_table(tbl);
    -- The '+data' option goes before the topic, never among the key columns: a key column may
    -- have any name, '+data' included.
    SELECT string_agg(quote_literal(a), ', ' ORDER BY n)
    INTO args
    FROM unnest(CASE WHEN with_data THEN ARRAY['+data'] ELSE '{}'::text[] END
                || ARRAY[topic] || cols::text[])
        WITH ORDINALITY AS u (a, n);
    IF level = 'row' THEN
        fn := 'pghub.row_trigger';
        EXECUTE format('CREATE TRIGGER pghub_row AFTER INSERT OR UPDATE OR DELETE ON %s '
            'FOR EACH ROW EXECUTE FUNCTION %s(%s)', tbl, fn, args);
    ELSE
        fn := 'pghub.statement_trigger';
        EXECUTE format('CREATE TRIGGER pghub_ins AFTER INSERT ON %s REFERENCING NEW TABLE AS '
            'pghub_new FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)', tbl, fn, args);
        EXECUTE format('CREATE TRIGGER pghub_upd AFTER UPDATE ON %s REFERENCING OLD TABLE AS '
            'pghub_old NEW TABLE AS pghub_new FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)',
            tbl, fn, args);
        EXECUTE format('CREATE TRIGGER pghub_del AFTER DELETE ON %s REFERENCING OLD TABLE AS '
            'pghub_old FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)', tbl, fn, args);
    END IF;
    EXECUTE format('CREATE TRIGGER pghub_tru AFTER TRUNCATE ON %s FOR EACH STATEMENT '
        'EXECUTE FUNCTION %s(%s)', tbl, fn, quote_literal(topic));
    RETURN channel;
END;
$$;

COMMENT ON FUNCTION pghub.publish_table(regclass, text, text, text[], boolean) IS
'Publishes a table''s changes on a topic (default: the table name) and returns its channel. '
'level ''statement'' (default): pghub.statement_trigger per INSERT, UPDATE, DELETE; ''row'': '
'pghub.row_trigger, with the row data when with_data. TRUNCATE in both. key_columns default to the '
'primary key. Replaces the table''s pghub triggers (idempotent). Errors: 22004 NULL table, 42809 '
'not a table, 22023 bad topic, level or with_data, and those of pghub.key_columns.';

GRANT EXECUTE ON FUNCTION pghub.key_columns(regclass, text[]) TO public;
GRANT EXECUTE ON FUNCTION pghub.row_trigger() TO public;
GRANT EXECUTE ON FUNCTION pghub.statement_trigger() TO public;
GRANT EXECUTE ON FUNCTION pghub.unpublish_table(regclass) TO public;
GRANT EXECUTE ON FUNCTION pghub.publish_table(regclass, text, text, text[], boolean) TO public;
