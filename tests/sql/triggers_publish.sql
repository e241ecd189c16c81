-- pghub.publish_table, unpublish_table, key_columns and the two trigger functions: the
-- triggers they make, idempotence, and every refusal with its SQLSTATE. (What the events carry
-- is seen from a listening session: tests/python/test_triggers.py and test_dual_cache.py.)
BEGIN;
SELECT plan(39);

CREATE TABLE items (id bigint PRIMARY KEY, title text NOT NULL);
CREATE TABLE order_lines (item int NOT NULL, region smallint NOT NULL, PRIMARY KEY (region, item));
CREATE TABLE nopk (a int, b text NOT NULL, c numeric NOT NULL, d int NOT NULL);
CREATE TABLE "Odd-Name" (id int PRIMARY KEY); -- noqa: RF05
CREATE VIEW a_view AS SELECT 1 AS id;
CREATE DOMAIN small_id AS smallint;
CREATE TABLE by_domain (id small_id PRIMARY KEY);

-- key_columns: the primary key in index order, or the columns given, in their order.
SELECT is(pghub.key_columns('items'), '{id}'::name[], 'a primary key');
SELECT is(pghub.key_columns('order_lines'), '{region,item}'::name[], 'index order');
SELECT is(pghub.key_columns('order_lines', '{item,region}'), '{item,region}'::name[], 'as given');
SELECT is(pghub.key_columns('nopk', '{d}'), '{d}'::name[], 'a column of a table with no key');
SELECT is(pghub.key_columns('by_domain'), '{id}'::name[], 'a domain over smallint');
SELECT throws_ok($$SELECT pghub.key_columns('nopk')$$, '55000', NULL, 'no primary key');
SELECT throws_ok($$SELECT pghub.key_columns('nopk', '{}')$$, '55000', NULL, 'empty columns');
SELECT throws_ok($$SELECT pghub.key_columns('nopk', '{zz}')$$, '42703', NULL, 'no column');
SELECT throws_ok($$SELECT pghub.key_columns('nopk', '{ctid}')$$, '42703', NULL, 'system column');
SELECT throws_ok($$SELECT pghub.key_columns('nopk', '{c}')$$, '42804', NULL, 'numeric');
SELECT throws_ok($$SELECT pghub.key_columns('nopk', '{d,b}')$$, '42804', NULL, 'text');
SELECT throws_ok($$SELECT pghub.key_columns('nopk', '{d,a}')$$, '55000', NULL, 'nullable');
SELECT throws_ok($$SELECT pghub.key_columns('nopk', '{d,d}')$$, '42701', NULL, 'twice');
SELECT throws_ok($$SELECT pghub.key_columns(NULL)$$, '22004', NULL, 'a NULL table');

-- publish_table: the triggers, the returned channel, idempotence.
SELECT is(pghub.publish_table('items'), 'items', 'returns the channel');
SELECT bag_eq(
    $$SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'items'::regclass$$,
    ARRAY['pghub_ins', 'pghub_upd', 'pghub_del', 'pghub_tru'],
    'per statement: one trigger per event and one for TRUNCATE'
);
SELECT
    is(
        pg_get_triggerdef(oid),
        'CREATE TRIGGER pghub_upd AFTER UPDATE ON public.items REFERENCING OLD TABLE AS pghub_old '
        || 'NEW TABLE AS pghub_new FOR EACH STATEMENT EXECUTE FUNCTION '
        || 'pghub.statement_trigger(''+checked'', ''items'', ''id'')',
        'the UPDATE trigger and its transition tables'
    )
FROM pg_trigger
WHERE tgrelid = 'items'::regclass AND tgname = 'pghub_upd';
SELECT is(pghub.publish_table('items'), 'items', 'publish again');
SELECT is(
    (
        SELECT count(*) FROM pg_trigger
        WHERE tgrelid = 'items'::regclass
    ), 4::bigint,
    'publishing again replaces, does not add'
);
SELECT is(
    pghub.publish_table('order_lines', 'Line_Events', 'row', '{item}', TRUE), 'line_events',
    'per row, a topic, key columns and data'
);
SELECT
    is(
        pg_get_triggerdef(oid),
        'CREATE TRIGGER pghub_row AFTER INSERT OR DELETE OR UPDATE ON public.order_lines '
        || 'FOR EACH ROW EXECUTE FUNCTION pghub.row_trigger(''+data'', ''Line_Events'', ''item'')',
        'the row trigger and its arguments'
    )
FROM pg_trigger
WHERE tgrelid = 'order_lines'::regclass AND tgname = 'pghub_row';
SELECT is(pghub.publish_table('"Odd-Name"', 'odd'), 'odd', 'a table whose name is no topic');

-- Writes through the triggers: big statements and big rows never fail the write.
SELECT lives_ok(
    $$INSERT INTO items SELECT g, repeat('x', 10) FROM generate_series(1, 5000) AS g$$,
    'a 5,000-row statement'
);
SELECT lives_ok($$UPDATE items SET id = -id$$, '5,000 keys changed: 10,000 keys');
SELECT lives_ok($$DELETE FROM items WHERE false$$, 'a statement that touches nothing');
SELECT lives_ok($$TRUNCATE items$$, 'TRUNCATE');
SELECT lives_ok(
    $$INSERT INTO order_lines SELECT g, 1 FROM generate_series(1, 300) AS g$$, '300 rows, per row'
);
SELECT lives_ok(
    $$ALTER TABLE order_lines ADD COLUMN body text;
      INSERT INTO order_lines VALUES (0, 2, repeat('y', 100000))$$,
    'a 100 KB row published with data'
);

-- unpublish_table: every pghub trigger, however made; no other; idempotent.
CREATE FUNCTION pg_temp.audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN NULL;
END
$$;
CREATE TRIGGER audit AFTER INSERT ON items FOR EACH ROW EXECUTE FUNCTION pg_temp.audit();
CREATE TRIGGER by_hand AFTER DELETE ON items
FOR EACH ROW EXECUTE FUNCTION pghub.row_trigger('items');
SELECT is(pghub.unpublish_table('items'), 5, 'drops the four and the one made by hand');
SELECT is(pghub.unpublish_table('items'), 0, 'then there is nothing to drop');
SELECT is(
    (
        SELECT array_agg(tgname::text) FROM pg_trigger
        WHERE tgrelid = 'items'::regclass
    ),
    ARRAY['audit'], 'other triggers stay'
);

-- publish_table refusals; nothing is created.
SELECT throws_ok($$SELECT pghub.publish_table('nopk')$$, '55000', NULL, 'publish: no key');
SELECT throws_ok($$SELECT pghub.publish_table('items', 'a-b')$$, '22023', NULL, 'bad topic');
SELECT throws_ok($$SELECT pghub.publish_table('"Odd-Name"')$$, '22023', NULL, 'name no topic');
SELECT throws_ok(
    $$SELECT pghub.publish_table('items', level => 'each')$$, '22023', NULL, 'bad level'
);
SELECT throws_ok(
    $$SELECT pghub.publish_table('items', with_data => TRUE)$$, '22023', NULL, 'data per statement'
);
SELECT throws_ok($$SELECT pghub.publish_table('a_view')$$, '42809', NULL, 'a view');
SELECT is(
    (
        SELECT count(*) FROM pg_trigger
        WHERE tgrelid = 'items'::regclass
    ), 1::bigint,
    'refused publishes left nothing behind'
);

-- Trigger functions used wrongly stop the write (39P01).
CREATE TRIGGER wrong AFTER INSERT ON nopk
FOR EACH STATEMENT EXECUTE FUNCTION pghub.statement_trigger('nopk', 'd');
SELECT throws_ok(
    $$INSERT INTO nopk VALUES (1, 'b', 1, 1)$$, '39P01', NULL, 'no transition table'
);

SELECT finish();
ROLLBACK;
