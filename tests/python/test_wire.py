"""Unit tests of the Python wire codec's own logic: inputs SQL cannot express (Python types,
paths in error messages, default=, Decimal, huge numbers) and the fast writer's equivalence
with the careful one. The contract itself is tests/vectors.json (test_vectors.py)."""

from __future__ import annotations

import copy
import datetime
import enum
import math
import sys
from collections import OrderedDict
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_support import event_keys, json_values, same_json

from pghub import (
    MAX_PAYLOAD_BYTES,
    Event,
    InvalidKey,
    InvalidPayload,
    InvalidTopic,
    InvalidValue,
    PayloadTooLarge,
    _canonical,
    channel,
    decode_event,
    decode_payload,
    encode_payload,
)


class Color(enum.IntEnum):
    RED = 1


class Name(str):
    pass


# --- topics -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "words"),
    [
        ("", "empty"),
        ("x" * 64, "64 characters long"),
        ("a-b", "'-' at index 1"),
        ("ab\u212a", "'\u212a' at index 2"),
    ],
)
def test_channel_names_topic_and_rule(topic: str, words: str) -> None:
    with pytest.raises(InvalidTopic) as caught:
        channel(topic)
    assert repr(topic) in str(caught.value)
    assert words in str(caught.value)


@pytest.mark.parametrize("topic", [None, 1, b"orders", ["orders"]])
def test_channel_refuses_non_str(topic: Any) -> None:
    with pytest.raises(InvalidTopic, match="not a str"):
        channel(topic)


def test_channel_cache_serves_only_valid_topics() -> None:
    assert channel("CacheMe") == "cacheme"
    assert channel("CacheMe") == "cacheme"
    for _ in range(2):
        with pytest.raises(InvalidTopic):
            channel("cache-me")


# --- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "payload"),
    [
        ((1, 2), "e1,2"),
        (range(3), "e0,1,2"),
        ((k for k in (5, -5)), "e5,-5"),
        ([Color.RED], "e1"),
        ([], "e"),
        ((), "e"),
    ],
)
def test_key_iterables(key: Any, payload: str) -> None:
    assert encode_payload(key) == payload


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ([1, True], "key[1] is True (bool)"),
        ((True,), "key[0] is True (bool)"),  # one-element tuples take a shorter path
        ((2**63,), "key[0] is 9223372036854775808, outside"),
        ((-(2**63) - 1,), "key[0] is -9223372036854775809, outside"),
        ((1.0,), "key[0] is 1.0 (float)"),
        ([0, 1, 2.0], "key[2] is 2.0 (float)"),
        ([2**63], "key[0] is 9223372036854775808, outside"),
        ([1, -(2**63) - 1], "key[1] is -9223372036854775809, outside"),
        ((10**5000,), "key[0] is an int of 16610 bits, outside"),  # too long to print
        ([1, -(10**5000)], "key[1] is an int of 16610 bits, outside"),
        ([None], "key[0] is None"),
        ([[1, 2]], "key[0] is [1, 2] (list)"),
        ([Decimal(1)], "key[0] is Decimal('1')"),
        ("12", "not str '12'"),
        (b"12", "not bytes"),
        (12, "not int"),
    ],
)
def test_bad_keys_name_the_element(key: Any, words: str) -> None:
    with pytest.raises(InvalidKey) as caught:
        encode_payload(key)
    assert words in str(caught.value)


# --- values: types, paths, default= --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "path", "words"),
    [
        ({1, 2}, "value", "set is not JSON serializable"),
        ({"a": [0, 1, 2, datetime.date(2024, 1, 2)]}, 'value["a"][3]', "date"),
        ({"a": {1: "x"}}, 'value["a"]', "object key 1 is a int"),
        ({"a": {None: "x"}}, 'value["a"]', "object key None"),
        ([math.nan], "value[0]", "nan is not a JSON number"),
        ({"x": [math.inf]}, 'value["x"][0]', "inf is not a JSON number"),
        ([-math.inf], "value[0]", "-inf"),
        ({"s": "a\x00b"}, 'value["s"]', "U+0000 at index 1"),
        (["ok", "\ud83d"], "value[1]", "lone surrogate U+D83D"),
        ({"k\udc00": 1}, "value", "U+DC00"),
        ({"k\x00": 1}, "value", "U+0000"),
        (Decimal("NaN"), "value", "Decimal NaN"),
        ([Decimal("-Infinity")], "value[0]", "Decimal -Infinity"),
        (b"bytes", "value", "bytes is not JSON serializable"),
        (object(), "value", "object is not JSON serializable"),
    ],
)
def test_unsupported_values_name_their_path(value: Any, path: str, words: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        encode_payload([1], value)
    message = str(caught.value)
    assert message.startswith(path + ": "), message
    assert words in message


def test_default_converts_like_json_dumps() -> None:
    when = datetime.datetime(2024, 5, 6, 7, 8, 9)

    def convert(obj: Any) -> Any:
        if isinstance(obj, datetime.datetime):
            return obj.isoformat()
        if isinstance(obj, (set, frozenset)):
            return {"zz": sorted(obj), "a": len(obj)}  # a dict it returns is reordered too
        raise TypeError(f"cannot convert {type(obj).__name__}")

    value = {"when": when, "tags": {3, 1}, "$": "x"}
    assert (
        encode_payload(None, value, default=convert)
        == 'e:{"\\u0024":"x","tags":{"a":2,"zz":[1,3]},"when":"2024-05-06T07:08:09"}'
    )
    # default= may give None at the top: no value, as for None itself
    assert encode_payload([1], when, default=lambda obj: None) == "e1"
    with pytest.raises(TypeError, match="cannot convert complex"):
        encode_payload(None, [1j], default=convert)


def test_default_returning_its_input_is_refused() -> None:
    with pytest.raises(InvalidValue, match=r"^value\[0\]: default= returned the set unchanged"):
        encode_payload(None, [{1}], default=lambda obj: obj)


@pytest.fixture
def default_recursion_limit() -> Iterator[None]:
    """Python's default recursion limit for the test, restored after it.

    What "too deep" means for Python's json depends on that limit, and a test run may have
    raised it (a full CI run once left it raised before these tests); these tests are about
    the default.
    """
    saved = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        yield
    finally:
        sys.setrecursionlimit(saved)


@pytest.mark.usefixtures("default_recursion_limit")
def test_circular_and_too_deep_values_are_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(InvalidValue, match="nests too deeply"):
        encode_payload(None, loop)
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(InvalidValue, match="nests too deeply"):
        encode_payload(None, deep)


def test_python_types_that_are_json() -> None:
    value = OrderedDict([("b", (1, Color.RED)), (Name("a"), Name("x$"))])
    assert encode_payload(None, value) == 'e:{"a":"x\\u0024","b":[1,1]}'
    assert encode_payload(None, [True, False, None, 1.5]) == "e:[true,false,null,1.5]"


# --- numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (Decimal("1.50"), "1.50"),  # numeric keeps the scale
        (Decimal("1E+2"), "100"),
        (Decimal("0E+3"), "0"),
        (Decimal("-0.00"), "0.00"),
        (Decimal("-0"), "0"),
        (Decimal("1E-7"), "0.0000001"),
        (Decimal("-12.345e-3"), "-0.012345"),
        (Decimal("123456789012345678901234567890.5"), "123456789012345678901234567890.5"),
        (1e16, "10000000000000000"),
        (1.5e-7, "0.00000015"),
        (-0.0, "0.0"),
        (2.0, "2.0"),
        (-1e-5, "-0.00001"),
        (1.2345678901234567e-4, "0.00012345678901234567"),
    ],
)
def test_numbers_print_as_numeric(number: Any, text: str) -> None:
    assert encode_payload(None, number) == f"e:{text}"
    assert encode_payload(None, [number]) == f"e:[{text}]"


def test_integers_past_python_str_limit() -> None:
    big = 7 * 10**5000  # more digits than int("...") takes by default (4300)
    payload = encode_payload(None, [big])
    assert payload == "e:[7" + "0" * 5000 + "]"
    assert decode_payload(payload) == ((), [big])
    with pytest.raises(PayloadTooLarge) as caught:
        encode_payload(None, 10**9000)
    assert caught.value.limit == MAX_PAYLOAD_BYTES
    assert caught.value.size > MAX_PAYLOAD_BYTES
    with pytest.raises(PayloadTooLarge):
        encode_payload(None, Decimal("1E+9000"))
    with pytest.raises(PayloadTooLarge):
        encode_payload(None, Decimal("1E-9000"))


def test_decoded_number_types() -> None:
    key, value = decode_payload("e:[1,-0,1.0,1e2,100000000000000000000,0.5,1e400,-1.5e999]")
    assert key == ()
    assert [type(x) for x in value] == [int, int, float, float, int, float, Decimal, Decimal]
    assert value[:6] == [1, 0, 1.0, 100.0, 10**20, 0.5]
    # beyond float range: exact Decimal, which encodes back to the numeric text
    assert value[6:] == [Decimal("1e400"), Decimal("-1.5e999")]
    assert encode_payload(None, value[6]) == "e:1" + "0" * 400


def test_payload_too_large_reports_utf8_size() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        encode_payload([1], "é" * 4000)
    assert caught.value.size == len('e1:""') + 8000
    assert caught.value.limit == 7999
    assert f"{caught.value.size} bytes" in str(caught.value)
    assert "7999" in str(caught.value)


# --- decoding ----------------------------------------------------------------------------


def test_decode_event_carries_the_channel() -> None:
    event = decode_event("orders", 'e7:{"a":1}')
    assert event == Event("orders", (7,), {"a": 1})
    assert isinstance(event, Event)
    assert decode_event("orders", "e:null") == Event("orders", (), None)


@pytest.mark.parametrize(
    "payload",
    ['e:"\ud800"', 'e1:["a\udfffb"]', 'e:{"\ud800":1}'],
)
def test_raw_lone_surrogates_in_a_python_str_are_refused(payload: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        decode_payload(payload)
    assert caught.value.offset == payload.index(":") + 1


def test_surrogate_pairs_and_escaped_backslashes_are_fine() -> None:
    assert decode_payload('e:["\\ud83d\\ude00","\\\\u0000","\\\\ud800"]') == (
        (),
        ["😀", "\\u0000", "\\ud800"],
    )


@pytest.mark.usefixtures("default_recursion_limit")
def test_nesting_deeper_than_python_allows_is_refused_whole() -> None:
    depth = 3000  # PostgreSQL takes this; Python's json recursion does not
    with pytest.raises(InvalidPayload, match="nests too deeply") as caught:
        decode_payload("e5:" + "[" * depth + "]" * depth)
    assert caught.value.offset == 3


def test_json_error_message_adds_json_position() -> None:
    with pytest.raises(InvalidPayload) as caught:
        decode_payload('e12:{"a":1,}')
    assert caught.value.offset == 4
    assert "at character 7 of the JSON text" in str(caught.value)


# --- properties (pure Python) ----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_fast_writer_equals_careful_writer(value: Any) -> None:
    assert _canonical.dumps(value) == _canonical.careful_dumps(value).replace("$", "\\u0024")


@settings(max_examples=300, deadline=None)
@given(key=event_keys, value=json_values)
def test_decode_inverts_encode(key: list[int] | None, value: Any) -> None:
    text = "null" if value is None else _canonical.careful_dumps(value).replace("$", "\\u0024")
    size = len(
        ("e" + ",".join(map(str, key or ())) + ("" if text == "null" else ":" + text)).encode()
    )
    if size > MAX_PAYLOAD_BYTES:
        with pytest.raises(PayloadTooLarge) as caught:
            encode_payload(key, value)
        assert caught.value.size == size
        return
    payload = encode_payload(key, value)
    got_key, got_value = decode_payload(payload)
    assert got_key == tuple(key or ())
    assert (got_value is None) if value is None else same_json(got_value, value)
    assert encode_payload(got_key, got_value) == payload


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_default_is_not_called_where_nothing_needs_it(value: Any) -> None:
    """With default= the fast writer still takes what it can; the text is the same."""

    def never(obj: Any) -> Any:
        raise AssertionError(f"default= called for {obj!r}")

    assert _canonical.dumps(value, never) == _canonical.dumps(value)


@settings(max_examples=300, deadline=None)
@given(value=json_values, where=st.integers(0, 30))
def test_default_converts_anywhere_in_a_value(value: Any, where: int) -> None:
    """A value to convert at any depth: fast and careful writers agree, default= or not."""
    when = datetime.date(2024, 1, 2)
    seen = 0

    def plant(node: Any) -> Any:
        nonlocal seen
        seen += 1
        if seen == where:
            return when
        if isinstance(node, dict):
            return {key: plant(item) for key, item in node.items()}
        if isinstance(node, list):
            return [plant(item) for item in node]
        return node

    planted = plant(value)

    def convert(obj: Any) -> Any:
        if isinstance(obj, datetime.date):
            return {"date": obj.isoformat(), "$": 1}
        raise TypeError(type(obj).__name__)

    want = _canonical.careful_dumps(planted, convert).replace("$", "\\u0024")
    assert _canonical.dumps(planted, convert) == want


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_encoding_leaves_the_value_as_it_was(value: Any) -> None:
    before = copy.deepcopy(value)
    _canonical.dumps(value)
    assert repr(value) == repr(before)  # key order included


@pytest.mark.parametrize(
    "number",
    [
        1e-4,
        math.nextafter(1e-4, 0.0),
        math.nextafter(1e-4, 1.0),
        1e16,
        math.nextafter(1e16, 0.0),
        -1e-4,
        math.nextafter(-1e-4, 0.0),
        -1e16,
        math.nextafter(-1e16, 0.0),
        0.0,
        -0.0,
        5e-324,
        1.7976931348623157e308,
        0.1 + 0.2,
    ],
)
def test_fast_writer_float_boundaries(number: float) -> None:
    """The fast writer takes a float only where its repr is already the canonical text."""
    assert _canonical.dumps([number]) == _canonical.careful_dumps([number])
    assert "e" not in _canonical.dumps(number)


def test_typical_events_take_the_fast_writer() -> None:
    """A guard on speed: ordinary values must not fall back to the careful writer."""
    value = {"id": 42, "name": "Zoë", "total": 99.5, "tags": ["a", "b"], "meta": {"é": None}}
    prepared = _canonical._prepare(value)  # raises _Fallback if it would fall back
    assert list(prepared) == ["id", "meta", "name", "tags", "total"]
    assert list(prepared["meta"]) == ["é"]


@pytest.mark.parametrize("digits", [20, 5000])
def test_overlong_key_elements_are_refused_at_their_start(digits: int) -> None:
    payload = "e1,-" + "9" * digits + ":1"
    with pytest.raises(InvalidPayload, match="outside the signed 64-bit range") as caught:
        decode_payload(payload)
    assert caught.value.offset == 3


@pytest.mark.parametrize(
    ("payload", "accepted"),
    [
        ("e:1e131071", True),  # 131072 digits before the point: numeric's most
        ("e:1e131072", False),
        ("e:1.5e-16382", True),  # scale 16383: numeric's most
        ("e:1.5e-16383", False),
        ("e:0e-16384", False),
        ("e:0e200000", True),
        ("e:0e1073741822", True),  # numeric's largest exponent
        ("e:0e1073741823", False),
        ("e:[0.0e000000000000000000029751326119188195]", False),
        ("e:1e1000000000000000000", False),  # also past Decimal's own exponent limit
        ("e:0.5e131072", True),
    ],
)
def test_numbers_outside_numeric_are_refused_like_jsonb(payload: str, accepted: bool) -> None:
    """jsonb refuses these ("value overflows numeric format"); so does the decoder."""
    if accepted:
        decode_payload(payload)
    else:
        with pytest.raises(InvalidPayload, match="PostgreSQL numeric"):
            decode_payload(payload)


def test_key_order_cache_gives_the_same_text() -> None:
    """Shapes seen before reuse their key order; insertion order still does not matter."""
    first = [{"bb": i, "a": [i], "é": None, "c": {"yy": 1, "x": 2}} for i in range(3)]
    second = [{"é": None, "c": {"x": 2, "yy": 1}, "a": [i], "bb": i} for i in range(3)]
    want = 'e:[{"a":[0],"c":{"x":2,"yy":1},"bb":0,"é":null},' + (
        '{"a":[1],"c":{"x":2,"yy":1},"bb":1,"é":null},{"a":[2],"c":{"x":2,"yy":1},"bb":2,"é":null}]'
    )
    for _ in range(2):
        assert encode_payload(None, first) == want
        assert encode_payload(None, second) == want
    # More shapes than the cache holds: it starts over, and the text stays right.
    for n in range(_canonical._KEY_ORDER_CACHE_SIZE + 10):
        assert encode_payload(None, {f"k{n}": 1, "z": 2}) == f'e:{{"z":2,"k{n}":1}}'
    assert len(_canonical._key_orders) <= _canonical._KEY_ORDER_CACHE_SIZE
