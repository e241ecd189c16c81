-- Security of the installed functions (docs/security.md): how they are declared, and that none
-- of them resolves a function, operator or type of the caller's search_path, even one that puts
-- a hostile schema before pg_catalog (so that even same-signature objects there would win).
BEGIN;
SELECT plan(26);

-- ==== Declarations ====
SELECT is(
    (
        SELECT
            array_agg(
                p.oid::regprocedure::text
                ORDER BY convert_to(p.oid::regprocedure::text, 'UTF8')
            )
        FROM pg_proc AS p
        WHERE p.pronamespace = 'pghub'::regnamespace AND p.prosecdef
    ),
    ARRAY[
        'pghub._journal(text,bigint[],jsonb,jsonb)', 'pghub._sync_marker(text)',
        'pghub.prune(interval)', 'pghub.tick(integer)'
    ],
    'SECURITY DEFINER: only the four reviewed durable-topic functions (docs/security.md)'
);
SELECT is(
    (
        SELECT array_agg(p.oid::regprocedure::text ORDER BY 1) FROM pg_proc AS p
        WHERE
            p.pronamespace = 'pghub'::regnamespace
            AND p.proname NOT IN ('channel', 'notify')
            AND p.proconfig IS DISTINCT FROM ARRAY['search_path=pg_catalog, pg_temp']
    ),
    NULL, 'every function but channel and notify pins search_path to pg_catalog, pg_temp'
);
SELECT is(
    (
        SELECT array_agg(p.proname::text ORDER BY 1) FROM pg_proc AS p
        WHERE
            p.pronamespace = 'pghub'::regnamespace
            AND p.proname IN ('channel', 'notify')
            AND p.proconfig IS NULL
            AND p.prolang = (
                SELECT l.oid FROM pg_language AS l
                WHERE l.lanname = 'sql'
            )
    ),
    ARRAY['channel', 'notify'], 'channel and notify: LANGUAGE sql without SET (inlinable)'
);
SELECT is(
    (
        SELECT array_agg(p.oid::regprocedure::text ORDER BY 1) FROM pg_proc AS p
        WHERE
            p.pronamespace = 'pghub'::regnamespace
            AND NOT EXISTS (
                SELECT FROM aclexplode(p.proacl) AS a
                WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'
            )
    ),
    NULL, 'EXECUTE on every function is granted to PUBLIC'
);
SELECT is(
    (
        SELECT array_agg(p.oid::regprocedure::text ORDER BY 1) FROM pg_proc AS p
        INNER JOIN pg_namespace AS n ON p.pronamespace = n.oid
        WHERE n.nspname = 'pghub' AND p.proowner <> n.nspowner
    ),
    NULL, 'the owner of schema pghub owns every function in it'
);
SELECT is(
    (
        SELECT array_agg(a.grantee::regrole::text) FROM pg_namespace AS n,
            aclexplode(n.nspacl) AS a
        WHERE
            n.nspname = 'pghub' AND a.privilege_type = 'CREATE'
            AND a.grantee <> n.nspowner
    ),
    NULL, 'no role but its owner can create objects in schema pghub'
);

-- channel and notify are inlined (their point): no call to them is left in the plan.
CREATE TEMPORARY TABLE topics (t text);
CREATE FUNCTION pg_temp.plan_of(query text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    line text;
    plan text := '';
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (VERBOSE, COSTS OFF) ' || query LOOP
        plan := plan || line || E'\n';
    END LOOP;
    RETURN plan;
END
$$;
SELECT unalike(
    pg_temp.plan_of('SELECT pghub.channel(t) FROM pg_temp.topics'), '%pghub.channel%',
    'pghub.channel is inlined'
);
SELECT unalike(
    pg_temp.plan_of('SELECT pghub.notify(t, ''{1}'', ''{}'') FROM pg_temp.topics'),
    '%pghub.notify%', 'pghub.notify is inlined'
);

-- ==== A hostile search_path ====
-- Schema evil_tap holds, for each function and operator that pghub's code uses, one of the
-- same name that takes the same (or a closer) argument types, returns the right answer and
-- records that it ran. With evil_tap before pg_catalog in the search_path, any of them that
-- pghub resolved would win.
CREATE SCHEMA evil_tap;
CREATE TEMPORARY TABLE hijacked (what text);
DO $$
DECLARE
    f record;
    n integer := 0;
    args text;
BEGIN
    FOR f IN
        SELECT * FROM (
            VALUES
            ('lower', '{text}', 'text'),
            ('length', '{text}', 'integer'),
            ('left', '{text,integer}', 'text'),
            ('octet_length', '{text}', 'integer'),
            ('strpos', '{text,text}', 'integer'),
            ('replace', '{text,text,text}', 'text'),
            ('quote_ident', '{text}', 'text'),
            ('quote_ident', '{name}', 'text'),
            ('quote_literal', '{text}', 'text'),
            ('format', '{text,name,name}', 'text'),
            ('format', '{text,text}', 'text'),
            ('pg_notify', '{text,text}', 'void'),
            ('to_jsonb', '{anyelement}', 'jsonb'),
            ('array_to_string', '{bigint[],text}', 'text'),
            ('array_position', '{bigint[],bigint}', 'integer'),
            ('string_to_array', '{text,text}', 'text[]'),
            ('json_strip_nulls', '{json}', 'json'),
            ('set_config', '{text,text,boolean}', 'text'),
            ('current_setting', '{text,boolean}', 'text'),
            ('jsonb_build_object', '{text,text,text,text,text,bigint}', 'jsonb'),
            ('to_regclass', '{text}', 'regclass'),
            ('cardinality', '{anyarray}', 'integer'),
            ('pg_visible_in_snapshot', '{xid8,pg_snapshot}', 'boolean'),
            ('pg_snapshot_xmin', '{pg_snapshot}', 'xid8'),
            ('pg_snapshot_xmax', '{pg_snapshot}', 'xid8'),
            ('pg_current_snapshot', '{}', 'pg_snapshot'),
            ('pg_current_xact_id', '{}', 'xid8'),
            ('pg_current_xact_id_if_assigned', '{}', 'xid8'),
            ('pg_sequence_last_value', '{regclass}', 'bigint'),
            ('nextval', '{regclass}', 'bigint'),
            ('pg_has_role', '{oid,text}', 'boolean'),
            ('has_table_privilege', '{text,text}', 'boolean'),
            ('split_part', '{text,text,integer}', 'text'),
            ('current_setting', '{text}', 'text'),
            -- what the triggers' plain paths call
            ('jsonb_typeof', '{jsonb}', 'text'),
            ('ltrim', '{text,text}', 'text'),
            ('to_json', '{text}', 'json'),
            ('pg_my_temp_schema', '{}', 'oid')
        ) AS v (name, argtypes, result)
    LOOP
        SELECT string_agg(format('$%s', i), ', ') INTO args
        FROM generate_subscripts(f.argtypes::text [], 1) AS i;
        EXECUTE format(
            'CREATE FUNCTION evil_tap.%I(%s) RETURNS %s LANGUAGE plpgsql '
            'SET search_path = pg_catalog, pg_temp AS %L',
            f.name, array_to_string(f.argtypes::text [], ', '), f.result,
            format(
                'BEGIN INSERT INTO pg_temp.hijacked VALUES (%L); %s pg_catalog.%I(%s); %s END',
                f.name || f.argtypes, CASE WHEN f.result = 'void' THEN 'PERFORM' ELSE 'RETURN' END,
                f.name, args, CASE WHEN f.result = 'void' THEN 'RETURN;' ELSE '' END
            )
        );
    END LOOP;
    FOR f IN
        SELECT * FROM (
            VALUES
            ('!~', 'text', 'text', 'boolean'),
            ('~', 'text', 'text', 'boolean'),
            ('>=', 'integer', 'integer', 'boolean'),
            ('<=', 'integer', 'integer', 'boolean'),
            ('>', 'integer', 'integer', 'boolean'),
            ('=', 'text', 'text', 'boolean'),
            ('<>', 'text', 'text', 'boolean'),
            ('=', 'name', 'text', 'boolean'),
            ('||', 'text', 'text', 'text'),
            ('||', 'jsonb', 'jsonb', 'jsonb'),
            ('->>', 'jsonb', 'text', 'text'),
            ('->>', 'jsonb', 'name', 'text'),
            ('?', 'jsonb', 'text', 'boolean'),
            ('?', 'jsonb', 'name', 'boolean'),
            ('=', 'xid8', 'xid8', 'boolean'),
            ('>=', 'xid8', 'xid8', 'boolean'),
            ('<', 'xid8', 'xid8', 'boolean'),
            ('>', 'xid8', 'xid8', 'boolean'),
            ('<=', 'xid8', 'xid8', 'boolean'),
            ('<=', 'interval', 'interval', 'boolean'),
            ('<', 'timestamptz', 'timestamptz', 'boolean'),
            ('%', 'bigint', 'integer', 'bigint'),
            -- what the triggers' plain paths use
            ('->', 'jsonb', 'text', 'jsonb'),
            ('||', 'bigint[]', 'bigint', 'bigint[]'),
            ('||', 'bigint[]', 'bigint[]', 'bigint[]'),
            ('||', 'text', 'bigint', 'text'),
            ('||', 'text', 'integer', 'text'),
            ('<>', 'bigint[]', 'bigint[]', 'boolean'),
            ('<', 'bigint[]', 'bigint[]', 'boolean'),
            ('=', 'integer', 'integer', 'boolean'),
            ('-', 'integer', 'integer', 'integer'),
            ('=', 'oid', 'oid', 'boolean')
        ) AS v (op, l, r, result)
    LOOP
        n := n + 1;
        EXECUTE format(
            'CREATE FUNCTION evil_tap.op%s(a %s, b %s) RETURNS %s LANGUAGE plpgsql '
            'SET search_path = pg_catalog, pg_temp AS %L',
            n, f.l, f.r, f.result,
            format(
                'BEGIN INSERT INTO pg_temp.hijacked VALUES (%L); '
                'RETURN a OPERATOR(pg_catalog.%s) b::%s; END',
                f.l || ' ' || f.op || ' ' || f.r, f.op,
                CASE WHEN f.r = 'name' THEN 'text' ELSE f.r END
            )
        );
        EXECUTE format(
            'CREATE OPERATOR evil_tap.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = evil_tap.op%s)',
            f.op, f.l, f.r, n
        );
    END LOOP;
END
$$;
CREATE TABLE evil_tap.items (id bigint PRIMARY KEY, descr text);
CREATE TABLE evil_tap.notes (id bigint PRIMARY KEY, descr text);
-- A key column named +data: the trigger option's name, which must not be taken for it.
CREATE TABLE evil_tap.lines (
    id bigint PRIMARY KEY,
    "+data" bigint NOT NULL, -- noqa: RF05
    descr text
);

-- Every function, both triggers at both levels, under the hostile path.
SET LOCAL search_path = evil_tap, pg_catalog;
CREATE TEMPORARY TABLE hostile AS
SELECT
    pghub.channel('Orders') AS channel,
    pghub.encode('{1,2}', '{"a": "$", "b": null}') AS payload,
    (pghub.decode('e1,2:{"a":1}')).value AS decoded,
    pghub.key_columns('evil_tap.items') AS key_columns,
    pghub.publish_table('evil_tap.items') AS statement_channel,
    pghub.publish_table('evil_tap.lines', 'Lines', 'row', '{+data}', TRUE) AS row_channel;
SELECT pghub.notify('Orders', '{1}', '{"a": 1}');
INSERT INTO evil_tap.items VALUES (1, 'a'), (2, 'b');
UPDATE evil_tap.items SET descr = 'c';
DELETE FROM evil_tap.items;
-- One-row statements: the statement trigger's plain path.
INSERT INTO evil_tap.items VALUES (3, 'd');
UPDATE evil_tap.items SET id = 4;
DELETE FROM evil_tap.items;
TRUNCATE evil_tap.items;
INSERT INTO evil_tap.lines VALUES (1, 10, 'a');
UPDATE evil_tap.lines SET "+data" = 11; -- noqa: RF05
DELETE FROM evil_tap.lines;
TRUNCATE evil_tap.lines;
SELECT pghub.publish_table('evil_tap.lines', 'Lines', 'row');
-- The row trigger's plain path: each kind of event, a key changed.
INSERT INTO evil_tap.lines VALUES (2, 20, 'b');
UPDATE evil_tap.lines SET id = 3;
DELETE FROM evil_tap.lines;
CREATE TEMPORARY TABLE after_triggers AS
SELECT
    pg_catalog.current_setting('pghub.seq') AS seq,
    pghub.unpublish_table('evil_tap.items') AS dropped;
-- Durable topics: every function, the triggers, commit and tick mode, a row too large to NOTIFY.
CREATE TEMPORARY TABLE durable AS
SELECT
    pghub.make_durable('Kept', '1 day', 'commit') AS commit_channel,
    pghub.make_durable('Ticked', '1 day', 'tick') AS tick_channel,
    pghub.publish_table('evil_tap.notes', 'Kept', 'row', NULL, TRUE) AS row_channel,
    pghub.current_position() AS now_position;
SELECT pghub.notify('Kept', '{1}', '{"a": 1}');
SELECT pghub.notify('Ticked', '{2}', '{"b": 2}');
SELECT pghub.notify_encoded(ARRAY['Kept', 'Plain'], ARRAY['e4:{"c": "$"}', 'e5']);
INSERT INTO evil_tap.notes VALUES (3, repeat('x', 9000));
CREATE TEMPORARY TABLE durable_calls AS
SELECT
    (SELECT count(*) FROM pghub.read('Kept', 'earliest')) AS read_rows,
    pghub.consumer_position('evil', 'Kept', 'earliest') AS first_position;
SELECT pghub.ack('evil', 'Kept', pghub.current_position());
CREATE TEMPORARY TABLE durable_lists AS
SELECT
    (SELECT count(*) FROM pghub.durable_topics()) AS topics,
    (SELECT count(*) FROM pghub.durable_consumers()) AS consumers;
SELECT
    t.events,
    t.more
FROM pghub.tick() AS t;
SELECT
    p.emptied,
    p.events,
    p.rotated
FROM pghub.prune() AS p;
CREATE TEMPORARY TABLE journaled AS
SELECT
    k.payload,
    k.stand_in
FROM pghub.kept AS k;
CREATE TEMPORARY TABLE durable_after AS
SELECT
    pghub.drop_consumer('evil') AS consumers_dropped,
    pghub.make_transient('Kept') AS kept_transient,
    pghub.make_transient('Ticked') AS ticked_transient;
SET LOCAL search_path TO DEFAULT;

SELECT is(
    (SELECT array_agg(DISTINCT h.what ORDER BY h.what) FROM pg_temp.hijacked AS h),
    NULL, 'no function or operator of the hostile schema ran'
);
SELECT is((SELECT h.channel FROM pg_temp.hostile AS h), 'orders', 'channel');
SELECT is(
    (SELECT h.payload FROM pg_temp.hostile AS h), 'e1,2:{"a":"\u0024","b":null}', 'encode'
);
SELECT is((SELECT h.decoded FROM pg_temp.hostile AS h), '{"a": 1}'::jsonb, 'decode');
SELECT is((SELECT h.key_columns FROM pg_temp.hostile AS h), '{id}'::name[], 'key_columns');
SELECT is(
    (SELECT h.statement_channel FROM pg_temp.hostile AS h), 'items', 'publish_table, statement'
);
SELECT is((SELECT h.row_channel FROM pg_temp.hostile AS h), 'lines', 'publish_table, row');
-- 6 statement events, 1 truncate; row level: 3 rows, 1 truncate, then 3 rows.
SELECT is((SELECT a.seq FROM pg_temp.after_triggers AS a), '14', 'every trigger sent its event');
SELECT is((SELECT a.dropped FROM pg_temp.after_triggers AS a), 4, 'unpublish_table');
SELECT is(
    (SELECT ARRAY[d.commit_channel, d.tick_channel] FROM pg_temp.durable AS d),
    ARRAY['kept', 'ticked'], 'make_durable'
);
SELECT is(
    (
        SELECT array_agg(j.payload ORDER BY j.payload) FROM pg_temp.journaled AS j
        WHERE j.stand_in IS NULL
    ),
    ARRAY['e1:{"a":1}', 'e4:{"c":"\u0024"}'],
    'notify and notify_encoded journal a durable topic''s events'
);
SELECT is(
    (
        SELECT pghub.decode(j.stand_in) FROM pg_temp.journaled AS j
        WHERE j.stand_in IS NOT NULL
    ),
    row(
        '{3}'::bigint[],
        '{"op": "ins", "seq": 15, "table": "evil_tap.notes", "data_omitted": true}'::jsonb
    ),
    'the row trigger journals a row too large to NOTIFY whole, with its stand-in'
);
SELECT is(
    (SELECT c.first_position FROM pg_temp.durable_calls AS c), 'earliest',
    'consumer_position'
);
SELECT is(
    (SELECT ARRAY[c.topics, c.consumers] FROM pg_temp.durable_lists AS c), ARRAY[2::bigint, 1],
    'durable_topics and durable_consumers'
);
SELECT is(
    (
        SELECT ARRAY[a.consumers_dropped::text, a.kept_transient::text, a.ticked_transient::text]
        FROM pg_temp.durable_after AS a
    ),
    ARRAY['1', 'true', 'true'], 'drop_consumer and make_transient'
);
SELECT is(
    (
        SELECT t.tgargs FROM pg_trigger AS t
        WHERE t.tgrelid = 'evil_tap.lines'::regclass AND t.tgname = 'pghub_row'
    ),
    E'Lines\\000id\\000'::bytea,
    'republished without data: the topic and the primary key'
);

-- ==== The +data option and a key column named +data ====
SELECT lives_ok(
    $$SELECT pghub.publish_table('evil_tap.lines', 'Lines', 'row', '{+data}', TRUE)$$,
    'publish with data, keyed by a column named +data'
);
SELECT is(
    (
        SELECT t.tgargs FROM pg_trigger AS t
        WHERE t.tgrelid = 'evil_tap.lines'::regclass AND t.tgname = 'pghub_row'
    ),
    E'+data\\000Lines\\000+data\\000'::bytea,
    'the option goes before the topic, the key column after it'
);

SELECT finish();
ROLLBACK;
