"""Canonical JSON: the text PostgreSQL's ``jsonb`` prints, without whitespace, ``$`` escaped.

Two writers produce the same text. The fast one reorders objects into jsonb order and lets
the C encoder of :mod:`json` write the result; it only takes values where that encoder is
provably byte-identical (see :func:`_prepare`). Anything else (Decimal, floats that Python
prints with an exponent, ``default=`` conversions, errors) goes to the careful writer,
which is the reference and names the path of any unsupported part.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from .errors import InvalidValue, PayloadTooLarge

# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more.
MAX_PAYLOAD_BYTES = 7999

Default = Callable[[Any], Any]

# json's C string escaper, ensure_ascii=False flavour: `"` `\` \b \f \n \r \t and \u00xx
# (lower-case hex) for the other characters below U+0020, raw UTF-8 for everything else.
# That is exactly PostgreSQL's escape_json().
_quote: Callable[[str], str] = json.encoder.encode_basestring


def _refuse(obj: Any) -> Any:
    raise TypeError(type(obj).__name__)


def _make_chunks() -> Callable[[Any, int], Iterable[str]]:
    """json's encoder without its per-call set-up (the C one when the interpreter has it):
    called as ``chunks(value, 0)``, it gives the text in pieces.

    No circular check: _prepare has walked the whole value first, and a cycle ends that
    walk with RecursionError. No NaN: _prepare let no such float through.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is not None:
        chunks: Callable[[Any, int], Iterable[str]] = make(
            None, _refuse, _quote, None, ":", ",", False, False, False
        )
        return chunks
    encoder = json.JSONEncoder(  # pragma: no cover - interpreters without the C accelerator
        ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=False
    )
    return lambda value, _: encoder.iterencode(value)  # pragma: no cover


_chunks = _make_chunks()

# What jsonb cannot hold: U+0000 and lone surrogates (a paired one cannot exist in a str).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class _Fallback(Exception):
    """The fast writer cannot vouch for this value: let the careful writer do it."""


def dumps(value: Any, default: Default | None = None) -> str:
    """The canonical JSON text of ``value``; raises InvalidValue naming the bad part."""
    try:
        # With default= too: a value the fast writer takes whole has nothing to convert.
        text = "".join(_chunks(_prepare(value), 0))
        # json escapes U+0000 (a string holding a backslash and "u0000" also matches: the
        # careful writer then decides) and writes surrogates raw, which UTF-8 refuses.
        if "\\u0000" in text or not (text.isascii() or encodable(text)):
            raise _Fallback
    except (_Fallback, ValueError, TypeError, RecursionError):
        text = careful_dumps(value, default)
    return text.replace("$", "\\u0024")


def encodable(text: str) -> bool:
    """True unless ``text`` holds a surrogate (UTF-8 has no form for one)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def jsonb_key_order(key: str) -> tuple[int, str]:
    """Sort key of jsonb object members: shorter UTF-8 first, then byte order.

    For valid Unicode, code point order is UTF-8 byte order, so the str itself serves.
    """
    return (len(key) if key.isascii() else len(key.encode("utf-8")), key)


# --- the fast writer -------------------------------------------------------------------


def _float_is_plain(number: float) -> bool:
    """True where repr (which json writes) is already canonical: no exponent, no -0.0.

    repr writes plain digits exactly for 1e-4 <= |x| < 1e16; NaN and infinities fail here.
    """
    return (
        1e-4 <= number < 1e16
        or -1e16 < number <= -1e-4
        or (number == 0.0 and math.copysign(1.0, number) > 0.0)
    )


_PLAIN = frozenset((str, int, bool, type(None)))  # json writes these as canonical JSON does


# Key orders of object shapes seen before: events of one kind repeat the same keys (and
# lists of records repeat them within one event), so most objects skip both sorts.
_key_orders: dict[tuple[str, ...], tuple[str, ...] | None] = {}
_KEY_ORDER_CACHE_SIZE = 4096
_KEY_ORDER_CACHE_MAX_KEYS = 32  # and at most this many characters of keys: a few MB at most
_KEY_ORDER_CACHE_MAX_CHARS = 1024


def _jsonb_ordered(obj: dict[Any, Any]) -> tuple[str, ...] | None:
    """The keys of ``obj`` in jsonb order, or None if they are in that order already.

    A non-str key raises TypeError (from join) or _Fallback: both mean fall back.
    """
    keys = tuple(obj)
    if len(keys) < 2:
        if keys and type(keys[0]) is not str:
            raise _Fallback
        return None
    cached = _key_orders.get(keys, keys)
    if cached is not keys:
        return cached
    joined = "".join(keys)
    if joined.isascii():  # two C sorts: by text, then stably by length
        ordered = sorted(keys)
        ordered.sort(key=len)
    else:
        ordered = sorted(keys, key=jsonb_key_order)
    result = None if tuple(ordered) == keys else tuple(ordered)
    if len(keys) <= _KEY_ORDER_CACHE_MAX_KEYS and len(joined) <= _KEY_ORDER_CACHE_MAX_CHARS:
        if len(_key_orders) >= _KEY_ORDER_CACHE_SIZE:
            _key_orders.clear()
        _key_orders[keys] = result
    return result


def _prepare(value: Any) -> Any:
    """Return ``value`` with every object in jsonb order, or raise _Fallback.

    After this, json's C encoder writes canonical JSON byte for byte: strings escape alike
    (checked on the output for U+0000 and surrogates), ints and plain floats print alike,
    and every type left is one json writes natively. Unchanged parts are returned as is,
    and nothing is copied where nothing changes (the common case: keys already in order).
    """
    kind = type(value)
    if kind is dict:
        ordered = _jsonb_ordered(value)
        if ordered is not None:  # a copy in jsonb order, its members prepared on the way
            result = {}
            for key in ordered:
                item = value[key]
                kind = type(item)
                if kind is float:
                    if not (1e-4 <= item < 1e16 or _float_is_plain(item)):
                        raise _Fallback
                    result[key] = item
                else:
                    result[key] = item if kind in _PLAIN else _prepare(item)
            return result
        changed = None  # keys in order already: copy only if a member changes
        for key, item in value.items():
            kind = type(item)
            if kind in _PLAIN:
                continue
            if kind is float:
                if not (1e-4 <= item < 1e16 or _float_is_plain(item)):
                    raise _Fallback
                continue
            new = _prepare(item)
            if new is not item:
                if changed is None:
                    changed = {}
                changed[key] = new
        if changed is None:
            return value
        result = value.copy()  # never change the caller's value
        result.update(changed)  # existing keys: the order stays
        return result
    if kind is list or kind is tuple:
        items = None
        for index, item in enumerate(value):
            kind = type(item)
            if kind in _PLAIN:
                new = item
            elif kind is float:
                if not (1e-4 <= item < 1e16 or _float_is_plain(item)):
                    raise _Fallback
                new = item
            else:
                new = _prepare(item)
            if items is not None:
                items.append(new)
            elif new is not item:
                items = list(value[:index])
                items.append(new)
        return value if items is None else items
    if kind in _PLAIN:
        return value
    if kind is float and _float_is_plain(value):
        return value
    raise _Fallback


# --- the careful writer (the reference) --------------------------------------------------


def careful_dumps(value: Any, default: Default | None = None) -> str:
    """Canonical JSON written node by node (``$`` not yet escaped)."""
    out: list[str] = []
    try:
        _write(value, out, [], default)
    except RecursionError:
        raise InvalidValue("value nests too deeply (or contains itself)") from None
    return "".join(out)


def path_text(path: list[str | int]) -> str:
    """``value["a"][3]``: where a part sits inside the value."""
    return "value" + "".join(f"[{json.dumps(step)}]" for step in path)


def _fail(path: list[str | int], problem: str) -> InvalidValue:
    return InvalidValue(f"{path_text(path)}: {problem}")


def _write(value: Any, out: list[str], path: list[str | int], default: Default | None) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        bad = UNSTORABLE.search(value)
        if bad is not None:
            what = (
                "U+0000" if bad.group() == "\x00" else f"a lone surrogate U+{ord(bad.group()):04X}"
            )
            raise _fail(path, f"string holds {what} at index {bad.start()}, which jsonb cannot")
        out.append(_quote(value))
    elif isinstance(value, int):
        out.append(int_text(value))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(path, f"{value!r} is not a JSON number")
        out.append(float_text(value))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise _fail(path, f"Decimal {value} is not a JSON number")
        out.append(decimal_text(value))
    elif isinstance(value, dict):
        _write_object(value, out, path, default)
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            path.append(index)
            _write(item, out, path, default)
            path.pop()
        out.append("]")
    elif default is not None:
        converted = default(value)
        if converted is value:
            raise _fail(path, f"default= returned the {type(value).__name__} unchanged")
        _write(converted, out, path, default)
    else:
        raise _fail(path, f"{type(value).__name__} is not JSON serializable")


def _write_object(
    obj: dict[Any, Any], out: list[str], path: list[str | int], default: Default | None
) -> None:
    for key in obj:
        if not isinstance(key, str):
            raise _fail(path, f"object key {key!r} is a {type(key).__name__}, not a str")
        bad = UNSTORABLE.search(key)
        if bad is not None:
            raise _fail(path, f"object key {json.dumps(key)} holds U+{ord(bad.group()):04X}")
    out.append("{")
    for index, key in enumerate(sorted(obj, key=jsonb_key_order)):
        if index:
            out.append(",")
        out.append(_quote(key))
        out.append(":")
        path.append(key)
        _write(obj[key], out, path, default)
        path.pop()
    out.append("}")


# --- numbers as PostgreSQL numeric prints them --------------------------------------------


def _too_long(digits: int) -> PayloadTooLarge:
    # Refuse before printing: a huge number would cost time and memory only to be refused.
    return PayloadTooLarge(
        f"a number of at least {digits} digits cannot fit the {MAX_PAYLOAD_BYTES}-byte payload",
        size=digits,
        limit=MAX_PAYLOAD_BYTES,
    )


def int_text(number: int) -> str:
    """Decimal digits of an int, also past Python's 4300-digit str() limit."""
    try:
        return int.__repr__(number)
    except ValueError:  # int_max_str_digits: Decimal converts without that limit
        digits = int((number.bit_length() - 1) * 0.30102999566398) + 1
        if digits > MAX_PAYLOAD_BYTES:
            raise _too_long(digits) from None
        return format(Decimal(number), "f")


def float_text(number: float) -> str:
    """A finite float in plain decimal from its shortest repr; -0.0 as 0.0."""
    text = float.__repr__(number)
    if "e" in text:
        # The repr's digits and exponent give numeric's scale: max(0, fraction digits - exp).
        text = format(Decimal(text), "f")
    if text[0] == "-" and number == 0.0:
        text = text[1:]
    return text


def decimal_text(number: Decimal) -> str:
    """A finite Decimal as numeric_out prints it: plain, scale kept, no negative zero."""
    parts = number.as_tuple()
    exponent = parts.exponent
    assert isinstance(exponent, int)  # finite
    if exponent < 0:
        length = max(len(parts.digits), -exponent)
    else:
        length = 1 if number.is_zero() else len(parts.digits) + exponent
    if length > MAX_PAYLOAD_BYTES:  # the plain text is at least this long
        raise _too_long(length)
    text = format(number, "f")
    if text[0] == "-" and number.is_zero():
        text = text[1:]
    return text
