-- pghub.notify: usable from every kind of SQL; refuses bad events with the documented
-- SQLSTATEs. (That nothing arrives after a refusal, and that sent events do arrive, is seen
-- from a second session: tests/python/test_pgtap.py.)
BEGIN;
SELECT plan(26);

SELECT lives_ok($$SELECT pghub.notify('t')$$, 'a topic alone');
SELECT lives_ok($$SELECT pghub.notify('T', '{1,2}')$$, 'a topic and a key');
SELECT lives_ok($$SELECT pghub.notify('t', NULL, '{"a": [1]}')$$, 'a topic and a value');
SELECT lives_ok($$SELECT pghub.notify('t', '{}', 'null')$$, 'an empty key and JSON null');
SELECT lives_ok(
    $$SELECT pghub.notify(topic => 'Orders', value => '"x"')$$, 'arguments by name'
);
SELECT lives_ok(
    $$SELECT pghub.notify('t', NULL, to_jsonb(repeat('x', 7995)))$$, 'a payload of 7999 bytes'
);
SELECT lives_ok(
    $q$DO $$ BEGIN PERFORM pghub.notify('t', '{1}'); END $$$q$, 'from a DO block'
);

CREATE PROCEDURE pg_temp.send(topic text) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pghub.notify(topic, '{1}', '{}');
END
$$;
SELECT lives_ok($$CALL pg_temp.send('t')$$, 'from a procedure');

CREATE TEMPORARY TABLE orders (id bigint, note text);
CREATE FUNCTION pg_temp.order_sent() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pghub.notify('orders', ARRAY[NEW.id], jsonb_build_object('note', NEW.note));
    RETURN NEW;
END
$$;
CREATE TRIGGER order_sent AFTER INSERT ON orders
FOR EACH ROW EXECUTE FUNCTION pg_temp.order_sent();
SELECT lives_ok(
    $$INSERT INTO orders SELECT i, 'n' || i FROM generate_series(1, 100) AS i$$,
    'from a row trigger, 100 rows'
);
SELECT throws_ok(
    $$INSERT INTO orders VALUES (NULL, 'x')$$, '22004',
    'invalid key: element key[1] is NULL', 'an error in a trigger aborts the insert'
);
SELECT is((SELECT count(*)::integer FROM orders), 100, 'the refused row was not inserted');

-- Refused.
SELECT throws_ok(
    $$SELECT pghub.notify('')$$, '22023', 'invalid topic "": a topic cannot be empty',
    'an empty topic'
);
SELECT throws_ok(
    $$SELECT pghub.notify('a-b', '{1}')$$, '22023',
    'invalid topic "a-b": bad character "-" at position 2', 'a bad character'
);
SELECT throws_ok(
    $$SELECT pghub.notify(repeat('t', 64))$$, '22023',
    format('invalid topic "%s": too long, 64 characters (at most 63)', repeat('t', 64)),
    'a topic of 64 characters'
);
SELECT throws_ok(
    $$SELECT pghub.notify(NULL, '{1}')$$, '22023', 'invalid topic: NULL', 'a NULL topic'
);
SELECT throws_ok(
    $$SELECT pghub.notify('t', '{1,NULL}')$$, '22004', 'invalid key: element key[2] is NULL',
    'a NULL key element'
);
SELECT throws_ok(
    $$SELECT pghub.notify('t', '{{1},{2}}')$$, '2202E',
    'invalid key: an array of 2 dimensions, a key has one', 'a key of two dimensions'
);
SELECT throws_ok(
    $$SELECT pghub.notify('t', NULL, to_jsonb(repeat('x', 7996)))$$, '54000',
    'payload too large: 8000 bytes, the limit is 7999', 'a payload of 8000 bytes'
);
SELECT throws_ok(
    $$SELECT pghub.notify('t', '{1}', to_jsonb(repeat('€', 3000)))$$, '54000',
    'payload too large: 9005 bytes, the limit is 7999', 'the size in bytes of UTF-8'
);
SELECT throws_ok(
    $$SELECT pghub.notify('a-b', '{NULL}', to_jsonb(repeat('x', 8000)))$$, '22023', NULL,
    'the topic is checked first'
);
SELECT throws_ok(
    $$SELECT pghub.notify('t', '{NULL}', to_jsonb(repeat('x', 8000)))$$, '22004', NULL,
    'the key before the size'
);

-- Properties.
SELECT function_returns(
    'pghub', 'notify', ARRAY['text', 'bigint[]', 'jsonb'], 'void', 'notify returns void'
);
SELECT volatility_is(
    'pghub', 'notify', ARRAY['text', 'bigint[]', 'jsonb'], 'volatile', 'notify is VOLATILE'
);
SELECT is(
    (
        SELECT proparallel FROM pg_proc
        WHERE oid = 'pghub.notify(text, bigint[], jsonb)'::regprocedure
    ),
    'u', 'notify is PARALLEL UNSAFE'
);
SELECT isnt_strict(
    'pghub', 'notify', ARRAY['text', 'bigint[]', 'jsonb'], 'notify takes NULL key and value'
);
CREATE TEMPORARY TABLE events (event_topic text, event_key bigint[], event_value jsonb);
CREATE FUNCTION pg_temp.plan_of(query text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    line text;
    plan text := '';
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (VERBOSE) ' || query LOOP
        plan := plan || line || E'\n';
    END LOOP;
    RETURN plan;
END
$$;
SELECT matches(
    pg_temp.plan_of(
        'SELECT pghub.notify(event_topic, event_key, event_value) FROM events'
    ),
    'Output: CASE WHEN \(to_regclass\(.* THEN pg_notify\(lower\(',
    'the planner inlines notify: the plan checks for a durable topic and calls pg_notify itself'
);

SELECT finish();
ROLLBACK;
