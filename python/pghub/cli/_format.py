"""How events look on a terminal and in a pipe."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from .._canonical import decimal_text, float_text, int_text, jsonb_key_order
from .._canonical import dumps as canonical_json
from ..errors import PghubError
from ..events import Action, Advisory, Event

_RESET = "\033[0m"
_BOLD_CYAN = "\033[1;36m"
_YELLOW = "\033[33m"
_GREEN = "\033[32m"
_DIM = "\033[2m"
_RED = "\033[31m"
_TIGHT = (",", ":")


def json_line(event: Event) -> str:
    """``{"topic":..,"key":[..],"value":..}``: one event as one line of JSON, and its
    ``"position"`` last when it has one (a durable consumer's).

    The value is written as pghub writes it on the wire (canonical JSON), so that numbers
    PostgreSQL sent as exact numerics stay exact.
    """
    position = event.position
    tail = "" if position is None else f',"position":{json.dumps(position)}'
    return (
        f'{{"topic":{json.dumps(event.topic)},'
        f'"key":{json.dumps(list(event.key), separators=_TIGHT)},'
        f'"value":{value_text(event.value)}{tail}}}'
    )


def pretty_line(event: Event, *, colour: bool) -> str:
    """``12:00:01.234  orders  [1, 2]  {"op":"ins"}`` for a person; a durable consumer's
    event ends with ``  @ POSITION``."""
    now = time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
    key = "[" + ", ".join(str(part) for part in event.key) + "]"
    value = value_text(event.value)
    position = event.position
    if not colour:
        tail = "" if position is None else f"  @ {position}"
        return f"{stamp}  {event.topic}  {key}  {value}{tail}"
    tail = "" if position is None else f"  {_DIM}@ {position}{_RESET}"
    return (
        f"{_DIM}{stamp}{_RESET}  {_BOLD_CYAN}{event.topic}{_RESET}  {_YELLOW}{key}{_RESET}  "
        f"{value}{tail}"
    )


def value_text(value: Any) -> str:
    """A received value as canonical JSON, however deep it nests.

    The library's writer recurses, and gives up on values nested a few hundred levels deep
    (fewer when floats send it the careful way); the hub decodes deeper ones than that. Those
    are written here without recursion, in the same canonical form.
    """
    try:
        return canonical_json(value)
    except PghubError:
        return _deep_json(value).replace("$", "\\u0024")


_quote = json.encoder.encode_basestring  # the library's string escaper (jsonb's escape_json)


def _deep_json(value: Any) -> str:
    """Canonical JSON without recursion: a stack of what is still to write."""
    out: list[str] = []
    todo: list[Any] = [value]
    while todo:
        item = todo.pop()
        if type(item) is _Text:
            out.append(item)
        elif item is None:
            out.append("null")
        elif item is True or item is False:
            out.append("true" if item else "false")
        elif isinstance(item, str):
            out.append(_quote(item))
        elif isinstance(item, int):
            out.append(int_text(item))
        elif isinstance(item, float):
            out.append(float_text(item))
        elif isinstance(item, Decimal):
            out.append(decimal_text(item))
        elif isinstance(item, dict):
            parts: list[Any] = [_Text("{")]
            for index, key in enumerate(sorted(item, key=jsonb_key_order)):
                parts += [_Text(("," if index else "") + _quote(key) + ":"), item[key]]
            todo += reversed([*parts, _Text("}")])
        elif isinstance(item, (list, tuple)):
            parts = [_Text("[")]
            for index, element in enumerate(item):
                parts += [_Text(","), element] if index else [element]
            todo += reversed([*parts, _Text("]")])
        else:
            raise TypeError(f"{type(item).__name__} is not JSON")
    return "".join(out)


class _Text(str):
    """Punctuation already written out, told apart from string values on the stack."""

    __slots__ = ()


def advisory_text(advisory: Advisory) -> str:
    """``subscribe orders``, ``overflow: 12 events lost``, ``disconnect``..."""
    text = advisory.action.value
    if advisory.topic is not None:
        text += f" {advisory.topic}"
    if advisory.action is Action.OVERFLOW:
        text += f": {advisory.lost} events lost"
    if advisory.action is Action.GAP:
        text += ": " + gap_text(advisory.gap or {})
    return text


def gap_text(gap: Mapping[str, Any]) -> str:
    """What retention removed before a durable consumer read it, as ``pghub.read`` says:
    ``up to 120 events removed by retention before they were read (ids 1 to 120, ...)``."""
    events = gap.get("events")
    head = f"up to {events} events" if events is not None else "events"
    known = []
    if gap.get("first_id") is not None:
        known.append(f"ids {gap['first_id']} to {gap.get('last_id')}")
    if gap.get("oldest_at") is not None:
        known.append(f"written {gap['oldest_at']} to {gap.get('newest_at')}")
    if gap.get("removed_at") is not None:
        known.append(f"removed at {gap['removed_at']}")
    detail = f" ({', '.join(known)})" if known else ""
    return f"{head} removed by retention before they were read{detail}"


def verdict_line(verdict: str, name: str, detail: str, *, colour: bool) -> str:
    """``ok    server     PostgreSQL 15.10``: one line of ``pghub doctor``."""
    label = f"{verdict:<5}"
    if colour:
        tint = {"ok": _GREEN, "warn": _YELLOW, "FAIL": _RED}.get(verdict, "")
        label = f"{tint}{label}{_RESET}"
    return f"{label} {name:<12} {detail}"


def compact(value: Any) -> str:
    """A value as canonical JSON (for the demo's narration)."""
    return value_text(value)
