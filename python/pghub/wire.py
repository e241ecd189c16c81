"""The pghub wire format: topic to channel, and the payload ``e<keys>[:<json>]`` both ways.

docs/wire-format.md states the contract; tests/vectors.json is its executable form, run
against this module and against the SQL functions of the extension alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from . import _canonical
from . import _jsonread as jsonread
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

#: The accelerator decoding payloads without number hooks: "msgspec", or None (pure Python).
ACCELERATOR = jsonread.ACCELERATOR
NumberHook = jsonread.NumberHook

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
    key: Iterable[int] | None = None,
    value: Any = None,
    *,
    default: Default | None = None,
    limit: int | None = MAX_PAYLOAD_BYTES,
) -> str:
    """The canonical payload of an event: the same text as SQL ``pghub.encode(key, value)``.

    ``key`` is None or an iterable of int (not bool) within the signed 64-bit range.
    ``value`` is JSON made of dict (str keys), list, tuple, str, int, float, bool, None and
    Decimal (written as PostgreSQL numeric prints it, scale kept); ``default`` converts
    anything else, as in :func:`json.dumps`. Raises InvalidKey, InvalidValue (naming the
    path inside the value) or PayloadTooLarge (over ``limit`` bytes of UTF-8: by default
    :data:`MAX_PAYLOAD_BYTES`, what a notification holds; None for an event of a durable
    topic, which is journaled whole, as SQL ``pghub.notify`` journals it).
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
    if limit is None:
        return payload
    size = len(payload) if payload.isascii() else len(payload.encode("utf-8"))
    if size > limit:
        raise PayloadTooLarge(
            f"payload is {size} bytes of UTF-8, over the limit of {limit} bytes",
            size=size,
            limit=limit,
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

# A key list in canonical form. Elements of at most 18 digits are within int64; a list with
# a 19-digit element needs the range check (and a longer one is out of range anyway).
_SHORT_KEY_LIST = re.compile(r"(?:0|-?[1-9][0-9]{0,17})(?:,(?:0|-?[1-9][0-9]{0,17}))*")
_KEY_LIST = re.compile(r"(?:0|-?[1-9][0-9]{0,18})(?:,(?:0|-?[1-9][0-9]{0,18}))*")
_DIGITS = frozenset("0123456789")


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
        reader = jsonread.PLAIN_READER
    else:
        reader = jsonread.reader_for(parse_float, parse_int)
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
            raise jsonread.json_error(size + 1, "it nests too deeply for Python") from None
        except jsonread.HookFailed as failed:
            raise failed.error from None
    if end != len(text):
        value = jsonread.read_json(reader, text, size + 1)
    # json accepts what jsonb refuses: \u0000 and lone surrogates. Look for them only where
    # the text could hold them (escapes, or raw surrogates in a str built in Python).
    if "\\" in text and jsonread.SUSPECT_ESCAPE.search(text) is not None:
        jsonread.refuse_unstorable(value, size + 1)
    elif not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            jsonread.refuse_unstorable(value, size + 1)
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
