-- pghub.encode: the canonical payload of WIRE.md, byte for byte, and every refusal.
BEGIN;
SELECT plan(73);

-- First, before anything has cached a plan of the function bodies: backslashes mean the
-- same with standard_conforming_strings off (the bodies use E'' strings).
SET LOCAL standard_conforming_strings = off;
SELECT is(
    pghub.encode(NULL, to_jsonb(chr(36) || chr(92))),
    'e:"' || chr(92) || 'u0024' || chr(92) || chr(92) || '"',
    'a dollar and a backslash with standard_conforming_strings off (fast path)'
);
SELECT is(
    pghub.encode(NULL, jsonb_build_object('a', chr(36) || chr(92), 'b', NULL)),
    'e:{"a":"' || chr(92) || 'u0024' || chr(92) || chr(92) || '","b":null}',
    'a dollar and a backslash with standard_conforming_strings off (null member path)'
);
SELECT is(
    pghub.encode(NULL, jsonb_build_object('a', chr(36) || chr(92), 'b', '[null]'::jsonb)),
    'e:{"a":"' || chr(92) || 'u0024' || chr(92) || chr(92) || '","b":[null]}',
    'a dollar and a backslash with standard_conforming_strings off (regular expression)'
);
RESET standard_conforming_strings;

-- The examples of WIRE.md (topic t), exactly.
SELECT is(pghub.encode(), 'e', 'no key, no value');
SELECT is(pghub.encode('{}', 'null'), 'e', 'empty key, JSON null');
SELECT is(pghub.encode('{1,2,3,4}'), 'e1,2,3,4', 'a key, no value');
SELECT is(pghub.encode('{5}', '{}'), 'e5:{}', 'a key, an empty object');
SELECT is(
    pghub.encode(NULL, '{"b":{"e":"$$","d":1},"a":2}'),
    'e:{"a":2,"b":{"d":1,"e":"\u0024\u0024"}}', 'members sorted, $ escaped'
);
SELECT is(
    pghub.encode('{-9223372036854775808, 9223372036854775807}', '"John Malkovich?"'),
    'e-9223372036854775808,9223372036854775807:"John Malkovich?"',
    'int64 bounds, a string with a space'
);
SELECT is(
    pghub.encode('{7}', '{"aa":1,"b":2,"é":3}'), 'e7:{"b":2,"aa":1,"é":3}',
    'shorter member names first, in UTF-8 bytes'
);
SELECT is(
    pghub.encode(NULL, '[1.0, 1e20, -0.0, "tab\there"]'),
    'e:[1.0,100000000000000000000,0.0,"tab\there"]', 'numbers as numeric prints them'
);

-- NULL and empty.
SELECT is(pghub.encode(NULL, NULL), 'e', 'NULL key and value');
SELECT is(pghub.encode(value => '{"a":1}'), 'e:{"a":1}', 'value only, by name');
SELECT is(pghub.encode('{}'), 'e', 'an empty key writes no key list');
SELECT is(pghub.encode(NULL, 'null'), 'e', 'JSON null writes no value');
SELECT is(pghub.encode('{0}', '[]'), 'e0:[]', 'key 0, an empty array');
SELECT is(pghub.encode('{-1,0,1}'), 'e-1,0,1', 'negative keys');
SELECT is(pghub.encode('[0:2]={3,2,1}'), 'e3,2,1', 'a key array not based at 1');

-- Whitespace: none outside strings, all of it inside.
SELECT is(
    pghub.encode(NULL, '{"a" : [ 1 , 2 ] , "b" : { } }'), 'e:{"a":[1,2],"b":{}}',
    'no whitespace outside strings'
);
SELECT is(
    pghub.encode(NULL, '["a, b", "c: d", " ", "  x  "]'),
    'e:["a, b","c: d"," ","  x  "]', 'spaces inside strings are kept'
);
SELECT is(
    pghub.encode(NULL, '{"k y": ", : , ", "a": null}'),
    'e:{"a":null,"k y":", : , "}', 'spaces in names and values kept when a member is null'
);
SELECT is(
    pghub.encode(NULL, '{"n": null, "m": [null, {"x": null}]}'),
    'e:{"m":[null,{"x":null}],"n":null}', 'null members are kept'
);
SELECT is(
    pghub.encode(NULL, '["x: null", "y, null"]'), 'e:["x: null","y, null"]',
    'strings that look like null members'
);
SELECT is(
    pghub.encode(NULL, '{"a": "\" : null, \\ \"", "b": null}'),
    'e:{"a":"\" : null, \\ \"","b":null}', 'escaped quotes and backslashes with spaces'
);
SELECT is(
    pghub.encode(NULL, '["\\", "\\\\", "\"", "\\\""]'), 'e:["\\","\\\\","\"","\\\""]',
    'backslashes and quotes in strings'
);
SELECT is(
    pghub.encode(NULL, '{"a": "\\\" , ", "b": [null]}'), 'e:{"a":"\\\" , ","b":[null]}',
    'a backslash before a quote, no null member'
);

-- String escapes: \" \\ \b \f \n \r \t, other controls as lower-case \u00xx, the rest raw.
SELECT is(
    pghub.encode(NULL, '"\b\f\n\r\t"'), 'e:"\b\f\n\r\t"', 'the five short escapes'
);
SELECT is(
    pghub.encode(NULL, '"\u0001\u001F\u000b\u001a"'), 'e:"\u0001\u001f\u000b\u001a"',
    'other controls as \u00xx in lower case'
);
SELECT is(
    pghub.encode(NULL, '"\u0008\u000C\u000A\u000D\u0009"'), 'e:"\b\f\n\r\t"',
    'the five short escapes even when written as \u'
);
SELECT is(
    (
        SELECT string_agg(pghub.encode(NULL, to_jsonb(chr(c))), ' ' ORDER BY c)
        FROM generate_series(1, 31) AS c
    ),
    (
        SELECT
            string_agg(
                'e:"' || CASE c
                    WHEN 8 THEN '\b' WHEN 9 THEN '\t' WHEN 10 THEN '\n' WHEN 12 THEN '\f'
                    WHEN 13 THEN '\r' ELSE '\u' || lpad(to_hex(c), 4, '0')
                END || '"', ' ' ORDER BY c
            )
        FROM generate_series(1, 31) AS c
    ),
    'every control character U+0001..U+001F'
);
SELECT is(
    pghub.encode(NULL, to_jsonb(chr(127) || '/<>&''')), 'e:"' || chr(127) || '/<>&''"',
    'DEL, slash, HTML characters and apostrophe raw'
);
SELECT is(
    pghub.encode(NULL, '"\u00e9\u4e2d\ud83d\ude00"'), 'e:"é中😀"',
    'non-ASCII raw, whatever the input escape'
);
SELECT is(
    pghub.encode('{1}', '{"日本": "語", "ü": ["ß"]}'), 'e1:{"ü":["ß"],"日本":"語"}',
    'names ordered by UTF-8 length'
);
SELECT is(pghub.encode(NULL, '"$"'), 'e:"\u0024"', 'a dollar');
SELECT is(
    pghub.encode(NULL, '{"$$": "a$b$$c"}'), 'e:{"\u0024\u0024":"a\u0024b\u0024\u0024c"}',
    'dollars in names and values'
);
SELECT is(
    pghub.encode(NULL, '{"$": null}'), 'e:{"\u0024":null}', 'a dollar in a null member'
);
SELECT is(
    pghub.encode(NULL, '"\u0024"'), 'e:"\u0024"', 'an escaped dollar stays escaped'
);
SELECT is(pghub.encode(NULL, '"\\u0024"'), 'e:"\\u0024"', 'a backslash-u text is not a dollar');

-- Objects: jsonb order, the last duplicate wins.
SELECT is(
    pghub.encode(NULL, '{"bb":1,"a":2,"ab":3,"c":4,"B":5}'),
    'e:{"B":5,"a":2,"c":4,"ab":3,"bb":1}', 'jsonb order: length, then bytes'
);
SELECT is(pghub.encode(NULL, '{"a":1,"a":2}'), 'e:{"a":2}', 'the last duplicate wins');
SELECT is(
    pghub.encode(NULL, '{"z":{"y":[{"b":1,"a":[[],[{}]]}]}}'),
    'e:{"z":{"y":[{"a":[[],[{}]],"b":1}]}}', 'nested arrays and objects'
);

-- Numbers as numeric prints them.
SELECT is(pghub.encode(NULL, '1.5e-7'), 'e:0.00000015', '1.5e-7 in plain decimal');
SELECT is(pghub.encode(NULL, '1E+2'), 'e:100', 'an upper-case exponent');
SELECT is(pghub.encode(NULL, '-0'), 'e:0', 'negative zero integer');
SELECT is(pghub.encode(NULL, '-0.0e5'), 'e:0', 'negative zero with exponent');
SELECT is(pghub.encode(NULL, '2.50'), 'e:2.50', 'trailing zeros kept (numeric scale)');
SELECT is(
    pghub.encode(NULL, '[9223372036854775808, -123456789012345678901234567890]'),
    'e:[9223372036854775808,-123456789012345678901234567890]', 'integers beyond 2^63'
);
SELECT is(
    pghub.encode(NULL, '[true, false, null, 0, -1.25]'), 'e:[true,false,null,0,-1.25]',
    'literals and numbers in an array'
);

-- The three ways of dropping whitespace: json_strip_nulls alone (no ': null' in the text),
-- with null members wrapped in [] and unwrapped, and the regular expression (the text holds
-- ': [null]' or ':[null]'). Each on its own, with the texts that steer between them.
SELECT is(
    pghub.encode(NULL, '{"a": null, "b": [null, 1], "c": {"d": null}, "s": "x: null"}'),
    'e:{"a":null,"b":[null,1],"c":{"d":null},"s":"x: null"}',
    'null members, a null element, a string holding ": null"'
);
SELECT is(
    pghub.encode(NULL, '{"a": null, "s": "x: [null] y"}'), 'e:{"a":null,"s":"x: [null] y"}',
    'a string holding ": [null]" next to a null member'
);
SELECT is(
    pghub.encode(NULL, '{"a": null, "s": "x:[null]:null"}'), 'e:{"a":null,"s":"x:[null]:null"}',
    'a string holding ":[null]" next to a null member'
);
SELECT is(
    pghub.encode(NULL, '{"a": [null], "b": null, "c": ": nullable"}'),
    'e:{"a":[null],"b":null,"c":": nullable"}', 'a member holding [null] next to a null member'
);
SELECT is(
    pghub.encode(NULL, '{"a": [null], "s": ": [null]"}'), 'e:{"a":[null],"s":": [null]"}',
    'a member holding [null], no null member'
);
SELECT is(
    pghub.encode(NULL, '{"a": [null], "s": "a: [null]"}'), 'e:{"a":[null],"s":"a: [null]"}',
    'a member holding [null] and a string holding ": [null]"'
);

-- The three agree on generated values: each value alone, next to a null member and next to
-- a [null] member must give the same text for the value.
CREATE TEMPORARY TABLE samples (sample jsonb);
INSERT INTO samples
SELECT
    jsonb_build_object(
        'id', i, 'name', 'item, ' || i || ': "x" \ ' || chr(i % 31 + 1), 'price', i / 7.0,
        'tags', jsonb_build_array('a b', i % 3 = 0, '$', repeat('é', i % 4)), 'ok', i % 2 = 0,
        'note', (ARRAY[': null', ': [null]', ':[null]', 'null', NULL, '[null]'])[i % 7 + 1],
        'more', CASE WHEN i % 5 = 0 THEN jsonb_build_object('k', NULL, ': null', '[]') END
    )
FROM generate_series(1, 300) AS i;
SELECT is(
    (
        SELECT count(*)::integer FROM samples
        WHERE
            pghub.encode(NULL, jsonb_build_array(sample, '{"n": null}'::jsonb))
            <> left(pghub.encode(NULL, jsonb_build_array(sample)), -1) || ',{"n":null}]'
    ),
    0, 'alone and next to a null member: the same text, 300 values'
);
SELECT is(
    (
        SELECT count(*)::integer FROM samples
        WHERE
            pghub.encode(NULL, jsonb_build_array(sample, '{"n": [null]}'::jsonb))
            <> left(pghub.encode(NULL, jsonb_build_array(sample)), -1) || ',{"n":[null]}]'
    ),
    0, 'alone and next to a [null] member: the same text, 300 values'
);
SELECT is(
    (
        SELECT count(*)::integer FROM samples
        WHERE pghub.encode(NULL, sample) !~ '^e:\{"id":[0-9]+,"ok":(true|false),"more":'
    ),
    0, 'the generated values start as jsonb orders them, without spaces'
);
SELECT is(
    (
        SELECT count(*)::integer FROM samples AS s
        WHERE (SELECT d.value FROM pghub.decode(pghub.encode(NULL, s.sample)) AS d) <> s.sample
    ),
    0, 'decode reads back what encode wrote, 300 values'
);
-- Sizes: at most 7999 bytes of UTF-8.
SELECT is(
    octet_length(pghub.encode(NULL, to_jsonb(repeat('x', 7995)))), 7999, '7999 bytes pass'
);
SELECT throws_ok(
    $$SELECT pghub.encode(NULL, to_jsonb(repeat('x', 7996)))$$, '54000',
    'payload too large: 8000 bytes, the limit is 7999', '8000 bytes are refused'
);
SELECT is(
    octet_length(pghub.encode(NULL, to_jsonb(repeat('é', 3997)))), 7998,
    '3997 two-byte characters pass'
);
SELECT throws_ok(
    $$SELECT pghub.encode(NULL, to_jsonb(repeat('é', 3998)))$$, '54000',
    'payload too large: 8000 bytes, the limit is 7999', 'the limit counts bytes, not characters'
);
SELECT throws_ok(
    $$SELECT pghub.encode(NULL, to_jsonb(repeat('$', 1333)))$$, '54000',
    'payload too large: 8002 bytes, the limit is 7999', 'the limit counts \u0024 as six bytes'
);
SELECT throws_ok(
    $$SELECT pghub.encode(array_fill(9223372036854775807, ARRAY[500]))$$, '54000',
    'payload too large: 10000 bytes, the limit is 7999', 'a long key counts too'
);

-- Keys: one dimension, no NULL.
SELECT throws_ok(
    $$SELECT pghub.encode('{1,NULL,3}')$$, '22004',
    'invalid key: element key[2] is NULL', 'a NULL element is refused, with its subscript'
);
SELECT throws_ok(
    $$SELECT pghub.encode('{NULL}', '{}')$$, '22004',
    'invalid key: element key[1] is NULL', 'a key of one NULL is refused'
);
SELECT throws_ok(
    $$SELECT pghub.encode('{{1,2},{3,4}}')$$, '2202E',
    'invalid key: an array of 2 dimensions, a key has one', 'two dimensions are refused'
);
SELECT throws_ok(
    $$SELECT pghub.encode('{{{1}}}', 'null')$$, '2202E',
    'invalid key: an array of 3 dimensions, a key has one', 'three dimensions are refused'
);

-- A value nested too deeply to be written as text: 54001 (documented). Such a value can only
-- be built in memory, deeper than jsonb's parser reads; a small stack makes one cheap to build.
CREATE FUNCTION pg_temp.nested(depth integer) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v jsonb := '1';
BEGIN
    FOR i IN 1 .. depth LOOP
        v := jsonb_build_array(v);
    END LOOP;
    RETURN v;
END
$$;
SET LOCAL max_stack_depth = '100kB';
SELECT is(
    length(pghub.encode(NULL, pg_temp.nested(300))), 603, 'nested 300 deep is written'
);
SELECT throws_ok(
    $$SELECT pghub.encode(NULL, pg_temp.nested(3000))$$, '54001', NULL,
    'nested too deeply to be written as text'
);
RESET max_stack_depth;

-- Properties.
SELECT volatility_is(
    'pghub', 'encode', ARRAY['bigint[]', 'jsonb'], 'immutable', 'encode is IMMUTABLE'
);
SELECT isnt_strict(
    'pghub', 'encode', ARRAY['bigint[]', 'jsonb'], 'encode takes NULL (not STRICT)'
);
SELECT is(
    (
        SELECT proparallel FROM pg_proc
        WHERE oid = 'pghub.encode(bigint[], jsonb)'::regprocedure
    ),
    's', 'encode is PARALLEL SAFE'
);
SELECT finish();
ROLLBACK;
