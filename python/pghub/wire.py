"""The pghub wire format: topic to channel, and the payload ``e<keys>[:<json>]`` both ways.

docs/wire-format.md states the contract; tests/vectors.json is its executable form, run
against this module and against the SQL functions of the extension alike.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from . import _canonical
from ._canonical import MAX_PAYLOAD_BYTES, Default
from .errors import InvalidKey, InvalidPayload, InvalidTopic, PayloadTooLarge
from .events import Event

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "channel",
    "decode_event",
    "decode_payload",
    "encode_payload",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_TOPIC_LENGTH = 63

# --- topics ------------------------------------------------------------------------------

_TOPIC = re.compile(r"[A-Za-z0-9_]{1,63}")
_TOPIC_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
# Topics seen before: channel() runs on every send, and applications use few topics.
_channels: dict[str, str] = {}
_CHANNEL_CACHE_SIZE = 4096


def channel(topic: str) -> str:
    """The notification channel of ``topic``: the topic with ASCII letters in lower case.

    A topic is 1 to 63 characters of ``[A-Za-z0-9_]``; anything else is an InvalidTopic
    that names the topic and the rule it breaks.
    """
    try:
        return _channels[topic]
    except (KeyError, TypeError):
        pass
    if not isinstance(topic, str) or _TOPIC.fullmatch(topic) is None:
        raise InvalidTopic(_topic_problem(topic))
    name = topic.lower()  # the topic is ASCII here, so this folds A-Z only
    if len(_channels) < _CHANNEL_CACHE_SIZE:
        _channels[topic] = name
    return name


def _topic_problem(topic: object) -> str:
    if not isinstance(topic, str):
        return f"topic {topic!r} is a {type(topic).__name__}, not a str"
    if not topic:
        return "topic '' is empty: a topic has 1 to 63 characters of [A-Za-z0-9_]"
    for index, char in enumerate(topic):
        if char not in _TOPIC_CHARS:
            return (
                f"topic {topic!r} has {char!r} at index {index}: "
                "a topic has only characters of [A-Za-z0-9_]"
            )
    return (
        f"topic {topic!r} is {len(topic)} characters long: "
        f"a topic has at most {MAX_TOPIC_LENGTH} characters"
    )


# --- encoding ----------------------------------------------------------------------------


def encode_payload(
    key: Iterable[int] | None = None, value: Any = None, *, default: Default | None = None
) -> str:
    """The canonical payload of an event: the same text as SQL ``pghub.encode(key, value)``.

    ``key`` is None or an iterable of int (not bool) within the signed 64-bit range.
    ``value`` is JSON made of dict (str keys), list, tuple, str, int, float, bool, None and
    Decimal (written as PostgreSQL numeric prints it, scale kept); ``default`` converts
    anything else, as in :func:`json.dumps`. Raises InvalidKey, InvalidValue (naming the
    path inside the value) or PayloadTooLarge (over :data:`MAX_PAYLOAD_BYTES` of UTF-8).
    """
    if key is None:
        payload = "e"
    elif type(key) is tuple and len(key) == 1 and type(key[0]) is int:
        # The common key: one int (not a bool: its type is not int). Range as in _key_text.
        if not INT64_MIN <= key[0] <= INT64_MAX:
            _check_key_items(key)
        payload = "e" + int.__repr__(key[0])
    else:
        payload = "e" + _key_text(key)
    if value is not None:
        text = _canonical.dumps(value, default)
        if text != "null":  # a default= that yields None: no value, as for None itself
            payload = payload + ":" + text
    # No surrogates are left (both writers refuse them), so the UTF-8 encoding exists.
    size = len(payload) if payload.isascii() else len(payload.encode("utf-8"))
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(
            f"payload is {size} bytes of UTF-8, over the limit of {MAX_PAYLOAD_BYTES} bytes",
            size=size,
            limit=MAX_PAYLOAD_BYTES,
        )
    return payload


def _key_text(key: Iterable[int]) -> str:
    """``1,2,3`` for a key; empty for an empty key."""
    if isinstance(key, (str, bytes, bytearray)):
        raise InvalidKey(f"key must be an iterable of int, not {type(key).__name__} {key!r}")
    try:
        items = key if type(key) is tuple or type(key) is list else tuple(key)
    except TypeError:
        raise InvalidKey(
            f"key must be None or an iterable of int, not {type(key).__name__}"
        ) from None
    if not items:
        return ""
    for item in items:
        if type(item) is not int:
            _check_key_items(items)
    if min(items) < INT64_MIN or max(items) > INT64_MAX:
        _check_key_items(items)
    return ",".join(map(int.__repr__, items))


def _check_key_items(items: Iterable[object]) -> None:
    """Raise InvalidKey for the first element that is not an int64."""
    for index, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, int):
            raise InvalidKey(f"key[{index}] is {item!r} ({type(item).__name__}), not an int")
        if not INT64_MIN <= item <= INT64_MAX:
            # Python refuses to print an int of more than 4,300 digits: say its size instead.
            shown = str(item) if item.bit_length() <= 256 else f"an int of {item.bit_length()} bits"
            raise InvalidKey(
                f"key[{index}] is {shown}, outside the signed 64-bit range {INT64_MIN}..{INT64_MAX}"
            )


# --- decoding ----------------------------------------------------------------------------

NumberHook = Callable[[str], Any]

# A key list in canonical form. Elements of at most 18 digits are within int64; a list with
# a 19-digit element needs the range check (and a longer one is out of range anyway).
_SHORT_KEY_LIST = re.compile(r"(?:0|-?[1-9][0-9]{0,17})(?:,(?:0|-?[1-9][0-9]{0,17}))*")
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


class _HookFailed(Exception):
    """A caller's parse_float/parse_int raised: carries its exception past the JSON errors."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def _float_hook(hook: NumberHook) -> NumberHook:
    """The caller's parse_float, after the range checks the default path makes."""

    def parse(text: str) -> Any:
        if "e" in text or "E" in text:
            _numeric_with_exponent(text)  # refuses what numeric cannot hold, as by default
        try:
            return hook(text)
        except Exception as exc:
            raise _HookFailed(exc) from None

    return parse


def _int_hook(hook: NumberHook) -> NumberHook:
    def parse(text: str) -> Any:
        try:
            return hook(text)
        except Exception as exc:
            raise _HookFailed(exc) from None

    return parse


class _JsonReader:
    """One configuration of json's decoder: a one-call scanner, the full decoder for anything
    the scanner does not read whole (and for the error message), and a full decoder for
    integers past Python's digit limit."""

    __slots__ = ("decode", "decode_long_ints", "fast", "scan")

    def __init__(self, parse_float: NumberHook, parse_int: NumberHook | None) -> None:
        # A whole-text decoder tried before the scanner, where an accelerator is installed.
        self.fast: Callable[[str], Any] | None = None
        decoder = json.JSONDecoder(
            parse_float=parse_float, parse_int=parse_int, parse_constant=_reject_constant
        )
        self.decode = decoder.decode
        # The scanner reads one value at an index, as (value, end); StopIteration if none
        # there. (typeshed does not declare this attribute, which every JSONDecoder has.)
        self.scan: Callable[[str, int], tuple[Any, int]] = decoder.scan_once  # type: ignore[attr-defined]
        self.decode_long_ints = json.JSONDecoder(
            parse_float=parse_float,
            parse_int=parse_int or _parse_long_int,
            parse_constant=_reject_constant,
        ).decode


def _msgspec_decoder() -> Callable[[str], Any] | None:
    """msgspec's JSON decoder with pghub's float parser, if msgspec is installed (the
    ``pghub[msgspec]`` extra) and ``PGHUB_NO_ACCELERATOR`` is not set.

    With our parse_float it accepts exactly what json's scanner accepts, with the same values:
    it reads integers of any size exactly and leaves every fraction and exponent to
    _parse_float. Everything it refuses goes the pure way, which decides and words the error.
    tests/python/test_decoder_equivalence.py holds it to the reference decoder.
    """
    if os.environ.get("PGHUB_NO_ACCELERATOR"):
        return None
    try:
        msgspec_json = importlib.import_module("msgspec.json")
    except ImportError:
        return None
    decode: Callable[[str], Any] = msgspec_json.Decoder(float_hook=_parse_float).decode
    return decode


_PLAIN_READER = _JsonReader(_parse_float, None)
_PLAIN_READER.fast = _msgspec_decoder()
#: The accelerator decoding payloads without number hooks: "msgspec", or None (pure Python).
ACCELERATOR = None if _PLAIN_READER.fast is None else "msgspec"
# Readers with the caller's number hooks, by hook pair: callers pass the same few functions.
_hooked_readers: dict[tuple[NumberHook | None, NumberHook | None], _JsonReader] = {}
_HOOKED_READERS_SIZE = 64


def _reader(parse_float: NumberHook | None, parse_int: NumberHook | None) -> _JsonReader:
    reader = _hooked_readers.get((parse_float, parse_int))
    if reader is None:
        if len(_hooked_readers) >= _HOOKED_READERS_SIZE:
            _hooked_readers.clear()
        reader = _JsonReader(
            _parse_float if parse_float is None else _float_hook(parse_float),
            None if parse_int is None else _int_hook(parse_int),
        )
        _hooked_readers[parse_float, parse_int] = reader
    return reader


def decode_payload(
    payload: str,
    *,
    parse_float: NumberHook | None = None,
    parse_int: NumberHook | None = None,
) -> tuple[tuple[int, ...], Any]:
    """The key and value of a payload; strict, as docs/wire-format.md says.

    Returns ``(key, value)``: key a tuple of int (empty if none), value None if absent or
    ``null``. JSON integers come back as int, other numbers as float, except numbers beyond
    float range, which come back as an exact Decimal. Raises InvalidPayload with the UTF-8
    byte offset where the payload goes wrong (for the JSON part, where it begins).

    ``parse_float`` and ``parse_int``, as in :func:`json.loads`, are called with the text of
    each JSON number with (and without) a fraction or exponent: ``parse_float=Decimal``
    gives exact numbers. They change no verdict: a number PostgreSQL's numeric refuses is
    refused before ``parse_float`` sees it, and an exception a hook raises propagates as is.
    """
    # Written for speed (it runs once for every event received); the error paths, off the
    # hot path, say what is wrong and where.
    head, colon, text = payload.partition(":")
    size = len(head)
    if size == 1:
        if head != "e":
            raise _prefix_error(payload)
        key: tuple[int, ...] = ()
    elif head[:1] != "e":
        raise _prefix_error(payload)
    else:
        digits = head[1:]
        # The common key: one element of 1 to 18 ASCII digits without a leading zero.
        if digits.isdigit() and size < 20 and digits.isascii() and (digits[0] != "0" or size == 2):
            key = (int(digits),)
        else:
            key = _key_list(digits, payload)
    if not colon:
        return key, None
    if parse_float is None and parse_int is None:
        reader = _PLAIN_READER
    else:
        reader = _reader(parse_float, parse_int)
    fast = reader.fast
    if fast is not None:  # msgspec; whatever it refuses, the pure way decides
        try:
            value = fast(text)
            end = len(text)
        except Exception:
            end = -1
    else:
        try:
            # A canonical payload is one JSON value without whitespace: one scanner call
            # reads it. Anything else (whitespace, errors) goes the full way, which words
            # the error.
            value, end = reader.scan(text, 0)
        except (StopIteration, ValueError):
            end = -1
        except RecursionError:
            raise _json_error(size + 1, "it nests too deeply for Python") from None
        except _HookFailed as failed:
            raise failed.error from None
    if end != len(text):
        value = _decode_json(reader, text, size + 1)
    # json accepts what jsonb refuses: \u0000 and lone surrogates. Look for them only where
    # the text could hold them (escapes, or raw surrogates in a str built in Python).
    if "\\" in text and _SUSPECT_ESCAPE.search(text) is not None:
        _refuse_unstorable(value, size + 1)
    elif not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            _refuse_unstorable(value, size + 1)
    return key, value


def decode_event(
    channel: str,
    payload: str,
    *,
    parse_float: NumberHook | None = None,
    parse_int: NumberHook | None = None,
) -> Event:
    """The event a notification carries: its channel as topic, and the decoded payload.

    ``channel`` is taken as PostgreSQL delivered it (the lower-case form of the topic).
    ``parse_float`` and ``parse_int`` are as for :func:`decode_payload`.
    """
    key, value = decode_payload(payload, parse_float=parse_float, parse_int=parse_int)
    return Event(channel, key, value)


def _key_list(digits: str, payload: str) -> tuple[int, ...]:
    """The key of a key list other than one short non-negative element (``digits``)."""
    if _SHORT_KEY_LIST.fullmatch(digits) is not None:
        return tuple(map(int, digits.split(",")))
    if _KEY_LIST.fullmatch(digits) is not None:
        key = tuple(map(int, digits.split(",")))
        if min(key) >= INT64_MIN and max(key) <= INT64_MAX:
            return key
    raise _key_list_error(payload)


def _decode_json(reader: _JsonReader, text: str, offset: int) -> Any:
    """The JSON part read the full way (the part starts at byte ``offset``), or the error."""
    try:
        try:
            return reader.decode(text)
        except json.JSONDecodeError:
            raise
        except ValueError as exc:
            if "integer string conversion" not in str(exc):
                raise
        return reader.decode_long_ints(text)  # an integer of more than 4300 digits
    except json.JSONDecodeError as exc:
        raise _json_error(offset, f"{exc.msg} (at character {exc.pos} of the JSON text)") from None
    except (ValueError, ArithmeticError) as exc:  # NaN, Infinity, out of numeric's range
        raise _json_error(offset, str(exc)) from None
    except RecursionError:
        raise _json_error(offset, "it nests too deeply for Python") from None
    except _HookFailed as failed:
        raise failed.error from None


def _refuse_unstorable(value: Any, offset: int) -> None:
    problem = _unstorable(value)
    if problem is not None:
        raise _json_error(offset, problem)


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
