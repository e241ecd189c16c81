-- pghub.channel: topic rules and channel folding (WIRE.md "Topic and channel").
BEGIN;
SELECT plan(25);

SELECT is(pghub.channel('orders'), 'orders', 'a lower-case topic is its own channel');
SELECT is(pghub.channel('Orders'), 'orders', 'A-Z fold to a-z');
SELECT is(pghub.channel('ORDERS_2024'), 'orders_2024', 'digits and _ are kept');
SELECT is(pghub.channel('select'), 'select', 'a reserved word is a valid topic');
SELECT is(pghub.channel('user'), 'user', 'user is a valid topic');
SELECT is(pghub.channel('9lives'), '9lives', 'a leading digit is valid');
SELECT is(pghub.channel('_'), '_', 'one character is enough');
SELECT is(
    pghub.channel(repeat('Ab', 31) || 'Z'), repeat('ab', 31) || 'z',
    '63 characters are allowed'
);
SELECT is(pghub.channel(NULL), NULL, 'NULL gives NULL');
-- ICU's Turkish collation (PostgreSQL imports it at initdb when built with ICU).
SELECT is(
    lower('I' COLLATE "tr-TR-x-icu"), 'ı', -- noqa: RF05
    'lower() in Turkish gives a dotless i'
);
SELECT is(
    pghub.channel('I' COLLATE "tr-TR-x-icu"), 'i', -- noqa: RF05
    'channel folds ASCII whatever the collation'
);

SELECT throws_ok(
    $$SELECT pghub.channel('')$$, '22023',
    'invalid topic "": a topic cannot be empty', 'an empty topic is refused'
);
SELECT throws_ok(
    $$SELECT pghub.channel(repeat('t', 64))$$, '22023',
    format('invalid topic "%s": too long, 64 characters (at most 63)', repeat('t', 64)),
    '64 characters are refused, with the length'
);
SELECT throws_ok(
    $$SELECT pghub.channel('order-lines')$$, '22023',
    'invalid topic "order-lines": bad character "-" at position 6',
    'a hyphen is refused, with its position'
);
SELECT throws_ok(
    $$SELECT pghub.channel('a b')$$, '22023',
    'invalid topic "a b": bad character " " at position 2', 'a space is refused'
);
SELECT throws_ok(
    $$SELECT pghub.channel('café')$$, '22023',
    'invalid topic "café": bad character "é" at position 4', 'non-ASCII letters are refused'
);
SELECT throws_ok(
    $$SELECT pghub.channel('"Orders"')$$, '22023',
    'invalid topic ""Orders"": bad character "\"" at position 1', 'quotes are refused'
);
SELECT throws_ok(
    $$SELECT pghub.channel('public.orders')$$, '22023', NULL, 'a dot is refused'
);
SELECT throws_ok(
    $$SELECT pghub.channel(E'tab\there')$$, '22023',
    'invalid topic "tab	here": bad character "\t" at position 4', 'a control character is refused'
);
SELECT throws_ok(
    $$SELECT pghub.channel(repeat('x', 200) || '-')$$, '22023',
    format('invalid topic "%s...": bad character "-" at position 201', repeat('x', 100)),
    'a long topic is cut short in the message'
);

SELECT volatility_is('pghub', 'channel', ARRAY['text'], 'immutable', 'channel is IMMUTABLE');
SELECT is(
    (
        SELECT proparallel FROM pg_proc
        WHERE oid = 'pghub.channel(text)'::regprocedure
    ),
    's', 'channel is PARALLEL SAFE'
);
SELECT function_lang_is(
    'pghub', 'channel', ARRAY['text'], 'sql', 'channel is LANGUAGE sql (inlined by the planner)'
);
SELECT throws_ok(
    $$SELECT pghub._topic_fault(NULL)$$, '22023', 'invalid topic: NULL',
    '_topic_fault refuses NULL (for notify)'
);

-- Inlined: the plan shows the body, not a call of pghub.channel (which would cost a call).
CREATE TEMPORARY TABLE topics (topic text);
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
SELECT unalike(
    pg_temp.plan_of('SELECT pghub.channel(topic) FROM topics'), '%pghub.channel%',
    'the planner inlines channel'
);

SELECT finish();
ROLLBACK;
