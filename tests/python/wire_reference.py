"""The strict decoder as it was before the fast one (pghub 0.3.0, commit 0c41265): the reference.

tests/python/test_decoder_equivalence.py checks on random valid and mutated payloads that
``pghub.decode_payload`` gives the same verdict as this one: the same key and value (types
included), or InvalidPayload with the same offset and message. It is kept as it was, a plain
regex-and-json reading of docs/wire-format.md, which tests/python/test_cross_language.py
checked against SQL's ``pghub.decode``; do not speed it up.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pghub import _canonical
from pghub.errors import InvalidPayload

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# A key list in canonical form, at most 19 digits an element (the range check follows).
_KEY_LIST = re.compile(r"(?:0|-?[1-9][0-9]{0,18})(?:,(?:0|-?[1-9][0-9]{0,18}))*")
_DIGITS = frozenset("0123456789")
# Escapes that may decode to what jsonb refuses: \u0000 and surrogates (paired or not).
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# PostgreSQL's numeric (and so jsonb) holds at most 131072 digits before the decimal point
# and 16383 after it, and reads exponents up to 1073741822; it refuses a JSON number past
# that ("value overflows numeric format"). Found by trying PostgreSQL 15.
NUMERIC_MAX_INTEGER_DIGITS = 131072
NUMERIC_MAX_SCALE = 16383
NUMERIC_MAX_EXPONENT = 1073741822


def _parse_float(text: str) -> Any:
    """A JSON number with a fraction or exponent as float; beyond float range, as Decimal.

    PostgreSQL's numeric holds numbers no float can (1.5e400): an exact Decimal keeps them
    instead of turning them into infinity, which is no JSON value. Numbers numeric cannot
    hold are refused, as jsonb refuses them.
    """
    number = float(text)
    overflowed = number - number != 0.0  # inf - inf is nan
    if "e" in text or "E" in text:  # within 7999 bytes, only an exponent leaves numeric's range
        exact = _numeric_with_exponent(text)
        return exact if overflowed else number
    return Decimal(text) if overflowed else number


def _numeric_with_exponent(text: str) -> Decimal:
    """The exact value of a number with an exponent, refused where numeric cannot hold it."""
    exponent_digits = text[text.lower().index("e") + 1 :].lstrip("+-").lstrip("0")
    if len(exponent_digits) > 10 or int(exponent_digits or "0") > NUMERIC_MAX_EXPONENT:
        raise ValueError(f"the number {text[:40]} has an exponent PostgreSQL numeric refuses")
    exact = Decimal(text)
    exponent = exact.as_tuple().exponent
    assert isinstance(exponent, int)  # a finite number
    if -exponent > NUMERIC_MAX_SCALE or (
        not exact.is_zero() and exact.adjusted() >= NUMERIC_MAX_INTEGER_DIGITS
    ):
        raise ValueError(f"the number {text[:40]} is outside the range of PostgreSQL numeric")
    return exact


def _parse_long_int(text: str) -> int:
    # Past Python's 4300-digit str-to-int limit; Decimal converts without it.
    return int(Decimal(text))


_decoder = json.JSONDecoder(parse_float=_parse_float, parse_constant=_reject_constant)
_decode_json = _decoder.decode
# The decoder's scanner: one value at an index, as (value, end); StopIteration if none there.
# (typeshed does not declare this attribute, which every JSONDecoder has.)
_scan_json: Callable[[str, int], tuple[Any, int]] = _decoder.scan_once  # type: ignore[attr-defined]
_decode_json_long_ints = json.JSONDecoder(
    parse_float=_parse_float, parse_constant=_reject_constant, parse_int=_parse_long_int
).decode


def decode_payload(payload: str) -> tuple[tuple[int, ...], Any]:
    """The key and value of a payload; strict, as docs/wire-format.md says.

    Returns ``(key, value)``: key a tuple of int (empty if none), value None if absent or
    ``null``. JSON integers come back as int, other numbers as float, except numbers beyond
    float range, which come back as an exact Decimal. Raises InvalidPayload with the UTF-8
    byte offset where the payload goes wrong (for the JSON part, where it begins).
    """
    head, colon, text = payload.partition(":")
    if head[:1] != "e":
        raise _prefix_error(payload)
    if len(head) == 1:
        key: tuple[int, ...] = ()
    else:
        if _KEY_LIST.fullmatch(head, 1) is None:
            raise _key_list_error(payload)
        key = tuple(map(int, head[1:].split(",")))
        if min(key) < INT64_MIN or max(key) > INT64_MAX:
            raise _key_list_error(payload)
    if not colon:
        return key, None
    return key, _decode_value(text, len(head) + 1)  # the head is ASCII: chars are bytes


def _decode_value(text: str, offset: int) -> Any:
    """Decode the JSON part that starts at byte ``offset``; None for ``null``."""
    try:
        value = _load_json(text)
    except json.JSONDecodeError as exc:
        raise _json_error(offset, f"{exc.msg} (at character {exc.pos} of the JSON text)") from None
    except (ValueError, ArithmeticError) as exc:  # NaN, Infinity, out of numeric's range
        raise _json_error(offset, str(exc)) from None
    except RecursionError:
        raise _json_error(offset, "it nests too deeply for Python") from None
    # json.loads accepts what jsonb refuses: \u0000 and lone surrogates. Look for them only
    # where the text could hold them (escapes, or raw surrogates in a str built in Python).
    if ("\\" in text and _SUSPECT_ESCAPE.search(text) is not None) or (
        not text.isascii() and not _canonical.encodable(text)
    ):
        problem = _unstorable(value)
        if problem is not None:
            raise _json_error(offset, problem)
    return value


def _load_json(text: str) -> Any:
    # Fast path: a canonical payload is one JSON value without whitespace, which the scanner
    # reads in one call. Anything else (whitespace, errors, huge integers) goes the full way,
    # which also words the error.
    try:
        value, end = _scan_json(text, 0)
        if end == len(text):
            return value
    except (StopIteration, ValueError):
        pass
    try:
        return _decode_json(text)
    except json.JSONDecodeError:
        raise
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise
    return _decode_json_long_ints(text)  # an integer of more than 4300 digits


def _json_error(offset: int, problem: str) -> InvalidPayload:
    return InvalidPayload(f"invalid JSON at byte {offset} of the payload: {problem}", offset=offset)


def _unstorable(value: Any) -> str | None:
    """Describe a string jsonb cannot hold (U+0000, a lone surrogate), or None."""
    if isinstance(value, str):
        bad = _canonical.UNSTORABLE.search(value)
        if bad is None:
            return None
        if bad.group() == "\x00":
            return "a string holds \\u0000, which jsonb cannot"
        return f"a string holds a lone surrogate U+{ord(bad.group()):04X}"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _unstorable(key) or _unstorable(item)
            if problem is not None:
                return problem
    elif isinstance(value, list):
        for item in value:
            problem = _unstorable(item)
            if problem is not None:
                return problem
    return None


def _prefix_error(payload: str) -> InvalidPayload:
    if not payload:
        return InvalidPayload("empty payload at byte 0: expected 'e'", offset=0)
    return InvalidPayload(f"payload starts with {payload[0]!r} at byte 0: expected 'e'", offset=0)


def _key_list_error(payload: str) -> InvalidPayload:
    """Scan the key list the slow way and say where (and why) it goes wrong."""
    end = len(payload)
    index = 1
    while True:
        start = index
        if index < end and payload[index] == "-":
            index += 1
        if index >= end or payload[index] not in _DIGITS:
            return _key_error(payload, index, "expected a digit")
        if payload[index] == "0":
            if index > start:
                return _key_error(payload, index, "expected a digit 1-9 after '-' (no -0)")
            index += 1
        else:
            while index < end and payload[index] in _DIGITS:
                index += 1
        digits = payload[start:index]
        # More than 19 digits is out of range anyway (and int() refuses past 4300 digits).
        if len(digits.lstrip("-")) > 19 or not INT64_MIN <= int(digits) <= INT64_MAX:
            shown = digits if len(digits) <= 40 else f"{digits[:20]}...({len(digits)} characters)"
            return InvalidPayload(
                f"key element {shown} at byte {start} is outside the signed 64-bit range",
                offset=start,
            )
        if index < end and payload[index] == ",":
            index += 1
            continue
        if index >= end or payload[index] == ":":
            # Not reached for a payload the fast path refused; kept total for safety.
            return _key_error(payload, index, "a valid key list (internal inconsistency)")
        return _key_error(payload, index, "expected ',' or ':' or the end after a key element")


def _key_error(payload: str, index: int, expected: str) -> InvalidPayload:
    found = repr(payload[index]) if index < len(payload) else "the end"
    # Everything before index is ASCII (it passed the scan), so index is the byte offset.
    return InvalidPayload(f"bad key list: {found} at byte {index}: {expected}", offset=index)
