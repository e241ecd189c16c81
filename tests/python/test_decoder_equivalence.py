"""The fast strict decoder against the reference (wire_reference.py, the decoder before it).

Both must give the same verdict on every payload: the same key and value, types included,
or InvalidPayload with the same offset and the same message. Payloads are valid events,
valid events mutated where the grammar is delicate, and non-canonical forms other encoders
write. The number hooks (``parse_float``/``parse_int``) change values, never verdicts.
Each check runs on both ways of reading the JSON part: the pure-Python scanner and, where the
``pghub[msgspec]`` extra is installed, msgspec (skipped, and said so, where it is not).
Pure Python: ``PGHUB_DECODER_EXAMPLES`` examples a property (1000 by default).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
import wire_reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_support import VECTORS, event_keys, json_values

from pghub import (
    InvalidPayload,
    PayloadTooLarge,
    _jsonread,
    decode_event,
    decode_payload,
    encode_payload,
)

EXAMPLES = settings(
    max_examples=int(os.environ.get("PGHUB_DECODER_EXAMPLES", "1000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


ACCELERATED = _jsonread.msgspec_decoder()
implementations = pytest.mark.parametrize("implementation", ["pure", "msgspec"])


@contextmanager
def reading_json_with(implementation: str) -> Iterator[None]:
    """decode_payload with the JSON part read by ``implementation`` while in the block."""
    if implementation == "msgspec" and ACCELERATED is None:
        pytest.skip("msgspec is not installed (the pghub[msgspec] extra)")
    saved = _jsonread.PLAIN_READER.fast
    _jsonread.PLAIN_READER.fast = ACCELERATED if implementation == "msgspec" else None
    try:
        yield
    finally:
        _jsonread.PLAIN_READER.fast = saved


def tagged(value: Any) -> Any:
    """``value`` with every part's type spelled out, so that 1, 1.0 and True differ."""
    if isinstance(value, dict):
        return ("dict", tuple((key, tagged(item)) for key, item in value.items()))
    if isinstance(value, list):
        return ("list", tuple(tagged(item) for item in value))
    if isinstance(value, float):
        return ("float", repr(value))
    return (type(value).__name__, str(value) if isinstance(value, Decimal) else value)


def verdict(decode: Any, payload: str, **hooks: Any) -> tuple[Any, ...]:
    try:
        key, value = decode(payload, **hooks)
    except InvalidPayload as exc:
        return ("refused", exc.offset, str(exc))
    assert all(type(k) is int for k in key)
    return ("accepted", key, tagged(value))


def assert_same_verdict(payload: str) -> tuple[Any, ...]:
    want = verdict(wire_reference.decode_payload, payload)
    assert verdict(decode_payload, payload) == want, payload
    return want


# --- payloads ----------------------------------------------------------------------------


def _encoded(key: list[int] | None, value: Any) -> str:
    try:
        return encode_payload(key, value)
    except PayloadTooLarge:
        return encode_payload(key)


valid_payloads = st.builds(_encoded, event_keys, json_values)

# Pieces that matter to the grammar of the key list and of JSON, including look-alikes the
# fast key path must refuse (non-ASCII digits, which str.isdigit and int() take) and raw
# surrogates and U+0000 (a str built in Python can hold them).
_PIECES = st.sampled_from(
    [
        *'e0123456789,:-+ ."\\u{}[]tfnNaIE\t\n$é',
        *["\u0663", "\uff11", "\u00b2", "_", "0x", "\ud800", "\udfff", "\x00", "\x7f"],
        *["9223372036854775807", "9223372036854775808", "-9223372036854775808"],
        *["999999999999999999", "1000000000000000000", "00", "-0", ",,"],
        *["\\u0000", "\\ud800", "\\udc00", "\\ud83d\\ude00", "\\u0024", "null", "1e400"],
        *["1e131072", "1e-20000", "0e1073741823", "1.5e-16383", "7" * 4400, " ", "\r"],
    ]
)


@st.composite
def mutated_payloads(draw: st.DrawFn) -> str:
    """A valid payload with a few pieces inserted, deleted or replaced, often in the key."""
    payload = draw(valid_payloads)
    for _ in range(draw(st.integers(1, 3))):
        head_end = payload.find(":") if ":" in payload else len(payload)
        at = draw(st.integers(0, head_end) | st.integers(0, len(payload)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        cut = at + 1 if action != "insert" else at
        middle = "" if action == "delete" else draw(_PIECES)
        payload = payload[:at] + middle + payload[cut:]
    return payload


key_lists = st.lists(st.integers(-(2**64), 2**64) | st.integers(-5, 5), min_size=1, max_size=4).map(
    lambda key: "e" + ",".join(map(str, key))
)
_ws = st.sampled_from(["", " ", "\t", "\n", "\r\n "])
non_canonical = st.builds(
    lambda head, before, value, after: f"{head}:{before}{json.dumps(value)}{after}",
    key_lists | st.just("e"),
    _ws,
    json_values,
    _ws,
)


# --- properties --------------------------------------------------------------------------


@implementations
@EXAMPLES
@given(payload=valid_payloads)
def test_valid_payloads_decode_alike(payload: str, implementation: str) -> None:
    with reading_json_with(implementation):
        assert assert_same_verdict(payload)[0] == "accepted"


@implementations
@EXAMPLES
@given(payload=mutated_payloads())
def test_mutated_payloads_get_the_same_verdict(payload: str, implementation: str) -> None:
    with reading_json_with(implementation):
        assert_same_verdict(payload)


@implementations
@EXAMPLES
@given(
    payload=key_lists | non_canonical | st.text(max_size=40) | st.text(max_size=40).map("e".__add__)
)
def test_key_lists_and_other_encoders_forms_get_the_same_verdict(
    payload: str, implementation: str
) -> None:
    with reading_json_with(implementation):
        assert_same_verdict(payload)


@EXAMPLES
@given(payload=valid_payloads | mutated_payloads() | non_canonical)
def test_number_hooks_see_each_number_text_and_change_no_verdict(payload: str) -> None:
    plain = verdict(decode_payload, payload)
    as_text = verdict(decode_payload, payload, parse_float=str, parse_int=str)
    exact = verdict(decode_payload, payload, parse_float=Decimal)
    if plain[0] == "refused":
        assert as_text == exact == plain
        return
    assert as_text[0] == exact[0] == "accepted"
    json_part = payload.partition(":")[2]
    want_text = None if not json_part else json.loads(json_part, parse_float=str, parse_int=str)
    assert as_text[2] == tagged(None if want_text == "null" else want_text)
    want_exact = None if not json_part else json.loads(json_part, parse_float=Decimal)
    assert exact[2] == tagged(want_exact)


# --- edges of the fast paths ----------------------------------------------------------------


@implementations
@pytest.mark.parametrize(
    "payload",
    [
        "e0",
        "e00",
        "e01",
        "e1",
        "e" + "9" * 18,
        "e" + "9" * 18 + ":1",
        "e1" + "0" * 17,
        "e1" + "0" * 18,
        "e9223372036854775807",
        "e9223372036854775808",
        "e-9223372036854775808",
        "e-9223372036854775809",
        "e" + "9" * 19,
        "e" + "9" * 5000,
        "e1,9223372036854775807,-9223372036854775808:[]",
        "e1,9223372036854775808",
        "e\u0663",
        "e1\u0663",
        "e\u00b2",
        "e\uff11:1",
        "e1_0",
        "e 1",
        "e1 ",
        "e+1",
        "e-0",
        "e-",
        "e,",
        "e:",
        ":",
        ":1",
        "",
        "E",
        "ee",
        "e:1e131072",
        'e7:{"a":[1,2.5,"\\ud83d\\ude00"]}',
        # the JSON part, where an accelerator could differ from json's scanner
        'e:{"a":1,"b":2,"a":3}',
        'e:{"b":{"x":1},"b":[2]}',
        "e:[" + "7" * 4300 + "]",
        "e:[" + "7" * 4301 + "]",
        "e:-" + "7" * 4400,
        "e:[18446744073709551616,-9223372036854775809,123456789012345678901234567890]",
        "e:[-0,-0.0,0.0,1E400,-1e-400,1e-7,1.0e+2,1E-2,5e-324,2.5e-324]",
        "e:1" + "0" * 400 + ".5",
        "e:0." + "0" * 5000 + "1",
        'e:["\\/","\\u00e9","\\uD83D\\uDE00","\\u00E9","\x7f","\u2028","\U0001f600"]',
        'e:{"\\u0000":1}',
        'e:["a\\u0000"]',
        'e:"\\ud800"',
        'e:"\ud800"',
        'e:["\udfff",1]',
        "e:" + "[" * 200 + "]" * 200,
        "e: [1] ",
        "e:[1]\n",
        "e:\t{}",
        'e:[],""',
        "e:[]]",
        "e:1.",
        "e:.5",
        "e:-",
        "e:01",
        "e:1e",
        "e:[1,]",
        'e:{"a":1,}',
        "e:nul",
        "e:NaN",
        "e:-Infinity",
        'e:"\x01"',
        "e:\ufeff1",
        'e:"\\x41"',
        'e:"\\u12"',
        "e:''",
        "e:[true,false,null]",
        "e:TRUE",
    ],
)
def test_edges_match_the_reference(payload: str, implementation: str) -> None:
    with reading_json_with(implementation):
        assert_same_verdict(payload)


@implementations
@pytest.mark.parametrize(
    "section", ["valid", "decode_only", "invalid_payloads"], ids=lambda name: name
)
def test_every_vector_gets_the_reference_verdict(section: str, implementation: str) -> None:
    with reading_json_with(implementation):
        for vector in VECTORS[section]:
            assert_same_verdict(vector["payload"])


# --- the number hooks ----------------------------------------------------------------------


def test_parse_float_decimal_gives_exact_numbers() -> None:
    payload = 'e1:{"price":19.99,"n":3,"tiny":1e-400,"huge":1.5e400,"list":[0.1,2]}'
    key, value = decode_payload(payload, parse_float=Decimal)
    assert key == (1,)
    assert value == {
        "n": 3,
        "list": [Decimal("0.1"), 2],
        "huge": Decimal("1.5e400"),
        "tiny": Decimal("1e-400"),
        "price": Decimal("19.99"),
    }
    assert type(value["n"]) is int
    event = decode_event("t", payload, parse_float=Decimal, parse_int=Decimal)
    assert event.value["n"] == Decimal(3)
    assert type(event.value["n"]) is Decimal


def test_parse_float_decimal_round_trips_the_payload() -> None:
    """With exact numbers, decode then encode gives back the same bytes (floats may not)."""
    payload = 'e:{"a":0.10,"b":1.000000000000000000001,"c":100000000000000000000}'
    assert encode_payload(*decode_payload(payload, parse_float=Decimal)) == payload
    assert encode_payload(*decode_payload(payload)) != payload  # float 0.1 prints 0.1


@pytest.mark.parametrize("payload", ["e:1e131072", "e1:[1.5e-16383]", "e:0e1073741823"])
def test_hooks_do_not_let_numeric_overflow_through(payload: str) -> None:
    with pytest.raises(InvalidPayload, match="PostgreSQL numeric") as plain:
        decode_payload(payload)
    with pytest.raises(InvalidPayload) as hooked:
        decode_payload(payload, parse_float=Decimal)
    assert str(hooked.value) == str(plain.value)
    assert hooked.value.offset == plain.value.offset


def test_an_exception_from_a_hook_propagates_as_is() -> None:
    class Refused(Exception):
        pass

    def refuse(text: str) -> Any:
        raise Refused(text)

    with pytest.raises(Refused, match=r"^2\.5$"):
        decode_payload("e: [1,2.5]", parse_float=refuse)  # the full decoder's path
    with pytest.raises(Refused, match=r"^2\.5$"):
        decode_payload("e:[1,2.5]", parse_float=refuse)  # the one-call scanner path
    with pytest.raises(Refused, match=r"^1$"):
        decode_payload("e:[1]", parse_int=refuse)
    with pytest.raises(ValueError, match="mine") as caught:
        decode_payload("e:[1]", parse_int=lambda text: int("mine"))
    assert type(caught.value) is ValueError  # the hook's own error, not an InvalidPayload
