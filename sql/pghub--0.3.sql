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
-- - every function runs with its caller's rights, but four durable-topic functions that are
--   SECURITY DEFINER, each with its reason above it (_journal, _sync_marker, tick, prune).
-- The script itself runs with the same path, and makes schema pghub itself: under CREATE
-- EXTENSION (the control file names pg_catalog as the extension's schema) the schema is then
-- owned by the bootstrap superuser, not by the role that ran CREATE EXTENSION, and a schema
-- pghub that some role made beforehand is refused instead of used.
SET LOCAL search_path = pg_catalog, pg_temp;

-- ==== House style ====
-- Errors: ERRCODE by condition name; each SQLSTATE and when it is raised is in docs/sql.md.
-- Messages: the codec's (channel, encode, decode, notify) are worded as the Python codec words
-- them ('invalid topic ...', 'invalid key: ...', 'invalid payload at byte N: ...', 'payload too
-- large: ...'), so that both sides report a fault alike; every other message starts 'pghub: '.
-- Types by name (regtype, regclass), never by OID. A function body ends with a bare END.

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

-- pghub.notify is defined at the end of this script, under "Durable topics": for a durable topic
-- it appends the event to the journal as well, so it needs the functions defined there.

GRANT EXECUTE ON FUNCTION
pghub.version(),
pghub._topic_fault(text),
pghub.channel(text),
pghub.encode(bigint[], jsonb),
pghub._payload_fault(text),
pghub.decode(text)
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
    -- Key columns are integers: smallint, integer, bigint, or a domain over one of them.
    integral CONSTANT oid[] := '{int2,int4,int8}'::regtype[]::oid[];
    resolved name[];
    all_good boolean;
    bad record;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'pghub: the table must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- The common case in one indexed catalog query; the diagnosis below runs only on failure.
    IF columns IS NULL OR cardinality(columns) = 0 THEN
        SELECT array_agg(a.attname ORDER BY k.n),
               bool_and(coalesce(nullif(t.typbasetype, 0), t.oid) = ANY (integral))
        INTO resolved, all_good
        FROM pg_catalog.pg_index AS i
        CROSS JOIN LATERAL unnest(i.indkey::smallint[]) WITH ORDINALITY AS k (attnum, n)
        INNER JOIN pg_catalog.pg_attribute AS a
            ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        INNER JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
        WHERE i.indrelid = tbl AND i.indisprimary;
        IF resolved IS NULL THEN
            RAISE EXCEPTION 'pghub: table % has no primary key and no key columns were given', tbl
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Add a primary key or name integer key columns.';
        END IF;
    ELSE
        SELECT array_agg(a.attname ORDER BY u.n),
               bool_and(coalesce(coalesce(nullif(t.typbasetype, 0), t.oid) = ANY (integral)
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
           coalesce(nullif(t.typbasetype, 0), t.oid) = ANY (integral) AS is_integral,
           a.attnotnull AS notnull,
           count(*) OVER (PARTITION BY u.col) AS times
    INTO bad
    FROM unnest(coalesce(nullif(columns, '{}'), resolved::text[])) WITH ORDINALITY AS u (col, n)
    LEFT JOIN pg_catalog.pg_attribute AS a
        ON a.attrelid = tbl AND a.attname = u.col AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
    ORDER BY a.attname IS NULL DESC,
             coalesce(nullif(t.typbasetype, 0), t.oid) = ANY (integral) ASC,
             count(*) OVER (PARTITION BY u.col) DESC,
             a.attnotnull ASC,
             u.n
    LIMIT 1;
    IF bad.missing THEN
        RAISE EXCEPTION 'pghub: key column "%" (number %) does not exist in table %',
            bad.col, bad.n, tbl
            USING ERRCODE = 'undefined_column';
    ELSIF NOT bad.is_integral THEN
        RAISE EXCEPTION 'pghub: key column "%" of table % is of type %, %',
            bad.col, tbl, bad.typ::regtype, 'not smallint, integer or bigint'
            USING ERRCODE = 'datatype_mismatch';
    ELSIF bad.times > 1 THEN
        RAISE EXCEPTION 'pghub: key column "%" of table % is named more than once', bad.col, tbl
            USING ERRCODE = 'duplicate_column';
    END IF;
    RAISE EXCEPTION 'pghub: key column "%" of table % can be NULL', bad.col, tbl
        USING ERRCODE = 'object_not_in_prerequisite_state',
              HINT = 'A key element cannot be NULL: declare the column NOT NULL.';
END
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
    -- No initial values: each costs every call, the plain path's too. Those of the full path
    -- are set where it starts.
    first integer;  -- TG_ARGV index of the topic: options come before it
    topic text;
    tbl text;
    columns text[];
    with_data boolean;
    key_cols name[];
    col name;
    arg text;  -- a key column of the plain path, as TG_ARGV gives it
    new_row jsonb;
    old_row jsonb;
    new_key bigint[];
    old_key bigint[];
    event_key bigint[];
    data jsonb;
    value jsonb;
    data_text text;
    bound integer;
    seq bigint;
    moved boolean;  -- an UPDATE that changed the key: the value has "old_key"
    ch text;
    payload text;
    done boolean;
BEGIN
    -- The plain path: a trigger as publish_table writes it without row data (no option, the
    -- topic, then the key columns), AFTER, for a row. Every PL/pgSQL statement costs a row
    -- some tenths of a microsecond, and a call of a function with a search_path of its own
    -- (pghub.encode) several, so this path is short: NEW and OLD through to_jsonb (NULL where
    -- the event has no such row), the key read from it as the full path reads it, and the
    -- payload pghub.notify would send written here as text: pghub.encode's bytes for the value
    -- {"op", "seq", "table"[, "old_key"]}, its members in jsonb's order, the table's name
    -- through to_json (jsonb's own string escaper) with '$' as \u0024, keys as decimal bigints
    -- (tests/python/test_statement_plain_path.py holds the two paths to the same bytes). A key
    -- column missing or NULL takes the full path below, which raises as before; a durable topic
    -- (its view exists) or a payload over 7999 bytes goes to pghub.notify, which journals or
    -- raises. pghub.channel checks the topic, as pghub.notify does.
    IF TG_LEVEL = 'ROW' AND TG_WHEN = 'AFTER' AND TG_NARGS > 1 AND left(TG_ARGV[0], 1) <> '+' THEN
        new_row := to_jsonb(NEW);
        old_row := to_jsonb(OLD);
        FOREACH arg IN ARRAY TG_ARGV[1:TG_NARGS - 1] LOOP  -- NULL || x is {x}
            EXIT WHEN NOT coalesce(new_row, old_row) ? arg;
            new_key := new_key || (new_row ->> arg)::bigint;
            old_key := old_key || (old_row ->> arg)::bigint;
        END LOOP;
        event_key := CASE WHEN new_row IS NULL THEN old_key ELSE new_key END;
        moved := old_row IS NOT NULL AND new_row IS NOT NULL AND old_key <> new_key;
        IF cardinality(event_key) = TG_NARGS - 1 AND array_position(event_key, NULL) IS NULL
            AND (NOT moved OR array_position(old_key, NULL) IS NULL) THEN
            seq := pg_catalog.set_config('pghub.seq', (coalesce(nullif(
                pg_catalog.current_setting('pghub.seq', true), ''), '0')::bigint + 1)::text,
                true)::bigint;
            ch := pghub.channel(TG_ARGV[0]);
            payload := 'e' || array_to_string(event_key, ',') || ':{"op":"'
                || lower(left(TG_OP, 3)) || '","seq":' || seq || ',"table":'
                || replace(to_json(format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME))::text, '$',
                    E'\\u0024')
                || CASE WHEN moved THEN ',"old_key":[' || array_to_string(old_key, ',') || ']}'
                    ELSE '}' END;
            IF octet_length(payload) <= 7999 AND to_regclass('pghub."' || ch || '"') IS NULL THEN
                -- An assignment, not PERFORM: PERFORM runs a query (about 2 µs more).
                done := pg_notify(ch, payload) IS NULL;
                RETURN NULL;
            END IF;
            value := jsonb_build_object('op', lower(left(TG_OP, 3)), 'table',
                format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME), 'seq', seq);
            IF moved THEN
                value := value || jsonb_build_object('old_key', to_jsonb(old_key));
            END IF;
            PERFORM pghub.notify(TG_ARGV[0], event_key, value);
            RETURN NULL;
        END IF;
    END IF;
    -- The full path: options, the primary key looked up, row data, every check.
    first := 0;
    with_data := false;
    new_key := '{}'::bigint[];
    old_key := '{}'::bigint[];
    tbl := format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME);
    -- Options, each starting with '+' (which no topic has), come before the topic; every
    -- argument after the topic is a key column, whatever its name ('+data' included).
    WHILE first < TG_NARGS AND left(TG_ARGV[first], 1) = '+' LOOP
        IF TG_ARGV[first] <> '+data' THEN
            RAISE EXCEPTION 'pghub: row_trigger has no option %', quote_literal(TG_ARGV[first])
                USING ERRCODE = 'trigger_protocol_violated',
                    HINT = 'The only option is ''+data'', before the topic.';
        END IF;
        with_data := true;
        first := first + 1;
    END LOOP;
    IF TG_WHEN <> 'AFTER' OR first >= TG_NARGS THEN
        RAISE EXCEPTION 'pghub: row_trigger must run AFTER, with the topic as argument '
            '(after the options, if any)'
            USING ERRCODE = 'trigger_protocol_violated';
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
        RAISE EXCEPTION 'pghub: row_trigger runs FOR EACH ROW (or AFTER TRUNCATE), %',
            format('not for %s statements', TG_OP)
            USING ERRCODE = 'trigger_protocol_violated';
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
                    USING ERRCODE = 'undefined_column',
                        HINT = 'Options such as ''+data'' go before the topic: '
                            'pghub.row_trigger(''+data'', ''topic'', key columns...).';
            END IF;
            RAISE EXCEPTION 'pghub: key column "%" does not exist in table %', col, tbl
                USING ERRCODE = 'undefined_column';
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
    ELSIF to_regclass(format('pghub.%I', pghub.channel(topic))) IS NOT NULL THEN
        -- A durable topic (its view exists, as pghub.notify checks) journals the row whole;
        -- listeners of its channel get the stand-in without data if the row does not fit.
        PERFORM pghub._journal(pghub.channel(topic), event_key,
            value || jsonb_build_object('data', data), value || '{"data_omitted": true}'::jsonb);
    ELSE
        BEGIN
            PERFORM pghub.notify(topic, event_key, value || jsonb_build_object('data', data));
        EXCEPTION WHEN program_limit_exceeded THEN
            PERFORM pghub.notify(topic, event_key, value || '{"data_omitted": true}'::jsonb);
        END;
    END IF;
    RETURN NULL;
END
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
    -- No initial values: each costs every call (pghub.row_trigger).
    first integer;  -- TG_ARGV index of the topic: the option '+checked' comes before it
    topic text;
    tbl text;
    key_cols name[];
    arity integer;
    new_name name;
    old_name name;
    one_row jsonb;
    other_row jsonb;
    many boolean;
    one_key bigint[];
    other_key bigint[];
    col text;
    selected text;
    source text;
    header jsonb;
    chunk_value jsonb;
    chunk_key bigint[];
    chunk_count bigint;
    chunk_total bigint;
    chunk_part bigint;
    chunk_parts bigint;
    ch text;
    done boolean;
    seq bigint;
BEGIN
    -- The plain path. '+checked' (written by publish_table): the key columns were checked when
    -- the trigger was made and the transition tables are pghub_new and pghub_old, so a
    -- statement that changed one row (an UPDATE: one old and one new row, as many old as new
    -- rows) is published without a catalog query or dynamic SQL. The row is read by static SQL
    -- (cached plans; '+checked' fixes the names), the first row and whether a second exists in
    -- one query (n.* and o.*: the whole row even when a column is called n or o), and its key
    -- through to_jsonb, as pghub.row_trigger does. The event is the one the set-based path
    -- below would make, its payload written as text as pghub.row_trigger writes its own (the
    -- members in jsonb's order; one or two keys of at most 64 columns and a table's name always
    -- fit in 7999 bytes); pghub.channel checks the topic; a durable topic goes to pghub.notify.
    -- A key value that is not an integer number (a column renamed, dropped or retyped since
    -- publish_table) leaves this path: the set-based path checks the columns again and raises;
    -- so do statements of several rows, and triggers without '+checked' (an older
    -- publish_table's, or written by hand), which look both up.
    -- A transition table hides a table of the same name, but a trigger's arguments are its
    -- owner's to write: should a forged '+checked' name no transition table, the names must
    -- not reach a temporary table of the session that writes. Sessions without a temporary
    -- schema (most) pay one function call for this.
    IF TG_NARGS BETWEEN 3 AND 66 AND TG_ARGV[0] = '+checked' AND TG_WHEN = 'AFTER'
        AND TG_LEVEL = 'STATEMENT' AND TG_OP <> 'TRUNCATE'
        AND (pg_catalog.pg_my_temp_schema() = 0::oid
            OR (pg_catalog.to_regclass('pg_temp.pghub_new') IS NULL
                AND pg_catalog.to_regclass('pg_temp.pghub_old') IS NULL)) THEN
        IF TG_OP = 'INSERT' THEN
            SELECT to_jsonb(n.*), EXISTS (SELECT FROM pghub_new OFFSET 1)
            INTO one_row, many
            FROM pghub_new AS n;
        ELSIF TG_OP = 'DELETE' THEN
            SELECT to_jsonb(o.*), EXISTS (SELECT FROM pghub_old OFFSET 1)
            INTO one_row, many
            FROM pghub_old AS o;
        ELSE  -- the new row, the old one (one, if the new is alone) and whether there are more
            SELECT to_jsonb(n.*), (SELECT to_jsonb(o.*) FROM pghub_old AS o LIMIT 1),
                EXISTS (SELECT FROM pghub_new OFFSET 1)
            INTO one_row, other_row, many
            FROM pghub_new AS n;
        END IF;
        IF NOT many THEN  -- NULL when there is no row
            -- Each key value if it is an integer number of at most 19 digits, else NULL (a
            -- missing column, text, a fraction). jsonb prints a number as numeric does: digits,
            -- maybe a '-' and a '.', never an exponent. No regular expression: a counted
            -- repetition costs microseconds. NULL || x is {x}.
            FOREACH col IN ARRAY TG_ARGV[2:TG_NARGS - 1] LOOP
                one_key := one_key || CASE WHEN jsonb_typeof(one_row -> col) = 'number'
                    AND strpos(one_row ->> col, '.') = 0
                    AND octet_length(ltrim(one_row ->> col, '-')) <= 19
                    THEN (one_row ->> col)::bigint END;
                other_key := other_key || CASE WHEN jsonb_typeof(other_row -> col) = 'number'
                    AND strpos(other_row ->> col, '.') = 0
                    AND octet_length(ltrim(other_row ->> col, '-')) <= 19
                    THEN (other_row ->> col)::bigint END;
            END LOOP;
            IF array_position(one_key, NULL) IS NULL
                AND (other_row IS NULL OR array_position(other_key, NULL) IS NULL) THEN
                chunk_count := 1;
                IF other_row IS NOT NULL AND other_key <> one_key THEN
                    -- Two keys, sorted as the set-based path sorts them (column by column).
                    one_key := CASE WHEN other_key < one_key THEN other_key || one_key
                        ELSE one_key || other_key END;
                    chunk_count := 2;
                END IF;
                -- "seq" numbers the events of a transaction, as in pghub.row_trigger.
                seq := pg_catalog.set_config('pghub.seq', (coalesce(nullif(
                    pg_catalog.current_setting('pghub.seq', true), ''), '0')::bigint + 1)::text,
                    true)::bigint;
                ch := pghub.channel(TG_ARGV[1]);
                IF to_regclass('pghub."' || ch || '"') IS NULL THEN
                    -- An assignment, not PERFORM: PERFORM runs a query (about 2 µs more).
                    done := pg_notify(ch, 'e' || array_to_string(one_key, ',') || ':{"op":"'
                        || lower(left(TG_OP, 3)) || '","seq":' || seq || ',"part":1,"arity":'
                        || (TG_NARGS - 2) || ',"count":' || chunk_count || ',"parts":1,"table":'
                        || replace(to_json(format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME))::text,
                            '$', E'\\u0024')
                        || ',"total":' || chunk_count || '}') IS NULL;
                    RETURN NULL;
                END IF;
                -- The value in a variable, not an expression in the call: pghub.notify (SQL) is
                -- inlined only when its arguments are cheap; not inlined it costs about 10 µs
                -- more.
                header := jsonb_build_object('op', lower(left(TG_OP, 3)),
                    'table', format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME),
                    'arity', TG_NARGS - 2, 'count', chunk_count, 'total', chunk_count, 'part', 1,
                    'parts', 1, 'seq', seq);
                PERFORM pghub.notify(TG_ARGV[1], one_key, header);
                RETURN NULL;
            END IF;
        ELSIF many IS NULL THEN
            RETURN NULL;  -- no row: no event, as below
        END IF;
    END IF;

    -- The set-based path.
    first := CASE WHEN TG_NARGS > 1 AND TG_ARGV[0] = '+checked' THEN 1 ELSE 0 END;
    IF TG_WHEN <> 'AFTER' OR TG_LEVEL <> 'STATEMENT' OR TG_NARGS <= first THEN
        RAISE EXCEPTION 'pghub: statement_trigger must run AFTER ... FOR EACH STATEMENT, '
            'with the topic as first argument (after ''+checked'', if given)'
            USING ERRCODE = 'trigger_protocol_violated';
    END IF;
    topic := TG_ARGV[first];
    tbl := format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME);
    seq := coalesce(nullif(pg_catalog.current_setting('pghub.seq', true), ''), '0')::bigint;
    -- "seq" numbers the events of a transaction, as in pghub.row_trigger.
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_catalog.set_config('pghub.seq', (seq + 1)::text, true);
        PERFORM pghub.notify(topic, NULL::bigint[],
            jsonb_build_object('op', 'tru', 'table', tbl, 'seq', seq + 1));
        RETURN NULL;
    END IF;

    key_cols := pghub.key_columns(TG_RELID::regclass, TG_ARGV[first + 1:TG_NARGS - 1]);
    arity := cardinality(key_cols);

    -- The transition tables' names, whatever the CREATE TRIGGER called them.
    SELECT t.tgnewtable, t.tgoldtable
    INTO new_name, old_name
    FROM pg_catalog.pg_trigger AS t
    WHERE t.tgrelid = TG_RELID AND t.tgname = TG_NAME;
    IF (TG_OP IN ('INSERT', 'UPDATE') AND new_name IS NULL)
        OR (TG_OP IN ('UPDATE', 'DELETE') AND old_name IS NULL) THEN
        RAISE EXCEPTION 'pghub: statement_trigger on % needs its transition table(s) for %',
            tbl, TG_OP
            USING ERRCODE = 'trigger_protocol_violated',
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
        chunk_value := header || jsonb_build_object(
            'count', chunk_count, 'total', chunk_total, 'part', chunk_part, 'parts', chunk_parts,
            'seq', seq + chunk_part);
        PERFORM pghub.notify(topic, chunk_key, chunk_value);
    END LOOP;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION pghub.statement_trigger() IS
'Trigger: AFTER INSERT, UPDATE or DELETE (one trigger per event, REFERENCING its transition '
'tables) FOR EACH STATEMENT EXECUTE FUNCTION pghub.statement_trigger(''topic'' [, key column '
'...]), or pghub.statement_trigger(''+checked'', ''topic'', key column ...) as publish_table '
'writes it (transition tables pghub_new and pghub_old, columns checked, a plain path for a '
'one-row statement). Sends the distinct keys of the affected rows (an UPDATE: old and new keys), '
'sorted and flattened column by column, in as few events as fit in 7999 bytes each; value = '
'{"op", "table", "arity", "count": keys in this event, "total": keys of the statement, "part", '
'"parts", "seq": number of the event in its transaction}. Nothing for a statement that touched '
'no row. AFTER TRUNCATE: op "tru", no key. Errors: 39P01 misuse (no transition table), and those '
'of pghub.key_columns.';

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
        RAISE EXCEPTION 'pghub: the table must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
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
END
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
        RAISE EXCEPTION 'pghub: the table must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT c.relname, c.relkind INTO rel FROM pg_catalog.pg_class AS c WHERE c.oid = tbl;
    IF rel.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'pghub: % is not a table (relkind %)', tbl, rel.relkind
            USING ERRCODE = 'wrong_object_type';
    END IF;
    topic := coalesce(topic, rel.relname);
    channel := pghub.channel(topic);
    IF level IS NULL OR level NOT IN ('row', 'statement') THEN
        RAISE EXCEPTION 'pghub: level must be ''row'' or ''statement'', not %',
            coalesce(quote_literal(level), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF with_data IS NULL OR (with_data AND level = 'statement') THEN
        RAISE EXCEPTION 'pghub: with_data => true needs level => ''row'''
            USING ERRCODE = 'invalid_parameter_value';
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
        -- '+checked': the columns were checked just above and the transition tables are named
        -- pghub_new and pghub_old, so the trigger need not look either up each statement.
        args := quote_literal('+checked') || ', ' || args;
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
END
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

-- ==== Durable topics (docs/durable.md) ====
-- A durable topic keeps a journal: pghub.notify and the publishing triggers also append each of
-- its events to it, in the writer's transaction, so that the event exists exactly when that
-- transaction commits. Consumers read the journal by transaction snapshots, as PgQ does: a
-- position is a snapshot (pg_snapshot); the events after it are those whose transaction is
-- visible in a later snapshot and was not visible in it. Plain topics are untouched.
--
-- Layout, in schema pghub:
-- - durable$topic: one row a durable topic (its owner, retention and wake mode);
-- - journal$0 .. journal$7: the events of every durable topic. Writers append to the current
--   one (the value of sequence journal$gen, modulo 8); prune() empties old ones with TRUNCATE
--   and rotates, so no journal row is ever updated or deleted (no bloat, nothing to vacuum);
-- - a view named after each durable topic's channel (pghub.orders): its existence is what
--   makes pghub.notify journal the topic, a catalog lookup that every session caches. Every
--   other relation of schema pghub has a $ in its name, which no channel has.
-- SECURITY DEFINER, each for a reason written above it (docs/security.md): _journal (writing
-- the journal), _sync_marker (the views), tick() and prune().
-- SQLSTATEs (docs/sql.md): 22023 bad topic or argument, 22004 NULL argument, 22P02 bad
-- position, 42501 not allowed, 55000 topic not durable, 42704 no such consumer, 0A000 read
-- outside READ COMMITTED, 54000 stand-in over 7999 bytes, and what pghub.encode raises.

-- A position in a topic's stream, as pghub.read hands it out:
--   <snapshot>                         every transaction visible in it has been read;
--   <prev>/<cur>/<txid>.<id>           in the middle of the batch of transactions visible in
--                                      cur and not in prev: read up to event (txid, id);
--   earliest                           nothing read yet (the snapshot 1:1:).
-- A snapshot is pg_snapshot's text, xmin:xmax:xip,...
CREATE OR REPLACE FUNCTION pghub._position(
    pos text,
    OUT prev pg_snapshot,
    OUT cur pg_snapshot,
    OUT last_txid xid8,
    OUT last_id bigint
)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parts text[];
BEGIN
    IF pos IS NULL THEN
        RAISE EXCEPTION 'pghub: a position must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF pos = 'earliest' THEN
        prev := '1:1:'::pg_snapshot;
        RETURN;
    END IF;
    -- Numbers short enough for their types (no 22003): what is left for the casts to refuse
    -- (xmin after xmax, xip out of order) they refuse with 22P02 too. No exception block: it
    -- would cost a subtransaction a read.
    IF pos !~ ('^[0-9]{1,19}:[0-9]{1,19}:(?:[0-9]{1,19}(?:,[0-9]{1,19})*)?'
        '(?:/[0-9]{1,19}:[0-9]{1,19}:(?:[0-9]{1,19}(?:,[0-9]{1,19})*)?/[0-9]{1,19}[.][0-9]{1,18})?$')
        THEN
        RAISE EXCEPTION 'pghub: invalid position "%"', left(pos, 200)
            USING ERRCODE = 'invalid_text_representation',
                HINT = 'Use a position pghub.read returned, ''earliest'' or ''now''.';
    END IF;
    parts := string_to_array(pos, '/');
    prev := parts[1]::pg_snapshot;
    IF cardinality(parts) = 3 THEN
        cur := parts[2]::pg_snapshot;
        last_txid := split_part(parts[3], '.', 1)::xid8;
        last_id := split_part(parts[3], '.', 2)::bigint;
        IF pg_snapshot_xmax(cur) < pg_snapshot_xmax(prev) THEN
            RAISE EXCEPTION 'pghub: invalid position "%": its batch ends before it starts',
                left(pos, 200)
                USING ERRCODE = 'invalid_text_representation';
        END IF;
    END IF;
END
$$;

COMMENT ON FUNCTION pghub._position(text) IS
'Internal: parses a position (a snapshot, prev/cur/txid.id in the middle of a batch, or '
'earliest). Raises 22P02 for one that is not a position, 22004 for NULL.';

-- The topics, the named consumers' positions and the loss records, readable by every role (as
-- any role may LISTEN on any channel). Only the role that installed pghub may make topics
-- durable, and give that right on (GRANT INSERT, UPDATE, DELETE ON pghub.durable$topic); each
-- topic belongs to the role that made it durable, and row-level security lets only its members
-- change it. Every role may keep named consumers; each changes only its own.
CREATE TABLE IF NOT EXISTS pghub.durable$topic (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel text NOT NULL UNIQUE CHECK (channel ~ '^[a-z0-9_]{1,63}$'),
    retain interval NOT NULL CHECK (retain > interval '0'),
    wake text NOT NULL CHECK (wake IN ('commit', 'tick')),
    owner_role regrole NOT NULL DEFAULT current_user::regrole,
    made_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS pghub.durable$consumer (
    consumer text NOT NULL CHECK (length(consumer) BETWEEN 1 AND 200),
    topic integer NOT NULL REFERENCES pghub.durable$topic (id) ON DELETE CASCADE,
    owner_role regrole NOT NULL DEFAULT current_user::regrole,
    pos text NOT NULL CHECK ((pghub._position(pos)).prev IS NOT NULL),
    acked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic)
);

-- Events prune() removed, one row a topic and emptied table: what a consumer behind them is
-- told (GAP). removed_by is prune's transaction; every removed event's transaction is visible
-- in settled, prune's snapshot.
CREATE TABLE IF NOT EXISTS pghub.journal$gap (
    topic integer NOT NULL REFERENCES pghub.durable$topic (id) ON DELETE CASCADE,
    removed_by xid8 NOT NULL,
    settled pg_snapshot NOT NULL,
    min_txid xid8 NOT NULL,
    max_txid xid8 NOT NULL,
    events bigint NOT NULL,
    first_id bigint,
    last_id bigint,
    oldest_at timestamptz,
    newest_at timestamptz,
    removed_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS journal$gap$topic ON pghub.journal$gap (topic, max_txid);

-- The journal. announce says what the writer did about the event: n, NOTIFYed on its channel at
-- commit; w, too large for that: the stand-in (if any) NOTIFYed and a wake-up sent; t and o,
-- the same two for a topic in tick mode, left to pghub.tick(). stand_in is the payload plain
-- listeners get for an event that does not fit (a row trigger's "data_omitted" event).
DO $$
DECLARE
    slot integer;
BEGIN
    FOR slot IN 0..7 LOOP
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS pghub.%I (txid xid8 NOT NULL, id bigint NOT NULL, '
            'topic integer NOT NULL, announce "char" NOT NULL, payload text NOT NULL, '
            'stand_in text)', 'journal$' || slot);
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON pghub.%I (topic, txid, id)',
            'journal$' || slot || '$read', 'journal$' || slot);
    END LOOP;
END
$$;

CREATE OR REPLACE VIEW pghub.journal$all AS
SELECT
    j.txid,
    j.id,
    j.topic,
    j.announce,
    j.payload,
    j.stand_in
FROM pghub.journal$0 AS j
UNION ALL
SELECT
    j.txid,
    j.id,
    j.topic,
    j.announce,
    j.payload,
    j.stand_in
FROM pghub.journal$1 AS j
UNION ALL
SELECT
    j.txid,
    j.id,
    j.topic,
    j.announce,
    j.payload,
    j.stand_in
FROM pghub.journal$2 AS j
UNION ALL
SELECT
    j.txid,
    j.id,
    j.topic,
    j.announce,
    j.payload,
    j.stand_in
FROM pghub.journal$3 AS j
UNION ALL
SELECT
    j.txid,
    j.id,
    j.topic,
    j.announce,
    j.payload,
    j.stand_in
FROM pghub.journal$4 AS j
UNION ALL
SELECT
    j.txid,
    j.id,
    j.topic,
    j.announce,
    j.payload,
    j.stand_in
FROM pghub.journal$5 AS j
UNION ALL
SELECT
    j.txid,
    j.id,
    j.topic,
    j.announce,
    j.payload,
    j.stand_in
FROM pghub.journal$6 AS j
UNION ALL
SELECT
    j.txid,
    j.id,
    j.topic,
    j.announce,
    j.payload,
    j.stand_in
FROM pghub.journal$7 AS j;

-- Event ids (their order inside a transaction), and the journal's generation: writers append
-- to journal$<gen mod 8>. A sequence, read with pg_sequence_last_value, because a writer must
-- see a rotation at once, whatever its snapshot (a REPEATABLE READ writer would not see a row).
CREATE SEQUENCE IF NOT EXISTS pghub.journal$id AS bigint;
CREATE SEQUENCE IF NOT EXISTS pghub.journal$gen AS bigint MINVALUE 0 START WITH 0;

-- Each table's state: opened_at and closed_at, when it became and stopped being the current
-- one; ready, emptied since it was last current (only a ready table becomes current). A writer
-- that finds the generation changed while it appended (a rotation raced it) records when it
-- wrote into journal$late, so that prune() never takes its event for older than it is.
CREATE TABLE IF NOT EXISTS pghub.journal$slot (
    slot smallint PRIMARY KEY CHECK (slot BETWEEN 0 AND 7),
    opened_at timestamptz,
    closed_at timestamptz,
    ready boolean NOT NULL
);
CREATE TABLE IF NOT EXISTS pghub.journal$late (
    slot smallint NOT NULL,
    written_at timestamptz NOT NULL
);
-- One row each: the generation prune() last recorded, and where pghub.tick() has got to.
CREATE TABLE IF NOT EXISTS pghub.journal$prune (
    one boolean PRIMARY KEY DEFAULT TRUE CHECK (one),
    gen bigint NOT NULL,
    pruned_at timestamptz
);
CREATE TABLE IF NOT EXISTS pghub.journal$tick (
    one boolean PRIMARY KEY DEFAULT TRUE CHECK (one),
    pos text NOT NULL,
    ticked_at timestamptz
);

DO $$
BEGIN
    IF pg_sequence_last_value('pghub.journal$gen'::regclass) IS NULL THEN  -- a new install
        PERFORM setval('pghub.journal$gen'::regclass, 0, TRUE);
    END IF;
END
$$;
INSERT INTO pghub.journal$slot (slot, opened_at, ready)
SELECT
    s.slot,
    CASE WHEN s.slot = 0 THEN now() END AS opened_at,
    s.slot <> 0 AS ready
FROM generate_series(0, 7) AS s (slot)
ON CONFLICT (slot) DO NOTHING;
INSERT INTO pghub.journal$prune (gen) VALUES (0) ON CONFLICT (one) DO NOTHING;
INSERT INTO pghub.journal$tick (pos) VALUES ('earliest') ON CONFLICT (one) DO NOTHING;

ALTER TABLE pghub.durable$topic ENABLE ROW LEVEL SECURITY;
ALTER TABLE pghub.durable$consumer ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS everyone_reads ON pghub.durable$topic;
DROP POLICY IF EXISTS owner_writes ON pghub.durable$topic;
DROP POLICY IF EXISTS everyone_reads ON pghub.durable$consumer;
DROP POLICY IF EXISTS owner_writes ON pghub.durable$consumer;
CREATE POLICY everyone_reads ON pghub.durable$topic FOR SELECT USING (TRUE);
CREATE POLICY owner_writes ON pghub.durable$topic
USING (pg_has_role(owner_role, 'MEMBER')) WITH CHECK (pg_has_role(owner_role, 'MEMBER'));
CREATE POLICY everyone_reads ON pghub.durable$consumer FOR SELECT USING (TRUE);
CREATE POLICY owner_writes ON pghub.durable$consumer
USING (pg_has_role(owner_role, 'MEMBER')) WITH CHECK (pg_has_role(owner_role, 'MEMBER'));

REVOKE ALL ON pghub.durable$topic, pghub.durable$consumer, pghub.journal$gap, pghub.journal$0,
pghub.journal$1, pghub.journal$2, pghub.journal$3, pghub.journal$4, pghub.journal$5,
pghub.journal$6, pghub.journal$7, pghub.journal$all, pghub.journal$slot, pghub.journal$late,
pghub.journal$prune, pghub.journal$tick FROM public;
GRANT SELECT ON pghub.durable$topic, pghub.durable$consumer, pghub.journal$gap, pghub.journal$0,
pghub.journal$1, pghub.journal$2, pghub.journal$3, pghub.journal$4, pghub.journal$5,
pghub.journal$6, pghub.journal$7, pghub.journal$all, pghub.journal$slot, pghub.journal$tick
TO public;
GRANT INSERT, UPDATE, DELETE ON pghub.durable$consumer TO public;
-- The role that ran CREATE EXTENSION (the extension's owner) may make topics durable and grant
-- that on. On the script route the installing role owns the table and needs no grant.
DO $$
DECLARE
    installer regrole := (
        SELECT e.extowner::regrole FROM pg_catalog.pg_extension AS e WHERE e.extname = 'pghub'
    );
BEGIN
    IF installer IS NOT NULL THEN
        EXECUTE format('GRANT INSERT, UPDATE, DELETE ON pghub.durable$topic TO %s '
            'WITH GRANT OPTION', installer);
    END IF;
END
$$;

-- pg_dump keeps the topics (and their views, which are not part of the extension); the journal
-- and the consumers' positions name transactions of this cluster only (docs/durable.md).
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pghub') THEN
        PERFORM pg_catalog.pg_extension_config_dump('pghub.durable$topic', '');
        PERFORM pg_catalog.pg_extension_config_dump('pghub.durable$topic_id_seq', '');
    END IF;
END
$$;

-- The current snapshot, with this transaction's own xid (if it has one) as not yet visible:
-- a position taken inside a writing transaction must not count its own events as read.
CREATE OR REPLACE FUNCTION pghub._snapshot_now()
RETURNS pg_snapshot
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_snapshot pg_snapshot := pg_current_snapshot();
    own xid8 := pg_current_xact_id_if_assigned();
BEGIN
    IF own IS NULL OR own >= pg_snapshot_xmax(now_snapshot) THEN
        RETURN now_snapshot;
    END IF;
    RETURN (
        SELECT format('%s:%s:%s', least(pg_snapshot_xmin(now_snapshot), own),
            pg_snapshot_xmax(now_snapshot), string_agg(x.x::text, ',' ORDER BY x.x))::pg_snapshot
        FROM (SELECT pg_snapshot_xip(now_snapshot) UNION SELECT own) AS x (x)
    );
END
$$;

COMMENT ON FUNCTION pghub._snapshot_now() IS
'Internal: pg_current_snapshot() with the calling transaction''s own xid, if it has one, '
'counted as still running.';

-- SECURITY DEFINER: writers append to the journal without any privilege on it (no role but
-- the owner may write it, so that nothing but pghub's own events gets in). It does what
-- pghub.notify would do for the topic, nothing more: it takes only the event, runs no
-- dynamic SQL and no function of its caller, and its search_path is pinned.
CREATE OR REPLACE FUNCTION pghub._journal(
    topic_channel text, key bigint[], value jsonb, stand_in jsonb DEFAULT NULL
)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ch text := coalesce(pghub.channel(topic_channel), pghub._topic_fault(topic_channel));
    payload text := 'e';
    json text;
    null_at integer;
    fits boolean;
    shown text;
    announced "char";
    gen bigint;
BEGIN
    -- The payload pghub.encode writes, without its size limit: the same code, here rather than
    -- in a function of its own, which would cost a call an event (tests/python/test_durable.py
    -- holds the two to the same bytes).
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
        json := value::text;
        IF strpos(json, ': null') = 0 THEN
            json := json_strip_nulls(json::json)::text;
        ELSIF strpos(json, ':[null]') = 0 AND strpos(json, ': [null]') = 0 THEN
            json := replace(replace(
                json_strip_nulls(replace(json, ': null', ': [null]')::json)::text,
                ':[null]', ':null'
            ), ': [null]', ': null');
        ELSE
            json := regexp_replace(json, E'("(?:[^"\\\\]|\\\\.)*")| ', E'\\1', 'g');
        END IF;
        payload := payload || ':' || replace(json, '$', E'\\u0024');
    END IF;
    fits := octet_length(payload) <= 7999;
    IF NOT fits AND stand_in IS NOT NULL THEN
        shown := pghub.encode(key, stand_in);
    END IF;
    -- One statement looks the topic up and appends: each statement costs microseconds, an
    -- event is a few of them. The same INSERT once per journal table, on purpose: static SQL
    -- keeps a cached plan for each, where EXECUTE format() would parse and plan it on every
    -- event; a branch not taken costs nothing.
    gen := pg_sequence_last_value('pghub.journal$gen'::regclass);
    CASE gen % 8
        WHEN 0 THEN
            INSERT INTO pghub.journal$0 (txid, id, topic, announce, payload, stand_in)
            SELECT pg_current_xact_id(), nextval('pghub.journal$id'::regclass), d.id,
                CASE d.wake
                    WHEN 'commit' THEN CASE WHEN fits THEN 'n' ELSE 'w' END
                    ELSE CASE WHEN fits THEN 't' ELSE 'o' END
                END::"char", payload, shown
            FROM pghub.durable$topic AS d WHERE d.channel = ch
            RETURNING announce INTO announced;
        WHEN 1 THEN
            INSERT INTO pghub.journal$1 (txid, id, topic, announce, payload, stand_in)
            SELECT pg_current_xact_id(), nextval('pghub.journal$id'::regclass), d.id,
                CASE d.wake
                    WHEN 'commit' THEN CASE WHEN fits THEN 'n' ELSE 'w' END
                    ELSE CASE WHEN fits THEN 't' ELSE 'o' END
                END::"char", payload, shown
            FROM pghub.durable$topic AS d WHERE d.channel = ch
            RETURNING announce INTO announced;
        WHEN 2 THEN
            INSERT INTO pghub.journal$2 (txid, id, topic, announce, payload, stand_in)
            SELECT pg_current_xact_id(), nextval('pghub.journal$id'::regclass), d.id,
                CASE d.wake
                    WHEN 'commit' THEN CASE WHEN fits THEN 'n' ELSE 'w' END
                    ELSE CASE WHEN fits THEN 't' ELSE 'o' END
                END::"char", payload, shown
            FROM pghub.durable$topic AS d WHERE d.channel = ch
            RETURNING announce INTO announced;
        WHEN 3 THEN
            INSERT INTO pghub.journal$3 (txid, id, topic, announce, payload, stand_in)
            SELECT pg_current_xact_id(), nextval('pghub.journal$id'::regclass), d.id,
                CASE d.wake
                    WHEN 'commit' THEN CASE WHEN fits THEN 'n' ELSE 'w' END
                    ELSE CASE WHEN fits THEN 't' ELSE 'o' END
                END::"char", payload, shown
            FROM pghub.durable$topic AS d WHERE d.channel = ch
            RETURNING announce INTO announced;
        WHEN 4 THEN
            INSERT INTO pghub.journal$4 (txid, id, topic, announce, payload, stand_in)
            SELECT pg_current_xact_id(), nextval('pghub.journal$id'::regclass), d.id,
                CASE d.wake
                    WHEN 'commit' THEN CASE WHEN fits THEN 'n' ELSE 'w' END
                    ELSE CASE WHEN fits THEN 't' ELSE 'o' END
                END::"char", payload, shown
            FROM pghub.durable$topic AS d WHERE d.channel = ch
            RETURNING announce INTO announced;
        WHEN 5 THEN
            INSERT INTO pghub.journal$5 (txid, id, topic, announce, payload, stand_in)
            SELECT pg_current_xact_id(), nextval('pghub.journal$id'::regclass), d.id,
                CASE d.wake
                    WHEN 'commit' THEN CASE WHEN fits THEN 'n' ELSE 'w' END
                    ELSE CASE WHEN fits THEN 't' ELSE 'o' END
                END::"char", payload, shown
            FROM pghub.durable$topic AS d WHERE d.channel = ch
            RETURNING announce INTO announced;
        WHEN 6 THEN
            INSERT INTO pghub.journal$6 (txid, id, topic, announce, payload, stand_in)
            SELECT pg_current_xact_id(), nextval('pghub.journal$id'::regclass), d.id,
                CASE d.wake
                    WHEN 'commit' THEN CASE WHEN fits THEN 'n' ELSE 'w' END
                    ELSE CASE WHEN fits THEN 't' ELSE 'o' END
                END::"char", payload, shown
            FROM pghub.durable$topic AS d WHERE d.channel = ch
            RETURNING announce INTO announced;
        ELSE
            INSERT INTO pghub.journal$7 (txid, id, topic, announce, payload, stand_in)
            SELECT pg_current_xact_id(), nextval('pghub.journal$id'::regclass), d.id,
                CASE d.wake
                    WHEN 'commit' THEN CASE WHEN fits THEN 'n' ELSE 'w' END
                    ELSE CASE WHEN fits THEN 't' ELSE 'o' END
                END::"char", payload, shown
            FROM pghub.durable$topic AS d WHERE d.channel = ch
            RETURNING announce INTO announced;
    END CASE;
    IF announced IS NULL THEN
        -- Not durable (any more): what pghub.notify does for a plain topic.
        PERFORM pg_notify(ch, pghub.encode(key, value));
        RETURN;
    END IF;
    -- A rotation between reading the generation and appending: say when this table was
    -- written to, so that prune() does not take the event for as old as the table.
    IF pg_sequence_last_value('pghub.journal$gen'::regclass) <> gen THEN
        INSERT INTO pghub.journal$late (slot, written_at) VALUES (gen % 8, clock_timestamp());
    END IF;
    IF announced = 'n' THEN
        PERFORM pg_notify(ch, payload);  -- today's exact bytes: plain listeners see no change
    ELSIF announced = 'w' THEN
        IF shown IS NOT NULL THEN
            PERFORM pg_notify(ch, shown);
        END IF;
        PERFORM pg_notify('pghub:wake', ch);  -- durable consumers: read the journal
    END IF;
END
$$;

COMMENT ON FUNCTION pghub._journal(text, bigint[], jsonb, jsonb) IS
'Internal to pghub.notify and pghub.row_trigger (SECURITY DEFINER: writers need no privilege on '
'the journal): appends the event to the journal of a durable topic in the calling '
'transaction and, in commit mode, NOTIFYs it as pghub.notify would (a payload over 7999 bytes: '
'the stand-in, if given, on the topic''s channel, and the channel''s name on pghub:wake). On a '
'topic that is not durable it is pghub.notify. Raises what pghub.notify raises, and 54000 for '
'a stand-in over 7999 bytes.';

-- LANGUAGE sql: inlined into the calling query or PL/pgSQL expression (a trigger's PERFORM),
-- which saves a function call a row. For a plain topic it is pg_notify(channel, encode(key,
-- value)) as before; the one thing added is the lookup of the topic's view, pghub.<channel>,
-- that make_durable creates (to_regclass: a cached catalog lookup, about 0.4 microseconds,
-- docs/durable.md). The topic is checked first (the WHEN), then the key, the value and the size
-- (by encode): a refused event sends nothing. coalesce reaches pghub._topic_fault only for a
-- NULL topic; once the topic is known good, lower(topic COLLATE "C") is its channel.
-- The planner simplifies both arms of a CASE whatever the condition: given constant arguments
-- it would run encode while planning and refuse an event over 7999 bytes that the durable arm
-- journals. The always-true test on pg_backend_pid() (STABLE, so never folded) keeps encode's
-- value unknown until the arm runs.
-- No SET search_path, as for pghub.channel: every name is qualified and every call takes
-- exactly the argument types given.
CREATE OR REPLACE FUNCTION pghub.notify(
    topic text, key bigint[] DEFAULT NULL, value jsonb DEFAULT NULL
)
RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE
AS $$
SELECT CASE
    WHEN pg_catalog.to_regclass(
        'pghub."'::pg_catalog.text
        OPERATOR(pg_catalog.||) coalesce(pghub.channel(topic), pghub._topic_fault(topic))
        OPERATOR(pg_catalog.||) '"'::pg_catalog.text
    ) IS NULL
        THEN pg_catalog.pg_notify(
            pg_catalog.lower(topic COLLATE pg_catalog."C"),
            pghub.encode(key, CASE
                WHEN pg_catalog.pg_backend_pid() OPERATOR(pg_catalog.<>) 0 THEN value
            END)
        )
    ELSE pghub._journal(
        pg_catalog.lower(topic COLLATE pg_catalog."C"), key, value, NULL::pg_catalog.jsonb
    )
END
$$;

COMMENT ON FUNCTION pghub.notify(text, bigint[], jsonb) IS
'Sends the event (topic, key, value) as NOTIFY on the channel of the topic with the canonical '
'payload, delivered at commit. On a durable topic it also appends the event to the journal in '
'the same transaction, journals an event over 7999 bytes whole instead of refusing it, and in '
'tick mode leaves the NOTIFY to pghub.tick() (docs/durable.md). Raises (and sends nothing) on '
'a bad or NULL topic (22023), a NULL key element (22004), a key of more than one dimension '
'(2202E), a payload over 7999 bytes on a plain topic (54000).';

-- An encoded payload for a plain topic that pg_notify must not get: NULL (22004), or over the
-- 7999 bytes a notification holds (54000, worded as pghub.encode words it). IMMUTABLE like
-- _topic_fault: it is only ever given a column of unnest(), never a constant the planner could
-- fold (and so raise on) whatever the CASE decides.
CREATE OR REPLACE FUNCTION pghub._refuse_payload(payload text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF payload IS NULL THEN
        RAISE EXCEPTION 'pghub: a payload must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RAISE EXCEPTION 'payload too large: % bytes, the limit is 7999', octet_length(payload)
        USING ERRCODE = 'program_limit_exceeded',
            HINT = 'PostgreSQL refuses notification payloads of 8000 bytes and more; a durable '
                'topic (pghub.make_durable) journals events of any size.';
END
$$;

COMMENT ON FUNCTION pghub._refuse_payload(text) IS
'Internal to pghub.notify_encoded: raises 22004 for a NULL payload, 54000 for one over 7999 '
'bytes (on a topic that is not durable).';

-- The journal never takes a payload as given: it is decoded (22P02 for anything no encoder could
-- write, as pghub.decode says) and _journal encodes the key and value again, with the code that
-- pghub.notify's events go through. What is journaled is then pghub.encode's bytes, whoever
-- called: a canonical payload (what every pghub encoder writes) comes out as it went in.
CREATE OR REPLACE FUNCTION pghub._journal_encoded(topic_channel text, payload text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    decoded record;
BEGIN
    IF payload IS NULL THEN
        RAISE EXCEPTION 'pghub: a payload must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    decoded := pghub.decode(payload);
    PERFORM pghub._journal(topic_channel, decoded.key, decoded.value, NULL::jsonb);
END
$$;

COMMENT ON FUNCTION pghub._journal_encoded(text, text) IS
'Internal to pghub.notify_encoded: journals the event a payload encodes on a durable topic, '
'as pghub.notify would (22P02 for a payload that pghub.decode refuses, 22004 for NULL).';

-- What the hubs and sql_notify send with: events whose payloads the client encoded (the bytes
-- pghub.encode writes), one statement for a batch. Each event, in order, goes where
-- pghub.notify would send it, decided here, per event, in the sending transaction: on a topic
-- that is durable now, through _journal (whatever the payload's size); otherwise pg_notify of
-- the payload as given (channels are everyone's: a payload is not checked there, only its size).
-- SECURITY INVOKER: the journal is written only by _journal, which encodes what it journals.
CREATE OR REPLACE FUNCTION pghub.notify_encoded(topics text[], payloads text[])
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF cardinality(topics) IS DISTINCT FROM cardinality(payloads) THEN
        RAISE EXCEPTION 'pghub: % topics and % payloads', cardinality(topics), cardinality(payloads)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- One statement for the batch, its events in array order (NOTIFYs are delivered in the
    -- order they were made).
    PERFORM
        CASE
            WHEN to_regclass('pghub."' || e.ch || '"') IS NOT NULL
                THEN pghub._journal_encoded(e.ch, e.payload)
            WHEN octet_length(e.payload) <= 7999 THEN pg_notify(e.ch, e.payload)
            ELSE pghub._refuse_payload(e.payload)
        END
    FROM (
        SELECT coalesce(pghub.channel(u.topic), pghub._topic_fault(u.topic)) AS ch, u.payload
        FROM unnest(topics, payloads) WITH ORDINALITY AS u (topic, payload, n)
        ORDER BY u.n
    ) AS e;
END
$$;

COMMENT ON FUNCTION pghub.notify_encoded(text[], text[]) IS
'Sends events whose payloads are already encoded (as pghub.encode writes them; the Python hub '
'and sql_notify send with it), in array order, in the calling transaction: on a durable topic '
'the event is journaled as pghub.notify would journal it (decoded and encoded again, of any '
'size, NOTIFYed in commit mode), on any other topic the payload is NOTIFYed as given. Raises '
'(and the statement sends nothing) for a bad or NULL topic (22023), arrays of different '
'lengths (22023), a NULL payload (22004), a payload over 7999 bytes on a topic that is not '
'durable (54000), a payload pghub.decode refuses on a durable topic (22P02).';

-- SECURITY DEFINER: a topic's view lives in schema pghub, where only its owner may create.
-- It makes the view of one channel match pghub.durable$topic, which row-level security guards:
-- it creates the view of a durable topic and drops the view of one that is not, nothing else,
-- so any role may call it. The name is a checked channel ([a-z0-9_], quoted with %I), never one
-- of pghub's own relations (they all have a $ in their names).
CREATE OR REPLACE FUNCTION pghub._sync_marker(topic_channel text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ch text := coalesce(pghub.channel(topic_channel), pghub._topic_fault(topic_channel));
    topic_id integer;
    marker regclass := to_regclass(format('pghub.%I', ch));
BEGIN
    SELECT d.id INTO topic_id FROM pghub.durable$topic AS d WHERE d.channel = ch;
    IF topic_id IS NULL THEN
        IF marker IS NOT NULL
            AND (SELECT c.relkind FROM pg_class AS c WHERE c.oid = marker) = 'v' THEN
            EXECUTE format('DROP VIEW pghub.%I', ch);
        END IF;
        RETURN;
    END IF;
    EXECUTE format(
        'CREATE OR REPLACE VIEW pghub.%I AS SELECT j.txid, j.id, j.payload, j.stand_in '
        'FROM pghub.journal$all AS j WHERE j.topic = %s', ch, topic_id);
    EXECUTE format('GRANT SELECT ON pghub.%I TO public', ch);
    EXECUTE format('COMMENT ON VIEW pghub.%I IS %L', ch, format(
        'The journal of durable topic %s (pghub.make_durable): its existence makes pghub.notify '
        'journal the topic.', ch));
END
$$;

COMMENT ON FUNCTION pghub._sync_marker(text) IS
'Internal to make_durable and make_transient (SECURITY DEFINER: schema pghub is its owner''s): '
'creates the view pghub.<channel> of a durable topic, drops that of a topic no longer durable.';

CREATE OR REPLACE FUNCTION pghub.make_durable(
    topic text, retain interval DEFAULT interval '7 days', wake text DEFAULT 'commit'
)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ch text := coalesce(pghub.channel(topic), pghub._topic_fault(topic));
    owned_by regrole;
BEGIN
    IF retain IS NULL OR retain <= INTERVAL '0' THEN
        RAISE EXCEPTION 'pghub: retain must be a positive interval, not %',
            coalesce(retain::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF wake IS NULL OR wake NOT IN ('commit', 'tick') THEN
        RAISE EXCEPTION 'pghub: wake must be ''commit'' or ''tick'', not %',
            coalesce(quote_literal(wake), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT d.owner_role INTO owned_by FROM pghub.durable$topic AS d WHERE d.channel = ch;
    IF NOT has_table_privilege('pghub.durable$topic', 'INSERT, UPDATE') THEN
        RAISE EXCEPTION 'pghub: role % may not make topics durable', current_user
            USING ERRCODE = 'insufficient_privilege',
                HINT = 'The role that installed pghub can grant it: GRANT INSERT, UPDATE, '
                    'DELETE ON pghub.durable$topic TO ...';
    END IF;
    IF owned_by IS NOT NULL AND NOT pg_has_role(owned_by, 'MEMBER') THEN
        RAISE EXCEPTION 'pghub: topic % was made durable by role %; only its members may change it',
            ch, owned_by
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO pghub.durable$topic AS d (channel, retain, wake)
    VALUES (ch, make_durable.retain, make_durable.wake)
    ON CONFLICT (channel) DO UPDATE SET retain = excluded.retain, wake = excluded.wake;
    PERFORM pghub._sync_marker(ch);
    RETURN ch;
END
$$;

COMMENT ON FUNCTION pghub.make_durable(text, interval, text) IS
'Makes a topic durable, or changes its retention and wake mode, and returns its channel: from '
'the transactions that start after this one commits, pghub.notify and the publishing triggers '
'also append its events to the journal (docs/durable.md). wake ''commit'': NOTIFY at commit as '
'for a plain topic; ''tick'': writers take no NOTIFY lock, pghub.tick() announces. Needs INSERT '
'and UPDATE on pghub.durable$topic (the installing role has them, with grant option) and, for a '
'topic already durable, membership in the role that made it durable. Errors: 22023 bad topic, '
'retain or wake, 42501 not allowed.';

CREATE OR REPLACE FUNCTION pghub.make_transient(topic text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ch text := coalesce(pghub.channel(topic), pghub._topic_fault(topic));
    topic_id integer;
    owned_by regrole;
BEGIN
    SELECT d.id, d.owner_role INTO topic_id, owned_by FROM pghub.durable$topic AS d
    WHERE d.channel = ch;
    IF topic_id IS NULL THEN
        RETURN FALSE;
    END IF;
    IF NOT has_table_privilege('pghub.durable$topic', 'DELETE')
        OR NOT pg_has_role(owned_by, 'MEMBER') THEN
        RAISE EXCEPTION 'pghub: topic % was made durable by role %; only its members may change it',
            ch, owned_by
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM pghub.durable$topic AS d WHERE d.id = topic_id;
    PERFORM pghub._sync_marker(ch);
    RETURN TRUE;
END
$$;

COMMENT ON FUNCTION pghub.make_transient(text) IS
'Makes a durable topic plain again and returns whether it was durable: its events are no longer '
'journaled, its named consumers and loss records go, and prune() empties what it journaled. '
'Needs DELETE on pghub.durable$topic and membership in the role that made it durable. Errors: '
'22023 bad topic, 42501 not allowed.';

CREATE OR REPLACE FUNCTION pghub.current_position()
RETURNS text
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pghub._snapshot_now()::text $$;

COMMENT ON FUNCTION pghub.current_position() IS
'The position "now": read from it, a consumer gets the events of every transaction that is not '
'yet visible, this one included. The since ''now'' of pghub.consumer_position.';

-- The id of a durable topic, or 55000.
CREATE OR REPLACE FUNCTION pghub._durable_topic(topic text)
RETURNS integer
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ch text := coalesce(pghub.channel(topic), pghub._topic_fault(topic));
    topic_id integer;
BEGIN
    SELECT d.id INTO topic_id FROM pghub.durable$topic AS d WHERE d.channel = ch;
    IF topic_id IS NULL THEN
        RAISE EXCEPTION 'pghub: topic % is not durable', ch
            USING ERRCODE = 'object_not_in_prerequisite_state',
                HINT = 'pghub.make_durable(topic) makes it durable.';
    END IF;
    RETURN topic_id;
END
$$;

COMMENT ON FUNCTION pghub._durable_topic(text) IS
'Internal: the id of a durable topic. Raises 22023 for a bad topic, 55000 for one that is not '
'durable.';

CREATE OR REPLACE FUNCTION pghub._consumer_name(consumer text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF consumer IS NULL THEN
        RAISE EXCEPTION 'pghub: a consumer name must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF length(consumer) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'pghub: a consumer name is 1 to 200 characters, not %', length(consumer)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN consumer;
END
$$;

COMMENT ON FUNCTION pghub._consumer_name(text) IS
'Internal: checks a named consumer''s name (1 to 200 characters): 22004 NULL, 22023 otherwise.';

CREATE OR REPLACE FUNCTION pghub.consumer_position(
    consumer text, topic text, since text DEFAULT 'now'
)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    consumer_name text := pghub._consumer_name(consumer);
    topic_id integer := pghub._durable_topic(topic);
    kept text;
    first text;
BEGIN
    SELECT c.pos INTO kept FROM pghub.durable$consumer AS c
    WHERE c.consumer = consumer_name AND c.topic = topic_id;
    IF kept IS NOT NULL THEN
        RETURN kept;
    END IF;
    first := CASE WHEN since = 'now' THEN pghub._snapshot_now()::text ELSE since END;
    PERFORM pghub._position(first);  -- 22P02 (22004 for NULL) before anything is written
    INSERT INTO pghub.durable$consumer AS c (consumer, topic, pos)
    VALUES (consumer_name, topic_id, first)
    ON CONFLICT ON CONSTRAINT durable$consumer_pkey DO NOTHING;
    SELECT c.pos INTO kept FROM pghub.durable$consumer AS c
    WHERE c.consumer = consumer_name AND c.topic = topic_id;
    RETURN kept;
END
$$;

COMMENT ON FUNCTION pghub.consumer_position(text, text, text) IS
'The acknowledged position of named consumer (consumer, topic): where it continues after a '
'restart. A consumer not yet known is created at since: ''now'' (the default), ''earliest'' '
'(the oldest event kept) or a position; it belongs to the current role. Errors: 22004 NULL '
'name or since, 22023 bad name or topic, 55000 topic not durable, 22P02 bad position.';

CREATE OR REPLACE FUNCTION pghub.ack(consumer text, topic text, pos text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    consumer_name text := pghub._consumer_name(consumer);
    topic_id integer := pghub._durable_topic(topic);
    owned_by regrole;
BEGIN
    PERFORM pghub._position(pos);
    SELECT c.owner_role INTO owned_by FROM pghub.durable$consumer AS c
    WHERE c.consumer = consumer_name AND c.topic = topic_id;
    IF owned_by IS NULL THEN
        RAISE EXCEPTION 'pghub: no consumer % on topic %', consumer_name, pghub.channel(topic)
            USING ERRCODE = 'undefined_object',
                HINT = 'pghub.consumer_position(consumer, topic, since) creates it.';
    END IF;
    IF NOT pg_has_role(owned_by, 'MEMBER') THEN
        RAISE EXCEPTION 'pghub: consumer % on topic % belongs to role %', consumer_name,
            pghub.channel(topic), owned_by
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE pghub.durable$consumer AS c SET pos = ack.pos, acked_at = now()
    WHERE c.consumer = consumer_name AND c.topic = topic_id;
END
$$;

COMMENT ON FUNCTION pghub.ack(text, text, text) IS
'Acknowledges a position of a named consumer (one pghub.read returned): after a restart it '
'continues from there, and prune() may remove what every named consumer of the topic has '
'acknowledged. Errors: 22004 NULL name or position, 22023 bad name or topic, 55000 topic not '
'durable, 22P02 bad position, 42704 no such consumer, 42501 another role''s consumer.';

CREATE OR REPLACE FUNCTION pghub.drop_consumer(consumer text, topic text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    consumer_name text := pghub._consumer_name(consumer);
    topic_id integer;
    other regrole;
    dropped integer;
BEGIN
    IF topic IS NOT NULL THEN
        topic_id := pghub._durable_topic(topic);
    END IF;
    SELECT c.owner_role INTO other FROM pghub.durable$consumer AS c
    WHERE c.consumer = consumer_name AND (topic_id IS NULL OR c.topic = topic_id)
        AND NOT pg_has_role(c.owner_role, 'MEMBER')
    LIMIT 1;
    IF other IS NOT NULL THEN
        RAISE EXCEPTION 'pghub: consumer % belongs to role %', consumer_name, other
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM pghub.durable$consumer AS c
    WHERE c.consumer = consumer_name AND (topic_id IS NULL OR c.topic = topic_id);
    GET DIAGNOSTICS dropped = ROW_COUNT;
    RETURN dropped;
END
$$;

COMMENT ON FUNCTION pghub.drop_consumer(text, text) IS
'Forgets a named consumer on one topic, or on every topic when topic is NULL, and returns how '
'many positions it dropped. Errors: 22004 NULL name, 22023 bad name or topic, 55000 topic not '
'durable, 42501 another role''s consumer.';

-- What a reader at position prev (in the middle of batch prev..cur when mid_batch) may have
-- lost to prune(), from the loss records: NULL when nothing. A removed event was read if its
-- transaction is visible in prev. Every removed transaction below xmin(prev) is; one at or
-- above xmax(prev) is not; one in between was not if it was running at prev (in xip) and had
-- committed by the time prune() removed it (visible in settled). In the middle of a batch,
-- only losses after the batch began count: the first page reported those before it.
CREATE OR REPLACE FUNCTION pghub._gap(
    topic_id integer, prev pg_snapshot, cur pg_snapshot, mid_batch boolean
)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (
        SELECT jsonb_build_object(
            'events', sum(g.events), 'first_id', min(g.first_id), 'last_id', max(g.last_id),
            'oldest_at', min(g.oldest_at), 'newest_at', max(g.newest_at), 'removed_at', max(g.removed_at)
        )
        FROM pghub.journal$gap AS g
        WHERE
            g.topic = topic_id
            AND pg_snapshot_xmax(prev) > '1'::xid8  -- 'earliest' asked for what is kept
            AND g.max_txid >= pg_snapshot_xmin(prev)
            AND (
                g.max_txid >= pg_snapshot_xmax(prev)
                OR EXISTS (
                    SELECT FROM pg_snapshot_xip(prev) AS x (xid)
                    WHERE
                        x.xid BETWEEN g.min_txid AND g.max_txid
                        AND pg_visible_in_snapshot(x.xid, g.settled)
                )
            )
            AND (NOT mid_batch OR NOT pg_visible_in_snapshot(g.removed_by, cur))
        HAVING count(*) > 0
    );
END
$$;

COMMENT ON FUNCTION pghub._gap(integer, pg_snapshot, pg_snapshot, boolean) IS
'Internal to pghub.read: what a reader at a position may have lost to prune() (events, ids, '
'times), or NULL.';

-- The next events of a batch, at most max_rows, in (txid, id) order: those of the given topics
-- (only those tick() has to announce, with tick_only) whose transaction is visible in cur and
-- not in prev, after (last_txid, last_id). Transactions that were running at prev and have
-- committed by cur are looked up by xid; the others lie in [xmax(prev), xmax(cur)), a range a
-- long transaction does not widen (PgQ's pgq.batch_event_sql does the same). The range is read
-- topic by topic in index order: the planner, misled by a table just filled or just emptied,
-- would otherwise sort the whole rest of the batch for every page.
CREATE OR REPLACE FUNCTION pghub._batch(
    topic_ids integer[], tick_only boolean, prev pg_snapshot, cur pg_snapshot,
    last_txid xid8, last_id bigint, max_rows integer
)
RETURNS TABLE (
    txid xid8, id bigint, topic integer, announce "char", payload text, stand_in text -- noqa: RF06
)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    xips xid8[];
    got integer;
    from_txid xid8;
    from_id bigint;
    sort_before text := current_setting('enable_sort');
    jit_before text := current_setting('jit');
    plans_before text := current_setting('plan_cache_mode');
BEGIN
    -- Generic plans, made once a session: planning a query over the eight journal tables
    -- costs more than running it, and custom plans would be made again for every page.
    PERFORM set_config('plan_cache_mode', 'force_generic_plan', TRUE);
    SELECT coalesce(array_agg(x.xid), '{}') INTO xips
    FROM pg_snapshot_xip(prev) AS x (xid)
    WHERE pg_visible_in_snapshot(x.xid, cur);
    RETURN QUERY
    SELECT j.txid, j.id, j.topic, j.announce, j.payload, j.stand_in
    FROM pghub.journal$all AS j
    WHERE
        j.topic = ANY(topic_ids) AND j.txid = ANY(xips)
        AND (j.txid, j.id) > (last_txid, last_id)
        AND (NOT tick_only OR j.announce IN ('t', 'o'))
    ORDER BY j.txid, j.id LIMIT max_rows;
    GET DIAGNOSTICS got = ROW_COUNT;
    IF got >= max_rows THEN
        PERFORM set_config('plan_cache_mode', plans_before, TRUE);
        RETURN;
    END IF;
    -- One row comparison for where the range starts (at the cursor, or at xmax(prev)), so that
    -- the index scan starts there: with two bounds on txid it may start at the lower one.
    IF last_txid >= pg_snapshot_xmax(prev) THEN
        from_txid := last_txid;
        from_id := last_id;
    ELSE
        from_txid := pg_snapshot_xmax(prev);
        from_id := -1;  -- every id of from_txid (ids start at 1)
    END IF;
    -- Without sorts the plan's cost includes PostgreSQL's penalty for them, which would make
    -- it compile the query with JIT (hundreds of milliseconds): no JIT either.
    PERFORM set_config('enable_sort', 'off', TRUE);
    PERFORM set_config('jit', 'off', TRUE);
    RETURN QUERY
    SELECT j.txid, j.id, j.topic, j.announce, j.payload, j.stand_in
    FROM unnest(topic_ids) AS t (id)
    CROSS JOIN LATERAL (
        SELECT j.txid, j.id, j.topic, j.announce, j.payload, j.stand_in
        FROM pghub.journal$all AS j
        WHERE
            j.topic = t.id
            AND (j.txid, j.id) > (from_txid, from_id) AND j.txid < pg_snapshot_xmax(cur)
            AND pg_visible_in_snapshot(j.txid, cur)
            AND (NOT tick_only OR j.announce IN ('t', 'o'))
        ORDER BY j.txid, j.id LIMIT max_rows - got
    ) AS j
    ORDER BY j.txid, j.id LIMIT max_rows - got;
    PERFORM set_config('enable_sort', sort_before, TRUE);
    PERFORM set_config('jit', jit_before, TRUE);
    PERFORM set_config('plan_cache_mode', plans_before, TRUE);
END
$$;

COMMENT ON FUNCTION pghub._batch(
    integer[], boolean, pg_snapshot, pg_snapshot, xid8, bigint, integer
) IS
'Internal to read and tick: the next events of the batch prev..cur after (last_txid, last_id), '
'at most max_rows, in (txid, id) order.';

CREATE OR REPLACE FUNCTION pghub.read(topic text, since text, max_events integer DEFAULT 1000)
RETURNS TABLE (pos text, payload text, gap jsonb)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    topic_id integer;
    at_position record;
    prev pg_snapshot;
    cur pg_snapshot;
    last_txid xid8;
    last_id bigint;
    mid_batch boolean;
    lost jsonb;
    txids xid8[];
    ids bigint[];
    payloads text[];
    prefix text;
    cur_text text;
    got integer;
BEGIN
    IF max_events IS NULL OR max_events < 1 THEN
        RAISE EXCEPTION 'pghub: max_events must be 1 or more, not %', coalesce(max_events::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    at_position := pghub._position(since);
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'pghub: read runs in READ COMMITTED only, not in %',
            upper(current_setting('transaction_isolation'))
            USING ERRCODE = 'feature_not_supported',
                DETAIL = 'prune() empties journal tables with TRUNCATE; an older snapshot could '
                    'miss both the events and the record of their removal.',
                HINT = 'Read outside an explicit transaction, or in a READ COMMITTED one.';
    END IF;
    -- From here prune() cannot empty a journal table until this transaction ends, and every
    -- statement below sees what it emptied before.
    LOCK TABLE pghub.journal$0, pghub.journal$1, pghub.journal$2, pghub.journal$3,
        pghub.journal$4, pghub.journal$5, pghub.journal$6, pghub.journal$7 IN ACCESS SHARE MODE;
    topic_id := pghub._durable_topic(topic);
    prev := at_position.prev;
    mid_batch := at_position.cur IS NOT NULL;
    IF mid_batch THEN
        cur := at_position.cur;
        last_txid := at_position.last_txid;
        last_id := at_position.last_id;
    ELSE
        cur := pghub._snapshot_now();
        last_txid := '0'::xid8;
        last_id := 0;
    END IF;
    lost := pghub._gap(topic_id, prev, cur, mid_batch);
    IF lost IS NOT NULL THEN
        pos := since;
        payload := NULL;
        gap := lost;
        RETURN NEXT;
    END IF;
    LOOP
        SELECT array_agg(b.txid ORDER BY b.n), array_agg(b.id ORDER BY b.n),
            array_agg(b.payload ORDER BY b.n)
        INTO txids, ids, payloads
        FROM pghub._batch(ARRAY[topic_id], FALSE, prev, cur, last_txid, last_id, max_events + 1)
            WITH ORDINALITY AS b (txid, id, topic, announce, payload, stand_in, n);
        got := least(coalesce(cardinality(txids), 0), max_events);
        prefix := prev::text || '/' || cur::text || '/';
        cur_text := cur::text;
        -- Each event's position; the last one of a batch read to its end is the batch's end.
        RETURN QUERY
        SELECT
            CASE
                WHEN u.n = cardinality(txids) AND u.n <= max_events THEN cur_text
                ELSE prefix || u.txid::text || '.' || u.id::text
            END,
            u.payload,
            NULL::jsonb
        FROM unnest(txids, ids, payloads) WITH ORDINALITY AS u (txid, id, payload, n)
        WHERE u.n <= max_events
        ORDER BY u.n;
        EXIT WHEN got > 0 OR NOT mid_batch;
        -- The rest of a batch begun earlier was empty: on to the next one.
        prev := cur;
        cur := pghub._snapshot_now();
        last_txid := '0'::xid8;
        last_id := 0;
        mid_batch := FALSE;
    END LOOP;
    IF got = 0 THEN
        -- Nothing new: the position moves on all the same.
        pos := cur_text;
        payload := NULL;
        gap := NULL;
        RETURN NEXT;
    END IF;
END
$$;

COMMENT ON FUNCTION pghub.read(text, text, integer) IS
'The events of a durable topic after position since (''earliest'', or a position a read '
'returned), at most max_events, in the order of docs/durable.md: one row an event (its '
'position, its payload as pghub.encode writes it, of any size). A first row with gap (and no '
'payload) says what prune() removed before it was read. The last row''s position is where the '
'next read continues; a row with neither payload nor gap only moves it on. Paging is exact: '
'the same position gives the same page. Runs in READ COMMITTED only. Errors: 22023 bad topic '
'or max_events, 22004 NULL since, 22P02 bad position, 55000 topic not durable, 0A000 '
'isolation.';

-- The tick's share of a batch stops before the first event whose payload it already sends on
-- the same channel in this transaction: PostgreSQL would deliver the two once.
-- SECURITY DEFINER: any role's hub (or cron) may tick, but where the tick has got to is
-- written only here. It reads the journal, NOTIFYs and moves its own position, nothing else.
CREATE OR REPLACE FUNCTION pghub.tick(
    max_events integer DEFAULT 10000, OUT events integer, OUT more boolean
)
RETURNS record
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    at_text text;
    at_position record;
    prev pg_snapshot;
    cur pg_snapshot;
    last_txid xid8;
    last_id bigint;
    mid_batch boolean;
    batch_rows integer;
    cut_at integer;
    channels text[];
    payloads text[];
    woken text;
    stop_txid xid8;
    stop_id bigint;
    next_position text;
    topic_ids integer[];
BEGIN
    events := 0;
    more := FALSE;
    IF max_events IS NULL OR max_events < 1 THEN
        RAISE EXCEPTION 'pghub: max_events must be 1 or more, not %', coalesce(max_events::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Nothing to announce: return without locking or writing anything (no xid, no WAL).
    -- Every durable topic is looked at (not only those in tick mode now): a topic switched to
    -- commit mode may still have events written in tick mode.
    SELECT array_agg(d.id) INTO topic_ids FROM pghub.durable$topic AS d;
    SELECT t.pos INTO at_text FROM pghub.journal$tick AS t;
    at_position := pghub._position(at_text);
    cur := pg_current_snapshot();
    IF NOT EXISTS (
        SELECT FROM pghub.journal$all AS j
        WHERE
            j.topic = ANY(topic_ids) AND j.announce IN ('t', 'o')
            AND (
                j.txid = ANY(ARRAY(SELECT pg_snapshot_xip(at_position.prev)))
                OR j.txid >= pg_snapshot_xmax(at_position.prev)
            )
            AND j.txid < pg_snapshot_xmax(cur) AND pg_visible_in_snapshot(j.txid, cur)
            AND NOT (
                at_position.cur IS NOT NULL
                AND pg_visible_in_snapshot(j.txid, at_position.cur)
                AND (j.txid, j.id) <= (at_position.last_txid, at_position.last_id)
            )
    ) THEN
        RETURN;
    END IF;
    SELECT t.pos INTO at_text FROM pghub.journal$tick AS t FOR UPDATE SKIP LOCKED;
    IF at_text IS NULL THEN
        RETURN;  -- another tick is at work
    END IF;
    -- The tick's commit need not wait for its WAL flush: a crash can only take back where the
    -- tick had got to, and the next tick then announces those events again (a duplicate
    -- wake-up or NOTIFY, never a lost one). About a millisecond less a tick.
    PERFORM set_config('synchronous_commit', 'off', TRUE);
    at_position := pghub._position(at_text);
    prev := at_position.prev;
    mid_batch := at_position.cur IS NOT NULL;
    IF mid_batch THEN
        cur := at_position.cur;
        last_txid := at_position.last_txid;
        last_id := at_position.last_id;
    ELSE
        cur := pghub._snapshot_now();
        last_txid := '0'::xid8;
        last_id := 0;
    END IF;
    LOOP
        WITH numbered AS (
            SELECT
                b.txid, b.id, d.channel, s.sent,
                row_number() OVER (ORDER BY b.txid, b.id) AS n,
                row_number() OVER (PARTITION BY d.channel, s.sent ORDER BY b.txid, b.id) AS copy
            FROM pghub._batch(topic_ids, TRUE, prev, cur, last_txid, last_id, max_events + 1) AS b
            LEFT JOIN pghub.durable$topic AS d ON b.topic = d.id
            CROSS JOIN LATERAL (
                SELECT CASE WHEN b.announce = 't' THEN b.payload ELSE b.stand_in END AS sent
            ) AS s
        ),
        cut AS (
            SELECT
                count(*)::integer AS found,
                least(max_events + 1, coalesce(min(nb.n) FILTER (
                    WHERE nb.copy > 1 AND nb.sent IS NOT NULL AND nb.channel IS NOT NULL
                ), max_events + 1))::integer AS at
            FROM numbered AS nb
        ),
        taken AS (SELECT nb.* FROM numbered AS nb CROSS JOIN cut WHERE nb.n < cut.at)
        SELECT
            c.found, c.at,
            (SELECT array_agg(t.channel ORDER BY t.n) FROM taken AS t),
            (SELECT array_agg(t.sent ORDER BY t.n) FROM taken AS t),
            (SELECT string_agg(DISTINCT t.channel, ',') FROM taken AS t),
            (SELECT t.txid FROM taken AS t ORDER BY t.n DESC LIMIT 1),
            (SELECT t.id FROM taken AS t ORDER BY t.n DESC LIMIT 1)
        INTO batch_rows, cut_at, channels, payloads, woken, stop_txid, stop_id
        FROM cut AS c;
        EXIT WHEN batch_rows > 0 OR NOT mid_batch;
        prev := cur;
        cur := pghub._snapshot_now();
        last_txid := '0'::xid8;
        last_id := 0;
        mid_batch := FALSE;
    END LOOP;
    events := least(cut_at - 1, batch_rows);
    more := batch_rows >= cut_at;
    -- In order: the events that fit, or their stand-ins, on their channels, as the writers
    -- would have at commit; then one wake-up naming the channels for durable consumers.
    PERFORM pg_notify(u.channel, u.sent)
    FROM unnest(channels, payloads) AS u (channel, sent)
    WHERE u.channel IS NOT NULL AND u.sent IS NOT NULL;
    IF woken IS NOT NULL THEN
        PERFORM pg_notify('pghub:wake', CASE WHEN octet_length(woken) <= 7999 THEN woken ELSE '*' END);
    END IF;
    next_position := CASE
        WHEN more THEN prev::text || '/' || cur::text || '/' || stop_txid::text || '.' || stop_id::text
        ELSE cur::text
    END;
    UPDATE pghub.journal$tick AS t SET pos = next_position, ticked_at = now();
END
$$;

COMMENT ON FUNCTION pghub.tick(integer) IS
'Announces what writers to durable topics in tick mode appended since the last tick (at most '
'max_events events): NOTIFYs each event that fits in 7999 bytes (or its stand-in) on its '
'channel, in journal order, then one wake-up on channel pghub:wake with the channels that got '
'events. events: how many it handled; more: call again now. Safe to run from several sessions '
'at once (one works, the others return at once) and from cron or pg_cron; it writes nothing '
'when there is nothing new. SECURITY DEFINER. Error: 22023 bad max_events.';

-- Whether every event in journal$<slot> may go: for each topic in it, the table is older than
-- the topic's retention, or the topic has named consumers and each has read all its events
-- there, or the topic is no longer durable. The table's newest event is no younger than when
-- it stopped being current, or than a late write into it (journal$late).
CREATE OR REPLACE FUNCTION pghub._removable(slot integer)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tbl text := format('pghub.%I', 'journal$' || slot);
    newest timestamptz;
    topic_id integer;
    topic_retain interval;
    prev pg_snapshot;
    cur pg_snapshot;
    last_txid xid8;
    last_id bigint;
    unread boolean;
BEGIN
    SELECT greatest(s.closed_at, (
        SELECT max(l.written_at) FROM pghub.journal$late AS l WHERE l.slot = s.slot
    )) INTO newest
    FROM pghub.journal$slot AS s WHERE s.slot = _removable.slot AND s.closed_at IS NOT NULL;
    IF newest IS NULL THEN
        RETURN FALSE;  -- the current table
    END IF;
    FOR topic_id, topic_retain IN EXECUTE format(
        $q$
        WITH RECURSIVE present AS (
            (SELECT j.topic FROM %1$s AS j ORDER BY j.topic LIMIT 1)
            UNION ALL
            SELECT (SELECT j.topic FROM %1$s AS j WHERE j.topic > p.topic ORDER BY j.topic LIMIT 1)
            FROM present AS p WHERE p.topic IS NOT NULL
        )
        SELECT p.topic AS id, d.retain
        FROM present AS p LEFT JOIN pghub.durable$topic AS d ON p.topic = d.id
        WHERE p.topic IS NOT NULL
        $q$, tbl)
    LOOP
        CONTINUE WHEN topic_retain IS NULL OR newest < now() - topic_retain;
        IF NOT EXISTS (SELECT FROM pghub.durable$consumer AS c WHERE c.topic = topic_id) THEN
            RETURN FALSE;
        END IF;
        FOR prev, cur, last_txid, last_id IN
            SELECT p.prev, p.cur, p.last_txid, p.last_id
            FROM pghub.durable$consumer AS c CROSS JOIN LATERAL pghub._position(c.pos) AS p
            WHERE c.topic = topic_id
        LOOP
            EXECUTE format(
                $q$
                SELECT EXISTS (
                    SELECT FROM %s AS j
                    WHERE j.topic = $1 AND j.txid >= pg_snapshot_xmin($2) AND NOT (
                        pg_visible_in_snapshot(j.txid, $2)
                        OR ($3 IS NOT NULL AND pg_visible_in_snapshot(j.txid, $3)
                            AND (j.txid, j.id) <= ($4, $5))
                    )
                )
                $q$, tbl)
            INTO unread
            USING topic_id, prev, cur, last_txid, last_id;
            IF unread THEN
                RETURN FALSE;
            END IF;
        END LOOP;
    END LOOP;
    RETURN TRUE;
END
$$;

COMMENT ON FUNCTION pghub._removable(integer) IS
'Internal to prune(): whether every event in journal table number slot may be removed (past '
'its topic''s retention, acknowledged by all its topic''s named consumers, or of a topic no '
'longer durable).';

-- SECURITY DEFINER: emptying journal tables takes TRUNCATE, which only their owner has. It
-- removes only what _removable allows, takes its locks with a timeout (so nobody queues behind
-- it for long) and never locks the table writers append to, so any role may run it.
CREATE OR REPLACE FUNCTION pghub.prune(
    lock_wait interval DEFAULT interval '100 ms',
    OUT emptied integer, OUT events bigint, OUT rotated boolean
)
RETURNS record
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    recorded bigint;
    generation bigint;
    current_slot integer;
    period interval;
    emptying record;
    tbl text;
    counted jsonb;
    newest timestamptz;
    timeout_before text := current_setting('lock_timeout');
BEGIN
    emptied := 0;
    events := 0;
    rotated := FALSE;
    IF lock_wait IS NULL OR lock_wait < INTERVAL '0' THEN
        RAISE EXCEPTION 'pghub: lock_wait must be an interval of 0 or more, not %',
            coalesce(lock_wait::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT p.gen INTO recorded FROM pghub.journal$prune AS p FOR UPDATE SKIP LOCKED;
    IF recorded IS NULL THEN
        RETURN;  -- another prune is at work
    END IF;
    generation := pg_sequence_last_value('pghub.journal$gen'::regclass);
    current_slot := (generation % 8)::integer;
    IF generation <> recorded THEN
        -- A rotation whose bookkeeping rolled back after it moved the sequence (no rollback
        -- undoes that): close the other tables now, which errs on the late side.
        UPDATE pghub.journal$slot AS s SET closed_at = clock_timestamp()
        WHERE s.slot <> current_slot AND s.closed_at IS NULL AND NOT s.ready;
        UPDATE pghub.journal$slot AS s SET opened_at = clock_timestamp(), closed_at = NULL,
            ready = FALSE
        WHERE s.slot = current_slot AND s.ready;
    END IF;

    -- 1. Rotate when the current table has been current for a period and the next is empty.
    -- A period is a sixth of the longest retention (a second at least): tables are emptied
    -- whole, so an event outlives its retention by at most about a period.
    SELECT greatest(INTERVAL '1 second', coalesce(max(d.retain), INTERVAL '6 hours') / 6)
    INTO period FROM pghub.durable$topic AS d;
    IF EXISTS (
        SELECT FROM pghub.journal$slot AS s
        WHERE s.slot = current_slot AND s.opened_at <= now() - period
    ) AND EXISTS (
        SELECT FROM pghub.journal$slot AS s WHERE s.slot = (current_slot + 1) % 8 AND s.ready
    ) THEN
        PERFORM setval('pghub.journal$gen'::regclass, generation + 1, TRUE);
        -- Stamped after the switch: every event appended to the table is older than this.
        UPDATE pghub.journal$slot AS s SET closed_at = clock_timestamp()
        WHERE s.slot = current_slot;
        UPDATE pghub.journal$slot AS s SET opened_at = clock_timestamp(), closed_at = NULL,
            ready = FALSE
        WHERE s.slot = (current_slot + 1) % 8;
        generation := generation + 1;
        current_slot := (generation % 8)::integer;
        rotated := TRUE;
    END IF;
    UPDATE pghub.journal$prune AS p SET gen = generation, pruned_at = now();

    -- 2. Empty each table that is neither current nor empty and whose events may all go. One
    -- that stopped being current less than a second ago is left alone: a writer may have read
    -- the generation before the switch and be about to append to it.
    FOR emptying IN
        SELECT s.slot, s.opened_at FROM pghub.journal$slot AS s
        WHERE
            s.slot <> current_slot AND NOT s.ready
            AND s.closed_at <= clock_timestamp() - INTERVAL '1 second'
        ORDER BY s.closed_at
    LOOP
        CONTINUE WHEN NOT pghub._removable(emptying.slot);
        tbl := format('pghub.%I', 'journal$' || emptying.slot);
        -- Counted before the lock, which readers of every topic would wait for.
        EXECUTE format(
            'SELECT coalesce(jsonb_object_agg(c.topic, jsonb_build_array(c.events, c.first_id, '
            'c.last_id)), ''{}'') FROM (SELECT j.topic, count(*) AS events, min(j.id) AS first_id, '
            'max(j.id) AS last_id FROM %s AS j GROUP BY j.topic) AS c', tbl)
        INTO counted;
        BEGIN
            PERFORM set_config('lock_timeout',
                greatest(1, round(extract(EPOCH FROM lock_wait) * 1000))::text || 'ms', TRUE);
            EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', tbl);
            PERFORM set_config('lock_timeout', timeout_before, TRUE);
            -- Again, now that nobody can append to it.
            IF pghub._removable(emptying.slot) THEN
                SELECT greatest(s.closed_at, (
                    SELECT max(l.written_at) FROM pghub.journal$late AS l WHERE l.slot = s.slot
                )) INTO newest
                FROM pghub.journal$slot AS s WHERE s.slot = emptying.slot;
                EXECUTE format(
                    $q$
                    WITH RECURSIVE present AS (
                        (SELECT j.topic FROM %1$s AS j ORDER BY j.topic LIMIT 1)
                        UNION ALL
                        SELECT (
                            SELECT j.topic FROM %1$s AS j WHERE j.topic > p.topic
                            ORDER BY j.topic LIMIT 1
                        )
                        FROM present AS p WHERE p.topic IS NOT NULL
                    )
                    INSERT INTO pghub.journal$gap (topic, removed_by, settled, min_txid,
                        max_txid, events, first_id, last_id, oldest_at, newest_at, removed_at)
                    SELECT p.topic, pg_current_xact_id(), pg_current_snapshot(),
                        (SELECT j.txid FROM %1$s AS j WHERE j.topic = p.topic ORDER BY j.txid LIMIT 1),
                        (SELECT j.txid FROM %1$s AS j WHERE j.topic = p.topic ORDER BY j.txid DESC LIMIT 1),
                        coalesce(($1 -> p.topic::text ->> 0)::bigint, 0),
                        ($1 -> p.topic::text ->> 1)::bigint,
                        ($1 -> p.topic::text ->> 2)::bigint,
                        $2, $3, now()
                    FROM present AS p INNER JOIN pghub.durable$topic AS d ON p.topic = d.id
                    $q$, tbl)
                USING counted, emptying.opened_at, newest;
                EXECUTE format('TRUNCATE %s', tbl);
                DELETE FROM pghub.journal$late AS l WHERE l.slot = emptying.slot;
                UPDATE pghub.journal$slot AS s SET ready = TRUE WHERE s.slot = emptying.slot;
                emptied := emptied + 1;
                events := events + coalesce((
                    SELECT sum((c.value ->> 0)::bigint) FROM jsonb_each(counted) AS c
                ), 0)::bigint;
            END IF;
        EXCEPTION WHEN lock_not_available THEN
            NULL;  -- somebody reads it (or a writer straggled): the next prune
        END;
    END LOOP;

    -- 3. Keep the newest 64 loss records of a topic; fold older ones into one (which only
    -- widens what a reader is told it may have lost).
    WITH crowded AS (
        SELECT g.topic FROM pghub.journal$gap AS g GROUP BY g.topic HAVING count(*) > 64
    ),
    old AS (
        DELETE FROM pghub.journal$gap AS g
        WHERE g.ctid IN (
            SELECT r.ctid FROM (
                SELECT
                    o.ctid,
                    row_number() OVER (PARTITION BY o.topic ORDER BY o.removed_at DESC) AS n
                FROM pghub.journal$gap AS o WHERE o.topic IN (SELECT c.topic FROM crowded AS c)
            ) AS r
            WHERE r.n >= 64
        )
        RETURNING g.*
    )
    INSERT INTO pghub.journal$gap (topic, removed_by, settled, min_txid, max_txid, events,
        first_id, last_id, oldest_at, newest_at, removed_at)
    SELECT
        -- No min()/max() of xid8 before PostgreSQL 16: the first of a sorted array instead.
        o.topic, (array_agg(o.removed_by ORDER BY o.removed_by DESC))[1],
        (array_agg(o.settled ORDER BY o.removed_at DESC))[1],
        (array_agg(o.min_txid ORDER BY o.min_txid))[1],
        (array_agg(o.max_txid ORDER BY o.max_txid DESC))[1],
        sum(o.events), min(o.first_id), max(o.last_id),
        min(o.oldest_at), max(o.newest_at), max(o.removed_at)
    FROM old AS o GROUP BY o.topic;
END
$$;

COMMENT ON FUNCTION pghub.prune(interval) IS
'Removes journaled events that are past their topic''s retention or that every named consumer '
'of their topic has acknowledged, by emptying whole journal tables (TRUNCATE: no dead rows), '
'and rotates the table writers append to. Safe to run at any time, from cron or pg_cron, '
'concurrently with writers, readers and itself: writers never wait for it; a table that '
'somebody reads for longer than lock_wait is left for the next run. Records what it removed '
'for the readers it concerns (GAP). emptied: tables emptied; events: events removed; rotated: '
'whether it rotated. SECURITY DEFINER. Error: 22023 bad lock_wait.';

CREATE OR REPLACE FUNCTION pghub.durable_consumers()
RETURNS TABLE (
    consumer text, topic text, owner regrole, pos text, acked_at timestamptz, lag bigint
)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT
    c.consumer, d.channel, c.owner_role, c.pos, c.acked_at,
    (
        SELECT count(*) FROM pghub.journal$all AS j
        WHERE
            j.topic = c.topic AND j.txid >= pg_snapshot_xmin(p.prev)
            AND NOT (
                pg_visible_in_snapshot(j.txid, p.prev)
                OR (
                    p.cur IS NOT NULL AND pg_visible_in_snapshot(j.txid, p.cur)
                    AND (j.txid, j.id) <= (p.last_txid, p.last_id)
                )
            )
    )
FROM pghub.durable$consumer AS c
INNER JOIN pghub.durable$topic AS d ON c.topic = d.id
CROSS JOIN LATERAL pghub._position(c.pos) AS p
ORDER BY d.channel, c.consumer
$$;

COMMENT ON FUNCTION pghub.durable_consumers() IS
'Every named consumer: its topic, owner, acknowledged position, when it acknowledged, and lag, '
'the number of committed events of its topic it has not acknowledged.';

CREATE OR REPLACE FUNCTION pghub.durable_topics()
RETURNS TABLE (
    topic text, wake text, retain interval, owner regrole, events bigint, bytes bigint,
    consumers bigint, most_lag bigint
)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
WITH counts AS (
    SELECT j.topic, count(*) AS events FROM pghub.journal$all AS j GROUP BY j.topic
),
journal AS (
    SELECT
        (SELECT sum(c.events) FROM counts AS c) AS events,
        (
            SELECT sum(pg_total_relation_size(r.oid)) FROM pg_class AS r
            WHERE
                r.relnamespace = 'pghub'::regnamespace
                AND r.relname IN ('journal$0', 'journal$1', 'journal$2', 'journal$3',
                    'journal$4', 'journal$5', 'journal$6', 'journal$7')
        ) AS bytes
),
lags AS (
    SELECT l.topic, count(*) AS consumers, max(l.lag) AS most_lag
    FROM pghub.durable_consumers() AS l GROUP BY l.topic
)
SELECT
    d.channel, d.wake, d.retain, d.owner_role, coalesce(c.events, 0),
    (journal.bytes * coalesce(c.events, 0) / nullif(journal.events, 0))::bigint,
    coalesce(l.consumers, 0), l.most_lag
FROM pghub.durable$topic AS d
LEFT JOIN counts AS c ON d.id = c.topic
LEFT JOIN lags AS l ON d.channel = l.topic
CROSS JOIN journal
ORDER BY d.channel
$$;

COMMENT ON FUNCTION pghub.durable_topics() IS
'Every durable topic: wake mode, retention, owner, events journaled, bytes (its share of the '
'journal''s size on disk, tables and indexes, in proportion to its events), named consumers and '
'the largest lag among them. Counts every journaled event: seconds at tens of millions.';

GRANT EXECUTE ON FUNCTION
pghub._position(text),
pghub._snapshot_now(),
pghub._journal(text, bigint[], jsonb, jsonb),
pghub.notify(text, bigint[], jsonb),
pghub._refuse_payload(text),
pghub._journal_encoded(text, text),
pghub.notify_encoded(text[], text[]),
pghub._sync_marker(text),
pghub.make_durable(text, interval, text),
pghub.make_transient(text),
pghub.current_position(),
pghub._durable_topic(text),
pghub._consumer_name(text),
pghub.consumer_position(text, text, text),
pghub.ack(text, text, text),
pghub.drop_consumer(text, text),
pghub._gap(integer, pg_snapshot, pg_snapshot, boolean),
pghub._batch(integer[], boolean, pg_snapshot, pg_snapshot, xid8, bigint, integer),
pghub.read(text, text, integer),
pghub.tick(integer),
pghub._removable(integer),
pghub.prune(interval),
pghub.durable_consumers(),
pghub.durable_topics()
TO public;
