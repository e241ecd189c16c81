"""The JSON part of a payload, read strictly: what PostgreSQL's jsonb would store, no more.

json's decoder (or msgspec's, the ``pghub[msgspec]`` extra) does the reading; this module
adds what jsonb refuses and json accepts (NaN, numbers beyond numeric's range, ``\\u0000``,
lone surrogates), the caller's number hooks, and the error wording. ``pghub.wire`` reads the
prefix and key list and calls :func:`read_json` only off its hot path.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from . import _canonical
from .errors import InvalidPayload

NumberHook = Callable[[str], Any]

# Escapes that may decode to what jsonb refuses: \u0000 and surrogates (paired or not).
SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# PostgreSQL's numeric (and so jsonb) holds at most 131072 digits before the decimal point
# and 16383 after it, and reads exponents up to 1073741822; it refuses a JSON number past
# that ("value overflows numeric format"). Found by trying PostgreSQL 15.
NUMERIC_MAX_INTEGER_DIGITS = 131072
NUMERIC_MAX_SCALE = 16383
NUMERIC_MAX_EXPONENT = 1073741822


def float_within_numeric(text: str) -> Any:
    """A JSON number with a fraction or exponent as float; beyond float range, as Decimal.

    PostgreSQL's numeric holds numbers no float can (1.5e400): an exact Decimal keeps them
    instead of turning them into infinity, which is no JSON value. Numbers numeric cannot
    hold are refused, as jsonb refuses them.
    """
    number = float(text)
    overflowed = number - number != 0.0  # inf - inf is nan
    if "e" in text or "E" in text:  # within 7999 bytes, only an exponent leaves numeric's range
        exact = numeric_with_exponent(text)
        return exact if overflowed else number
    return Decimal(text) if overflowed else number


def numeric_with_exponent(text: str) -> Decimal:
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


class HookFailed(Exception):
    """A caller's parse_float/parse_int raised: carries its exception past the JSON errors."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def _float_hook(hook: NumberHook) -> NumberHook:
    """The caller's parse_float, after the range checks the default path makes."""

    def parse(text: str) -> Any:
        if "e" in text or "E" in text:
            numeric_with_exponent(text)  # refuses what numeric cannot hold, as by default
        try:
            return hook(text)
        except Exception as exc:
            raise HookFailed(exc) from None

    return parse


def _int_hook(hook: NumberHook) -> NumberHook:
    def parse(text: str) -> Any:
        try:
            return hook(text)
        except Exception as exc:
            raise HookFailed(exc) from None

    return parse


class JsonReader:
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


def msgspec_decoder() -> Callable[[str], Any] | None:
    """msgspec's JSON decoder with pghub's float parser, if msgspec is installed (the
    ``pghub[msgspec]`` extra) and ``PGHUB_NO_ACCELERATOR`` is not set.

    With our float parser it accepts exactly what json's scanner accepts, with the same
    values: it reads integers of any size exactly and leaves every fraction and exponent to
    float_within_numeric. Everything it refuses goes the pure way, which decides and words
    the error.
    tests/python/test_decoder_equivalence.py holds it to the reference decoder.
    """
    if os.environ.get("PGHUB_NO_ACCELERATOR"):
        return None
    try:
        msgspec_json = importlib.import_module("msgspec.json")
    except ImportError:
        return None
    decode: Callable[[str], Any] = msgspec_json.Decoder(float_hook=float_within_numeric).decode
    return decode


PLAIN_READER = JsonReader(float_within_numeric, None)
PLAIN_READER.fast = msgspec_decoder()
#: The accelerator decoding payloads without number hooks: "msgspec", or None (pure Python).
ACCELERATOR = None if PLAIN_READER.fast is None else "msgspec"
# Readers with the caller's number hooks, by hook pair: callers pass the same few functions.
_hooked_readers: dict[tuple[NumberHook | None, NumberHook | None], JsonReader] = {}
_HOOKED_READERS_SIZE = 64


def reader_for(parse_float: NumberHook | None, parse_int: NumberHook | None) -> JsonReader:
    reader = _hooked_readers.get((parse_float, parse_int))
    if reader is None:
        if len(_hooked_readers) >= _HOOKED_READERS_SIZE:
            _hooked_readers.clear()
        reader = JsonReader(
            float_within_numeric if parse_float is None else _float_hook(parse_float),
            None if parse_int is None else _int_hook(parse_int),
        )
        _hooked_readers[parse_float, parse_int] = reader
    return reader


def read_json(reader: JsonReader, text: str, offset: int) -> Any:
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
        raise json_error(offset, f"{exc.msg} (at character {exc.pos} of the JSON text)") from None
    except (ValueError, ArithmeticError) as exc:  # NaN, Infinity, out of numeric's range
        raise json_error(offset, str(exc)) from None
    except RecursionError:
        raise json_error(offset, "it nests too deeply for Python") from None
    except HookFailed as failed:
        raise failed.error from None


def refuse_unstorable(value: Any, offset: int) -> None:
    problem = _unstorable(value)
    if problem is not None:
        raise json_error(offset, problem)


def json_error(offset: int, problem: str) -> InvalidPayload:
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
