-- Durable topics (docs/durable.md) as one session sees them: declarations, argument checks and
-- their SQLSTATEs, what pghub.notify and the triggers journal, inside a transaction and its
-- savepoints. What takes several sessions (snapshots, commit order, prune, GAP, LISTEN) is in
-- tests/python/test_durable.py.
BEGIN;
SELECT plan(59);

-- ==== Declarations ====
CREATE TEMPORARY TABLE durable_api (signature regprocedure);
INSERT INTO durable_api VALUES
('pghub.make_durable(text, interval, text)'),
('pghub.make_transient(text)'),
('pghub.current_position()'),
('pghub.consumer_position(text, text, text)'),
('pghub.ack(text, text, text)'),
('pghub.drop_consumer(text, text)'),
('pghub.read(text, text, integer)'),
('pghub.tick(integer)'),
('pghub.prune(interval)'),
('pghub.durable_topics()'),
('pghub.durable_consumers()'),
('pghub._position(text)'),
('pghub._snapshot_now()'),
('pghub._journal(text, bigint[], jsonb, jsonb)'),
('pghub.notify_encoded(text[], text[])'),
('pghub._journal_encoded(text, text)'),
('pghub._refuse_payload(text)'),
('pghub._sync_marker(text)'),
('pghub._durable_topic(text)'),
('pghub._consumer_name(text)'),
('pghub._gap(integer, pg_snapshot, pg_snapshot, boolean)'),
('pghub._batch(integer[], boolean, pg_snapshot, pg_snapshot, xid8, bigint, integer)'),
('pghub._removable(integer)');
SELECT is(
    (
        SELECT array_agg(d.signature::text ORDER BY d.signature::text) FROM durable_api AS d
        WHERE coalesce(obj_description(d.signature, 'pg_proc'), '') = ''
    ),
    NULL, 'every durable-topic function has a comment'
);
SELECT is(
    pg_get_function_arguments('pghub.make_durable(text, interval, text)'::regprocedure),
    'topic text, retain interval DEFAULT ''7 days''::interval, wake text DEFAULT ''commit''::text',
    'make_durable: retain 7 days and wake commit by default'
);
SELECT is(
    (
        SELECT array_agg(c.relname::text ORDER BY c.relname::text) FROM pg_class AS c
        WHERE
            c.relnamespace = 'pghub'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'p')
            AND c.relname !~ '[$]'
    ),
    NULL, 'every relation of schema pghub has a $ in its name (no channel has one)'
);

-- ==== make_durable and make_transient ====
SELECT throws_ok($$SELECT pghub.make_durable('a-b')$$, '22023', NULL, 'bad topic');
SELECT throws_ok($$SELECT pghub.make_durable(NULL)$$, '22023', NULL, 'NULL topic');
SELECT throws_ok($$SELECT pghub.make_durable('t', '0 s')$$, '22023', NULL, 'retain 0');
SELECT throws_ok($$SELECT pghub.make_durable('t', '-1 day')$$, '22023', NULL, 'negative retain');
SELECT throws_ok($$SELECT pghub.make_durable('t', NULL)$$, '22023', NULL, 'NULL retain');
SELECT throws_ok($$SELECT pghub.make_durable('t', wake => 'push')$$, '22023', NULL, 'bad wake');
SELECT is(pghub.make_durable('Kept', '1 hour'), 'kept', 'make_durable returns the channel');
SELECT is(
    pghub.make_durable('Ticked', '2 hours', 'tick'), 'ticked', 'a topic in tick mode'
);
SELECT is(
    (
        SELECT d.retain FROM pghub.durable$topic AS d
        WHERE d.channel = 'kept'
    ), '1 hour'::interval,
    'the retention is recorded'
);
CREATE TEMPORARY TABLE kept_id AS
SELECT d.id FROM pghub.durable$topic AS d
WHERE d.channel = 'kept';
SELECT is(
    pghub.make_durable('kept', '3 hours', 'commit'), 'kept', 'make_durable again changes it'
);
SELECT is(
    (
        SELECT ARRAY[d.id::text, d.retain::text] FROM pghub.durable$topic AS d
        WHERE d.channel = 'kept'
    ),
    ARRAY[(SELECT k.id::text FROM kept_id AS k), '03:00:00'],
    'same topic, new retention'
);
SELECT is(to_regclass('pghub.kept')::text, 'pghub.kept', 'the topic''s view exists');

-- ==== What notify journals ====
SELECT pghub.notify('Kept', '{1,2}', '{"a": "$", "b": null}');
SELECT is(
    (SELECT array_agg(k.payload) FROM pghub.kept AS k),
    ARRAY[pghub.encode('{1,2}', '{"a": "$", "b": null}')],
    'notify on a durable topic journals the payload encode writes'
);
SELECT is(
    (SELECT array_agg(j.announce::text) FROM pghub.journal$all AS j),
    ARRAY['n'], 'commit mode: NOTIFYed at commit'
);
SELECT is(
    (SELECT j.txid FROM pghub.journal$all AS j), pg_current_xact_id(),
    'the event carries its transaction''s id'
);
SELECT pghub.notify('ticked', '{3}');
SELECT is(
    (
        SELECT array_agg(j.announce::text) FROM pghub.journal$all AS j
        INNER JOIN pghub.durable$topic AS d ON j.topic = d.id
        WHERE d.channel = 'ticked'
    ),
    ARRAY['t'], 'tick mode: left to pghub.tick()'
);
SELECT lives_ok(
    $$SELECT pghub.notify('kept', '{4}', to_jsonb(repeat('x', 20000)))$$,
    'an event over 7999 bytes on a durable topic is not refused'
);
SELECT is(
    (
        SELECT ARRAY[k.payload, k.stand_in] FROM pghub.kept AS k
        WHERE k.payload LIKE 'e4:%'
    ),
    ARRAY['e4:"' || repeat('x', 20000) || '"', NULL],
    'it is journaled whole, with no stand-in'
);
SELECT is(
    (
        SELECT j.announce::text FROM pghub.journal$all AS j
        WHERE j.payload LIKE 'e4:%'
    ), 'w',
    'and announced by a wake-up'
);
SELECT throws_ok(
    $$SELECT pghub.notify('plain', '{4}', to_jsonb(repeat('x', 20000)))$$, '54000', NULL,
    'on a plain topic it is still refused'
);
SELECT throws_ok(
    $$SELECT pghub.notify('kept', '{1,NULL}')$$, '22004', NULL,
    'a NULL key element is refused on a durable topic too'
);
-- A PL/pgSQL block with an exception handler is a savepoint; the exception rolls it back.
DO $$
BEGIN
    PERFORM pghub.notify('kept', '{5}');
    RAISE EXCEPTION 'roll the savepoint back';
EXCEPTION WHEN raise_exception THEN
    NULL;
END
$$;
SELECT is(
    (
        SELECT count(*)::integer FROM pghub.kept AS k
        WHERE k.payload = 'e5'
    ), 0,
    'a rolled-back savepoint journals nothing'
);
SELECT pghub.notify('kept', '{-9223372036854775808,0}', '{"é": [1.50, null, "\u0001"], "$": {}}');
SELECT is(
    (
        SELECT k.payload FROM pghub.kept AS k
        WHERE k.payload LIKE 'e-9223372036854775808,0:%'
    ),
    pghub.encode('{-9223372036854775808,0}', '{"é": [1.50, null, "\u0001"], "$": {}}'),
    'the journal holds what encode writes'
);

-- ==== notify_encoded: payloads encoded by the client (the Python hub, sql_notify) ====
SELECT pghub.make_durable('encoded');
SELECT lives_ok(
    $$SELECT pghub.notify_encoded(ARRAY['Encoded', 'encoded', 'plain'],
        ARRAY['e1:{"b": 1, "a": "$"}', 'e2:"' || repeat('z', 9000) || '"', 'e3'])$$,
    'notify_encoded sends to durable and plain topics in one call'
);
SELECT is(
    (SELECT array_agg(e.payload ORDER BY e.id) FROM pghub.encoded AS e),
    ARRAY['e1:{"a":"\u0024","b":1}', 'e2:"' || repeat('z', 9000) || '"'],
    'it journals what encode writes for the payload''s event, of any size'
);
SELECT is(
    (
        SELECT array_agg(j.announce::text ORDER BY j.id) FROM pghub.journal$all AS j
        INNER JOIN pghub.durable$topic AS d ON j.topic = d.id
        WHERE d.channel = 'encoded'
    ),
    ARRAY['n', 'w'], 'NOTIFYed at commit if it fits, else a wake-up'
);
SELECT throws_ok(
    $$SELECT pghub.notify_encoded(ARRAY['encoded'], ARRAY['e01'])$$, '22P02', NULL,
    'a payload decode refuses is refused on a durable topic'
);
SELECT throws_ok(
    $$SELECT pghub.notify_encoded(ARRAY['plain'], ARRAY['e' || repeat('1', 8000)])$$, '54000',
    NULL, 'over 7999 bytes on a plain topic: refused'
);
SELECT throws_ok(
    $$SELECT pghub.notify_encoded(ARRAY['plain'], ARRAY[NULL])$$, '22004', NULL,
    'a NULL payload is refused'
);
SELECT throws_ok(
    $$SELECT pghub.notify_encoded(ARRAY['plain', 'plain'], ARRAY['e1'])$$, '22023', NULL,
    'arrays of different lengths are refused'
);

-- ==== The triggers ====
CREATE TABLE pg_temp.rows (id bigint PRIMARY KEY, body text);
SELECT pghub.publish_table('pg_temp.rows', 'kept', 'row', NULL, TRUE);
INSERT INTO pg_temp.rows VALUES (10, 'small'), (11, repeat('y', 9000));
CREATE TEMPORARY TABLE rows_table AS
SELECT format('%I.rows', pg_my_temp_schema()::regnamespace) AS table_name;
SELECT is(
    (
        SELECT array_agg(d.value ORDER BY k.id)
        FROM pghub.kept AS k CROSS JOIN LATERAL pghub.decode(k.payload) AS d
        WHERE k.payload LIKE 'e1_:%'
    ),
    ARRAY[
        jsonb_build_object(
            'op', 'ins', 'seq', 1, 'table', (SELECT t.table_name FROM rows_table AS t),
            'data', jsonb_build_object('id', 10, 'body', 'small')
        ),
        jsonb_build_object(
            'op', 'ins', 'seq', 2, 'table', (SELECT t.table_name FROM rows_table AS t),
            'data', jsonb_build_object('id', 11, 'body', repeat('y', 9000))
        )
    ],
    'the row trigger journals each row whole, with its data'
);
SELECT is(
    (
        SELECT d.value
        FROM pghub.kept AS k CROSS JOIN LATERAL pghub.decode(k.stand_in) AS d
        WHERE k.payload LIKE 'e11:%'
    ),
    jsonb_build_object(
        'op', 'ins', 'seq', 2, 'table', (SELECT t.table_name FROM rows_table AS t),
        'data_omitted', TRUE
    ),
    'a row too large to NOTIFY keeps its stand-in for listeners of the channel'
);
SELECT pghub.publish_table('pg_temp.rows', 'kept');
UPDATE pg_temp.rows SET body = 'z';
SELECT is(
    (
        SELECT (pghub.decode(k.payload)).value ->> 'op' FROM pghub.kept AS k
        WHERE k.payload LIKE 'e10,11:%'
    ),
    'upd', 'the statement trigger journals its events'
);

-- ==== Positions ====
SELECT throws_ok($$SELECT pghub._position('now')$$, '22P02', NULL, '"now" is not a position');
SELECT throws_ok($$SELECT pghub._position('5:3:')$$, '22P02', NULL, 'xmin after xmax');
SELECT throws_ok(
    $$SELECT pghub._position('10:20:/5:9:/1.1')$$, '22P02', NULL,
    'a batch that ends before it starts'
);
SELECT throws_ok($$SELECT pghub._position(NULL)$$, '22004', NULL, 'NULL position');
SELECT is(
    (SELECT p.prev::text FROM pghub._position('earliest') AS p), '1:1:',
    'earliest is the snapshot before any transaction'
);
SELECT is(
    (
        SELECT ARRAY[p.prev::text, p.cur::text, p.last_txid::text, p.last_id::text]
        FROM pghub._position('10:20:12,15/12:30:/15.7') AS p
    ),
    ARRAY['10:20:12,15', '12:30:', '15', '7'], 'a position in the middle of a batch'
);
SELECT ok(
    NOT pg_visible_in_snapshot(pg_current_xact_id(), pghub.current_position()::pg_snapshot),
    'current_position counts this transaction as not yet visible'
);

-- ==== read, consumers, tick and prune: arguments ====
SELECT throws_ok($$SELECT * FROM pghub.read('kept', 'earliest', 0)$$, '22023', NULL, 'max 0');
SELECT throws_ok($$SELECT * FROM pghub.read('plain', 'earliest')$$, '55000', NULL, 'not durable');
SELECT throws_ok($$SELECT * FROM pghub.read('kept', 'x')$$, '22P02', NULL, 'bad since');
SELECT is(
    (
        SELECT count(*)::integer FROM pghub.read('kept', 'earliest') AS r
        WHERE r.payload IS NOT NULL
    ),
    0, 'a read sees no event of its own, uncommitted transaction'
);
SELECT throws_ok(
    $$SELECT pghub.consumer_position(NULL, 'kept')$$, '22004', NULL, 'NULL consumer'
);
SELECT throws_ok(
    $$SELECT pghub.consumer_position('', 'kept')$$, '22023', NULL, 'empty consumer name'
);
SELECT throws_ok(
    $$SELECT pghub.consumer_position('c', 'plain')$$, '55000', NULL, 'consumer of a plain topic'
);
SELECT is(pghub.consumer_position('c', 'kept', 'earliest'), 'earliest', 'a new consumer');
SELECT is(
    pghub.consumer_position('c', 'kept', 'now'), 'earliest', 'since only applies to a new one'
);
SELECT throws_ok($$SELECT pghub.ack('d', 'kept', 'earliest')$$, '42704', NULL, 'no consumer d');
SELECT throws_ok($$SELECT pghub.ack('c', 'kept', 'later')$$, '22P02', NULL, 'bad position');
SELECT throws_ok($$SELECT * FROM pghub.tick(0)$$, '22023', NULL, 'tick: max 0');
SELECT throws_ok($$SELECT * FROM pghub.prune('-1 s')$$, '22023', NULL, 'prune: negative wait');

-- ==== make_transient ====
SELECT is(pghub.make_transient('KEPT'), TRUE, 'make_transient');
SELECT is(pghub.make_transient('kept'), FALSE, 'make_transient of a plain topic');
SELECT is(to_regclass('pghub.kept'), NULL, 'its view is gone');

SELECT finish();
ROLLBACK;
