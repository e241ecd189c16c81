-- The core functions as the catalog shows them: present, commented, usable by any role.
BEGIN;
SELECT plan(24);

SELECT has_schema('pghub', 'schema pghub exists');
SELECT is(pghub.version(), '0.3', 'version() is 0.3');
SELECT is(
    pghub.version(),
    coalesce((
        SELECT extversion FROM pg_extension
        WHERE extname = 'pghub'
    ), pghub.version()),
    'version() matches the installed extension version'
);

CREATE TEMPORARY TABLE core (signature regprocedure);
INSERT INTO core VALUES
('pghub.version()'),
('pghub.channel(text)'),
('pghub._topic_fault(text)'),
('pghub.encode(bigint[], jsonb)'),
('pghub.decode(text)'),
('pghub._payload_fault(text)'),
('pghub.notify(text, bigint[], jsonb)');

SELECT is(
    (
        SELECT array_agg(c.signature::text ORDER BY c.signature::text) FROM core AS c
        WHERE coalesce(obj_description(c.signature, 'pg_proc'), '') = ''
    ),
    NULL, 'every core function has a comment'
);
SELECT is(
    (
        SELECT array_agg(c.signature::text ORDER BY c.signature::text)
        FROM core AS c INNER JOIN pg_proc AS p ON c.signature = p.oid
        WHERE p.prosecdef OR (p.proname IN ('channel', 'notify') AND p.proconfig IS NOT NULL)
    ),
    NULL,
    'no core function is SECURITY DEFINER; channel and notify set no configuration (inlined)'
);

SELECT function_returns('pghub', 'version', 'text', 'version returns text');
SELECT function_returns('pghub', 'channel', ARRAY['text'], 'text', 'channel returns text');
SELECT function_returns(
    'pghub', 'encode', ARRAY['bigint[]', 'jsonb'], 'text', 'encode returns text'
);
SELECT function_returns('pghub', 'decode', ARRAY['text'], 'record', 'decode returns a record');
SELECT is(
    pg_get_function_arguments('pghub.decode(text)'::regprocedure),
    'payload text, OUT key bigint[], OUT value jsonb', 'decode has OUT key and value'
);
SELECT is(
    pg_get_function_arguments('pghub.encode(bigint[], jsonb)'::regprocedure),
    'key bigint[] DEFAULT NULL::bigint[], value jsonb DEFAULT NULL::jsonb',
    'encode has NULL defaults'
);
SELECT is(
    pg_get_function_arguments('pghub.notify(text, bigint[], jsonb)'::regprocedure),
    'topic text, key bigint[] DEFAULT NULL::bigint[], value jsonb DEFAULT NULL::jsonb',
    'notify has NULL defaults'
);

-- A role that can connect and nothing more uses every function.
CREATE ROLE pghub_tap_plain_role NOLOGIN;
SELECT ok(
    has_schema_privilege('pghub_tap_plain_role', 'pghub', 'USAGE'),
    'any role has USAGE on schema pghub'
);
SELECT is(
    (
        SELECT array_agg(c.signature::text) FROM core AS c
        WHERE NOT has_function_privilege('pghub_tap_plain_role', c.signature, 'EXECUTE')
    ),
    NULL, 'any role can execute every core function'
);
SET LOCAL ROLE pghub_tap_plain_role;
SELECT is(current_user, 'pghub_tap_plain_role', 'running as the plain role');
SELECT is(pghub.channel('Orders'), 'orders', 'channel as a plain role');
SELECT is(pghub.encode('{1}', '{"a":1}'), 'e1:{"a":1}', 'encode as a plain role');
SELECT is(
    (SELECT d.key FROM pghub.decode('e1:{"a":1}') AS d), '{1}'::bigint[],
    'decode as a plain role'
);
SELECT lives_ok($$SELECT pghub.notify('Orders', '{1}', '{}')$$, 'notify as a plain role');
SELECT throws_ok(
    $$SELECT pghub.notify('a b')$$, '22023', NULL, 'errors as a plain role'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e-0')$$, '22P02', NULL, 'decode errors as a plain role'
);
RESET ROLE;

-- CREATE OR REPLACE leaves one of each (no stray overloads); no C anywhere.
SELECT is(
    (
        SELECT count(*)::integer FROM pg_proc
        WHERE pronamespace = 'pghub'::regnamespace AND proname IN (
            'version', 'channel', '_topic_fault', 'encode', 'decode', '_payload_fault', 'notify'
        )
    ),
    7, 'exactly one of each core function (no stray overloads)'
);
SELECT is(
    (
        SELECT count(*)::integer FROM pg_proc AS p
        WHERE
            p.pronamespace = 'pghub'::regnamespace
            AND p.proname IN ('channel', 'encode', 'decode', 'notify')
            AND p.prolang NOT IN (
                SELECT l.oid FROM pg_language AS l
                WHERE l.lanname IN ('sql', 'plpgsql')
            )
    ),
    0, 'pure SQL and PL/pgSQL (no C)'
);
SELECT is(current_user, session_user, 'back to the session role');

SELECT finish();
ROLLBACK;
