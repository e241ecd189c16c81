"""How events look on a terminal and in a pipe."""

from __future__ import annotations

import json
import time
from typing import Any

from .._canonical import dumps as canonical_json
from ..events import Action, Advisory, Event

_RESET = "\033[0m"
_BOLD_CYAN = "\033[1;36m"
_YELLOW = "\033[33m"
_GREEN = "\033[32m"
_DIM = "\033[2m"
_RED = "\033[31m"
_TIGHT = (",", ":")


def json_line(event: Event) -> str:
    """``{"topic":..,"key":[..],"value":..}``: one event as one line of JSON.

    The value is written as pghub writes it on the wire (canonical JSON), so that numbers
    PostgreSQL sent as exact numerics stay exact.
    """
    return (
        f'{{"topic":{json.dumps(event.topic)},'
        f'"key":{json.dumps(list(event.key), separators=_TIGHT)},'
        f'"value":{canonical_json(event.value)}}}'
    )


def pretty_line(event: Event, *, colour: bool) -> str:
    """``12:00:01.234  orders  [1, 2]  {"op":"ins"}`` for a person."""
    now = time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
    key = "[" + ", ".join(str(part) for part in event.key) + "]"
    value = canonical_json(event.value)
    if not colour:
        return f"{stamp}  {event.topic}  {key}  {value}"
    return (
        f"{_DIM}{stamp}{_RESET}  {_BOLD_CYAN}{event.topic}{_RESET}  {_YELLOW}{key}{_RESET}  {value}"
    )


def advisory_text(advisory: Advisory) -> str:
    """``subscribe orders``, ``overflow: 12 events lost``, ``disconnect``..."""
    text = advisory.action.value
    if advisory.topic is not None:
        text += f" {advisory.topic}"
    if advisory.action is Action.OVERFLOW:
        text += f": {advisory.lost} events lost"
    return text


def verdict_line(verdict: str, name: str, detail: str, *, colour: bool) -> str:
    """``ok    server     PostgreSQL 15.10``: one line of ``pghub doctor``."""
    label = f"{verdict:<5}"
    if colour:
        tint = {"ok": _GREEN, "warn": _YELLOW, "FAIL": _RED}.get(verdict, "")
        label = f"{tint}{label}{_RESET}"
    return f"{label} {name:<12} {detail}"


def compact(value: Any) -> str:
    """A value as canonical JSON (for the demo's narration)."""
    return canonical_json(value)
