"""``pghub notify``: send one event, or a stream of JSON lines of events from stdin."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from .._jsonread import numeric_with_exponent
from ..errors import ConnectFailed, PghubError
from ..hub import Hub
from ..wire import INT64_MAX, INT64_MIN, channel, encode_payload
from ._common import (
    CliError,
    Exit,
    Interrupted,
    check_seconds,
    connect,
    conninfo_from,
    say,
    shorten,
    with_timeout,
)

BATCH = 500  # events queued together (one round trip)
IN_FLIGHT = 5_000  # events queued but not yet confirmed, at most: stdin is read no faster
TERMINAL_HINT = (
    'pghub notify: reading events from stdin, one JSON object a line: {"topic": "orders", '
    '"key": [1], "value": {...}}; Ctrl-D ends. One event: pghub notify TOPIC --key 1 --value JSON'
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "topic",
        nargs="?",
        default="-",
        metavar="TOPIC",
        help="the topic; without it (or '-'), events are read from stdin, one JSON object "
        'a line: {"topic": "orders", "key": [1, 2], "value": {...}}',
    )
    parser.add_argument(
        "--key", default="", metavar="1,2,3", help="the key: integers separated by commas"
    )
    parser.add_argument(
        "--value", metavar="JSON", help="the value, as JSON (default: none, i.e. null)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the server to confirm every event (default 30)",
    )


class _Confirmations:
    """Counts the events the hub confirmed (or failed); the sender waits on it.

    ``notify_many`` confirms once for its whole batch (True when every event committed), so
    each batch gets a callback of its own that counts the batch's events.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.ok = 0
        self.failed = 0

    def for_events(self, count: int) -> Callable[[bool], None]:
        def confirm(ok: bool) -> None:
            with self._changed:
                if ok:
                    self.ok += count
                else:
                    self.failed += count
                self._changed.notify_all()

        return confirm

    def wait_until(self, done: int, deadline: float) -> bool:
        """Wait until ``done`` events are confirmed either way; False at the deadline."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self.ok + self.failed >= done, max(0.0, deadline - time.monotonic())
            )


def run(args: argparse.Namespace) -> int:
    check_seconds("--timeout", args.timeout)
    bulk = args.topic == "-"
    if bulk and (args.key or args.value is not None):
        raise CliError(
            "--key and --value go with a TOPIC, not with events read from stdin", Exit.USAGE
        )
    single = None if bulk else _single_event(args.topic, args.key, args.value)
    conninfo = conninfo_from(args.dsn)
    connect(conninfo, args.connect_timeout).close()  # a clear error now rather than retries

    confirmations = _Confirmations()
    hub = Hub(
        with_timeout(conninfo, args.connect_timeout),
        name="pghub-notify",
        connect_timeout=args.connect_timeout,
        # A server silent for longer than we wait for confirmations is given up on, so that
        # stopping the hub is bounded too.
        liveness_timeout=max(1.0, min(30.0, args.timeout)),
    )
    sent = 0
    bad_line: CliError | None = None  # the events before a bad line are still sent
    try:
        try:
            hub.start()
        except ConnectFailed as error:
            raise CliError(str(error), Exit.UNREACHABLE) from None
        deadline = time.monotonic() + args.timeout
        if single is not None:
            hub.notify(*single, confirm=confirmations.for_events(1))
            sent = 1
        else:
            stdin = sys.stdin.fileno()
            if os.isatty(stdin):  # a person at a terminal, perhaps not knowing it waits for them
                say(TERMINAL_HINT)
            try:
                for batch in _batches(stdin):
                    # Bounded memory and send queue: wait for earlier events before queuing more.
                    confirmations.wait_until(sent + len(batch) - IN_FLIGHT, deadline)
                    hub.notify_many(batch, confirm=confirmations.for_events(len(batch)))
                    sent += len(batch)
                    deadline = time.monotonic() + args.timeout
            except CliError as error:
                bad_line = error
        confirmations.wait_until(sent, deadline)
    except Interrupted:
        # Not waiting for the hub: a command in flight to a silent server would hold the exit
        # for up to the liveness timeout. What was not confirmed by now is counted as such.
        hub.stop(wait=False)
        if not bulk:
            raise CliError(
                "interrupted before the server confirmed the event", Exit.INTERRUPTED
            ) from None
        raise CliError(f"interrupted: {_counts(sent, confirmations)}", Exit.INTERRUPTED) from None
    except BaseException:
        hub.stop(wait=False)
        raise
    hub.stop(wait=True)  # confirms False whatever was not sent (bounded by the liveness timeout)
    code = _report(sent, confirmations, bulk=bulk)
    if bad_line is not None:
        raise bad_line
    return code


def _counts(sent: int, confirmations: _Confirmations) -> str:
    ok = confirmations.ok
    return f"{sent} read, {ok} confirmed, {sent - ok} not confirmed"


def _report(sent: int, confirmations: _Confirmations, *, bulk: bool) -> int:
    failed = sent - confirmations.ok
    if bulk:
        say(f"pghub notify: {_counts(sent, confirmations)}")
    elif failed:
        say("pghub notify: the event was not confirmed by the server")
    return Exit.FAILED if failed else Exit.OK


def _single_event(topic: str, key_text: str, value_text: str | None) -> tuple[str, Any, Any]:
    key = _parse_key(key_text)
    value = None
    if value_text is not None:
        value = _parse_json(value_text, "--value is ")
    _check(topic, key, value, where="")
    return topic, key, value


# An element of --key: ASCII digits only. int() would also take "1_000", " 7" and other
# scripts' digits ("١٢"), and so send a key nobody typed.
_KEY_ELEMENT = re.compile(r"[+-]?[0-9]+")


def _parse_key(text: str) -> list[int]:
    parts = [part.strip() for part in text.split(",")] if text.strip() else []
    key = []
    for part in parts:
        if _KEY_ELEMENT.fullmatch(part) is None:
            raise CliError(
                f"--key {shorten(text, 60)!r}: a key is integers separated by commas, like 1,2,3",
                Exit.USAGE,
            )
        if len(part.lstrip("+-").lstrip("0")) > 19:  # no int64 has more digits
            raise CliError(
                f"--key element {shorten(part, 30)} is outside the signed 64-bit range", Exit.USAGE
            )
        key.append(int(part))
    return key


def _json_number(text: str) -> Decimal:
    """A JSON number with a fraction or exponent, exactly: jsonb keeps it as numeric does
    (12345678901234567890.5, 19.999999999999999999, 1e400), a float would round it."""
    if "e" in text or "E" in text:
        return numeric_with_exponent(text)  # refuses what numeric refuses
    return Decimal(text)


def _json_integer(text: str) -> int:
    # Past Python's 4300-digit int() limit (a payload takes 7999 digits); Decimal has none.
    return int(text) if len(text) <= 4000 else int(Decimal(text))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_decode = json.JSONDecoder(
    parse_float=_json_number, parse_int=_json_integer, parse_constant=_reject_constant
).decode


def _parse_json(text: str, where: str) -> Any:
    """JSON as jsonb reads it: numbers exact, NaN and Infinity refused, one line of error."""
    try:
        return _decode(text)
    except json.JSONDecodeError as error:
        raise CliError(f"{where}not JSON: {error}", Exit.USAGE) from None
    except RecursionError:
        raise CliError(f"{where}nested too deeply for Python's JSON reader", Exit.USAGE) from None
    except (ValueError, ArithmeticError) as error:  # NaN, a number numeric cannot hold
        raise CliError(f"{where}not JSON that jsonb takes: {error}", Exit.USAGE) from None


def _check(topic: Any, key: Any, value: Any, *, where: str) -> None:
    """Raise the CLI's usage error for anything pghub would refuse to send."""
    try:
        if not isinstance(topic, str):
            raise PghubError(f"topic must be a string, not {json.dumps(topic)}")
        channel(topic)
        encode_payload(key, value)
    except PghubError as error:
        raise CliError(f"{where}{error}", Exit.USAGE) from None


def _batches(fd: int) -> Iterator[list[tuple[str, Any, Any]]]:
    """Events parsed and checked from JSON lines, in batches of what has arrived so far.

    A batch goes out as soon as the input pauses (``os.read`` returns what is there), so a slow
    producer's events are not held back until the batch fills up. A bad line ends the input:
    the events before it are yielded, then its error is raised.
    """
    number = 0
    pending = b""
    while True:
        chunk = os.read(fd, 1 << 16)
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop() if chunk else b""  # at the end, a last line without newline
        batch: list[tuple[str, Any, Any]] = []
        for raw in lines:
            number += 1
            try:
                line = raw.decode("utf-8")
                if line.strip():
                    batch.append(_parse_line(line, f"stdin line {number}: "))
            except UnicodeDecodeError:
                error = CliError(f"stdin line {number}: not UTF-8", Exit.USAGE)
            except CliError as bad:
                error = bad
            else:
                if len(batch) >= BATCH:
                    yield batch
                    batch = []
                continue
            if batch:
                yield batch
            raise error
        if batch:
            yield batch
        if not chunk:
            return


def _parse_line(line: str, where: str) -> tuple[str, Any, Any]:
    item = _parse_json(line, where)
    if not isinstance(item, dict) or "topic" not in item:
        raise CliError(f'{where}expected an object like {{"topic": "t", ...}}', Exit.USAGE)
    unknown = set(item) - {"topic", "key", "value"}
    if unknown:
        raise CliError(f"{where}unknown fields {sorted(unknown)}", Exit.USAGE)
    topic, key, value = item["topic"], item.get("key"), item.get("value")
    if key is not None and not isinstance(key, list):
        raise CliError(f"{where}key must be a list of integers or null", Exit.USAGE)
    for index, element in enumerate(key or ()):
        # Checked here: the library's message would print the number, and Python refuses to
        # print an int of more than 4300 digits.
        if type(element) is int and not INT64_MIN <= element <= INT64_MAX:
            raise CliError(f"{where}key[{index}] is outside the signed 64-bit range", Exit.USAGE)
    _check(topic, key, value, where=where)
    return topic, key, value
