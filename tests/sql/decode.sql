-- pghub.decode: the strict decoder; every rejected form of WIRE.md with its byte offset.
BEGIN;
SELECT plan(67);

CREATE FUNCTION pg_temp.decoded(payload text) RETURNS text
LANGUAGE sql AS $$
    SELECT format('%s %s', d.key, coalesce(d.value::text, 'NULL'))
    FROM pghub.decode(payload) AS d
$$;

-- What every encoder writes reads back.
SELECT is(pg_temp.decoded('e'), '{} NULL', 'no key, no value: an empty key and NULL');
SELECT is(pg_temp.decoded('e1,2,3,4'), '{1,2,3,4} NULL', 'a key, no value');
SELECT is(pg_temp.decoded('e5:{}'), '{5} {}', 'a key and an empty object');
SELECT is(
    pg_temp.decoded('e:{"a":2,"b":{"d":1,"e":"\u0024\u0024"}}'),
    '{} {"a": 2, "b": {"d": 1, "e": "$$"}}', '\u0024 reads back as $'
);
SELECT is(
    pg_temp.decoded('e-9223372036854775808,9223372036854775807:"John Malkovich?"'),
    '{-9223372036854775808,9223372036854775807} "John Malkovich?"', 'int64 bounds'
);
SELECT is(pg_temp.decoded('e0'), '{0} NULL', 'key 0');
SELECT is(pg_temp.decoded('e-1,10,0'), '{-1,10,0} NULL', 'negative and zero keys');
SELECT is(pg_temp.decoded('e:null'), '{} NULL', ':null (the Node hub) is no value');
SELECT is(pg_temp.decoded('e7:null'), '{7} NULL', 'a key and :null');
SELECT is(pg_temp.decoded('e:[null]'), '{} [null]', 'an array of null is a value');
SELECT is(pg_temp.decoded('e:"é中😀"'), '{} "é中😀"', 'non-ASCII text');
SELECT is(pg_temp.decoded('e:"a:b"'), '{} "a:b"', 'a colon inside the JSON');
SELECT is(pg_temp.decoded('e1:"\n\u0001"'), '{1} "\n\u0001"', 'escapes');
SELECT is(
    pg_temp.decoded('e:1.0'), '{} 1.0', 'numbers keep their scale'
);
SELECT is(
    (SELECT d.key FROM pghub.decode('e') AS d), '{}'::bigint[],
    'the empty key is an empty array, not NULL'
);
SELECT ok(
    (SELECT d.value IS NULL FROM pghub.decode('e1:null') AS d), 'JSON null is SQL NULL'
);
SELECT ok(
    (SELECT d.key IS NULL AND d.value IS NULL FROM pghub.decode(NULL) AS d),
    'a NULL payload gives NULLs'
);

-- Accepted although no canonical encoder writes them.
SELECT is(pg_temp.decoded('e: {"a" : 1 }'), '{} {"a": 1}', 'whitespace in the JSON');
SELECT is(pg_temp.decoded(E'e:\t\n\r1\n'), '{} 1', 'all four JSON whitespace characters');
SELECT is(pg_temp.decoded('e:"$"'), '{} "$"', 'a raw dollar');
SELECT is(pg_temp.decoded('e:"\u00e9"'), '{} "é"', 'an escaped non-ASCII character');
SELECT is(pg_temp.decoded('e:1E2'), '{} 100', 'an exponent');
SELECT is(pg_temp.decoded('e:{"a":1,"a":2}'), '{} {"a": 2}', 'duplicates: the last wins');
SELECT is(pg_temp.decoded('e:"\ud83d\ude00"'), '{} "😀"', 'a surrogate pair');

-- Refused, with the byte offset where the payload goes wrong.
SELECT throws_ok(
    $$SELECT pghub.decode('')$$, '22P02',
    'invalid payload at byte 0: expected "e", found the end', 'an empty payload'
);
SELECT throws_ok(
    $$SELECT pghub.decode('x1')$$, '22P02',
    'invalid payload at byte 0: expected "e", found "x"', 'another leading letter'
);
SELECT throws_ok(
    $$SELECT pghub.decode('E1')$$, '22P02',
    'invalid payload at byte 0: expected "e", found "E"', 'an upper-case E'
);
SELECT throws_ok(
    $$SELECT pghub.decode('1,2')$$, '22P02',
    'invalid payload at byte 0: expected "e", found "1"', 'no leading letter'
);
SELECT throws_ok(
    $$SELECT pghub.decode('é1')$$, '22P02',
    'invalid payload at byte 0: expected "e", found "é"', 'a non-ASCII leading letter'
);
SELECT throws_ok(
    $$SELECT pghub.decode(':1')$$, '22P02',
    'invalid payload at byte 0: expected "e", found ":"', 'a colon first'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e+1')$$, '22P02',
    'invalid payload at byte 1: expected an integer (0 or -?[1-9][0-9]*), found "+"',
    'a plus sign'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e 1')$$, '22P02',
    'invalid payload at byte 1: expected an integer (0 or -?[1-9][0-9]*), found " "',
    'a space before a key'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e1 ')$$, '22P02',
    'invalid payload at byte 2: expected ",", ":" or the end, found " "', 'a space after a key'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e007')$$, '22P02',
    'invalid payload at byte 2: expected ",", ":" or the end, found "0"', 'leading zeros'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e-0')$$, '22P02',
    'invalid payload at byte 2: expected a digit 1-9 (no negative zero), found "0"',
    'negative zero'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e1,')$$, '22P02',
    'invalid payload at byte 3: expected an integer (0 or -?[1-9][0-9]*), found the end',
    'a trailing comma'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e,1')$$, '22P02',
    'invalid payload at byte 1: expected an integer (0 or -?[1-9][0-9]*), found ","',
    'a leading comma'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e1,,2')$$, '22P02',
    'invalid payload at byte 3: expected an integer (0 or -?[1-9][0-9]*), found ","',
    'two commas'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e1,:{}')$$, '22P02',
    'invalid payload at byte 3: expected an integer (0 or -?[1-9][0-9]*), found ":"',
    'a comma before the colon'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e-')$$, '22P02',
    'invalid payload at byte 2: expected an integer (0 or -?[1-9][0-9]*), found the end',
    'a lone minus'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e9223372036854775808')$$, '22P02',
    'invalid payload at byte 1: expected an integer within the signed 64-bit range, '
    || 'found 9223372036854775808',
    '2^63 is out of range'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e1,-9223372036854775809:{}')$$, '22P02',
    'invalid payload at byte 3: expected an integer within the signed 64-bit range, '
    || 'found -9223372036854775809',
    '-2^63-1 is out of range, offset of the element'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e1,123456789012345678901234567890')$$, '22P02',
    'invalid payload at byte 3: expected an integer within the signed 64-bit range, '
    || 'found 123456789012345678901234567890',
    'a 30-digit key'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e0x1f')$$, '22P02',
    'invalid payload at byte 2: expected ",", ":" or the end, found "x"', 'hex'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e1.5')$$, '22P02',
    'invalid payload at byte 2: expected ",", ":" or the end, found "."', 'a fraction key'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e1é')$$, '22P02',
    'invalid payload at byte 2: expected ",", ":" or the end, found "é"',
    'a non-ASCII character after a key'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e:')$$, '22P02',
    'invalid payload at byte 2: expected a JSON text: The input string ended unexpectedly.',
    'nothing after the colon'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e12: ')$$, '22P02',
    'invalid payload at byte 4: expected a JSON text: The input string ended unexpectedly.',
    'only whitespace after the colon'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e1:{bad')$$, '22P02',
    'invalid payload at byte 3: expected a JSON text: Token "bad" is invalid.', 'broken JSON'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e:{"a":1} x')$$, '22P02',
    'invalid payload at byte 2: expected a JSON text: Token "x" is invalid.',
    'data after the JSON'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e:1:2')$$, '22P02', NULL, 'a second colon'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e:NaN')$$, '22P02',
    'invalid payload at byte 2: expected a JSON text: Token "NaN" is invalid.', 'NaN'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e:[Infinity]')$$, '22P02',
    'invalid payload at byte 2: expected a JSON text: Token "Infinity" is invalid.', 'Infinity'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e:-Infinity')$$, '22P02', NULL, '-Infinity'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e:"\ud800"')$$, '22P02',
    'invalid payload at byte 2: expected a JSON text: '
    || 'Unicode low surrogate must follow a high surrogate.',
    'a lone high surrogate'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e:"\udc00"')$$, '22P02', NULL, 'a lone low surrogate'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e:{"a":"\u0000"}')$$, '22P02',
    'invalid payload at byte 2: expected a JSON text: \u0000 cannot be converted to text.',
    '\u0000 (jsonb cannot hold it)'
);
SELECT throws_ok(
    $$SELECT pghub.decode(E'e:"a\tb"')$$, '22P02', NULL, 'a raw control character in a string'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e:01')$$, '22P02', NULL, 'a JSON number with a leading zero'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e:[1,]')$$, '22P02', NULL, 'a trailing comma in the JSON'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e:1e1000000')$$, '22P02',
    'invalid payload at byte 2: expected a JSON text: value overflows numeric format',
    'a number beyond numeric'
);
-- Nested deeper than the server's parser goes (stack depth exceeded, 54001 inside): one more
-- payload that cannot be decoded, so 22P02 like every other.
SELECT throws_ok(
    $$SELECT pghub.decode('e:' || repeat('[', 100000) || repeat(']', 100000))$$, '22P02',
    'invalid payload at byte 2: expected a JSON text: it nests too deeply for the server',
    'JSON nested 100,000 deep'
);
SELECT throws_ok(
    $$SELECT pghub.decode('e7:' || repeat('{"a":', 100000))$$, '22P02',
    'invalid payload at byte 3: expected a JSON text: it nests too deeply for the server',
    'unterminated JSON nested 100,000 deep'
);
SELECT is(
    (
        SELECT jsonb_typeof(d.value)
        FROM pghub.decode('e:' || repeat('[', 3998) || repeat(']', 3998)) AS d
    ),
    'array', 'the deepest nesting that fits in 7999 bytes'
);

-- Properties.
SELECT volatility_is('pghub', 'decode', ARRAY['text'], 'immutable', 'decode is IMMUTABLE');
SELECT is_strict('pghub', 'decode', ARRAY['text'], 'decode is STRICT');
SELECT is(
    (
        SELECT proparallel FROM pg_proc
        WHERE oid = 'pghub.decode(text)'::regprocedure
    ),
    's', 'decode is PARALLEL SAFE'
);

SELECT finish();
ROLLBACK;
