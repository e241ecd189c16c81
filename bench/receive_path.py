"""The hub's receive path in isolation: no server, no sockets, no thread wake-ups.

Feeds ready-made notifications (as libpq hands them over) to the hub's router in chunks, the
way a socket read delivers them, with mailboxes that only count. It reports the CPU
microseconds per event and per delivery, the best of several repeats, so that a change to
decoding or routing can be judged on a noisy machine. Which pghub it measures is whichever
Python imports: ``PYTHONPATH=/some/copy python bench/receive_path.py`` measures a modified copy
against the same workloads. The router is internal (there is no public way to feed a hub
notifications without a server): this script knows both homes it has had, ``pghub._router``
(the I/O-free core's) and, before it, the engine's ``_route``, so that a copy from before and
one from after that move can be compared.

    python bench/receive_path.py            # every workload
    python bench/receive_path.py fanout     # one of: fanout, fanout-int, single, large, keys

``keys`` is ``fanout`` with a key filter on each consumer (``keys=`` of ``hub.consumer``), each
letting through one key in a hundred: every event reaches one consumer. It needs a pghub with
key filters, and says so otherwise.
"""

from __future__ import annotations

import inspect
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from psycopg import pq

from pghub.wire import encode_payload

WORKLOADS = {
    # name: (consumers, padding characters, value kind, events)
    "fanout": (100, 0, "dict", 2_000),
    "fanout-int": (100, 0, "int", 2_000),
    "single": (1, 0, "dict", 20_000),
    "large": (1, 4000, "dict", 10_000),
    "keys": (100, 0, "dict", 20_000),  # consumer i filters on key (i,): one delivery an event
}
FILTERED = {"keys"}
CHUNK = 50  # notifications per socket read
REPEATS = 7


class _CountingMailbox:
    def __init__(self, keys: frozenset[tuple[int, ...]] | None = None) -> None:
        self.events = 0
        self.keys = keys  # a key filter, read by the router (pghub with key filters)

    def put_events(self, events: list[Any]) -> None:
        self.events += len(events)

    def put_advisory(self, advisory: Any) -> None:
        pass


class _Consumer:
    """What the engine's ``_route`` routed to, before the router took mailboxes."""

    def __init__(self, mailbox: _CountingMailbox) -> None:
        self.mailbox = mailbox


Route = Callable[[list[Any]], None]


def router(mailboxes: list[_CountingMailbox]) -> Route:
    """The receive path of the pghub imported, routing channel "bench" to ``mailboxes``."""
    logger = logging.getLogger("receive-path")
    try:
        from pghub._core import Counters
        from pghub._router import Router
    except ImportError:  # before the I/O-free core: the engine routed itself
        return _engine_route(mailboxes, logger)
    return Router({"bench": tuple(mailboxes)}, Counters(), name="receive-path", logger=logger).route


def _engine_route(mailboxes: list[_CountingMailbox], logger: logging.Logger) -> Route:
    from pghub._engine import Engine, HubOptions

    arguments: dict[str, Any] = {
        "name": "receive-path",
        "logger": logger,
        "options": HubOptions(),
        "on_confirm": lambda items, ok: None,
        "on_started": lambda: None,
        "on_finished": lambda: None,
    }
    wanted = inspect.signature(Engine).parameters  # on_started came later than the rest
    engine = Engine("host=127.0.0.1", **{k: v for k, v in arguments.items() if k in wanted})
    engine._subs.routes["bench"] = tuple(_Consumer(m) for m in mailboxes)
    route: Route = engine._route
    return route


def _key(n: int, consumers: int, filtered: bool) -> tuple[int]:
    """Each event's own key; filtered, the key of one consumer after another."""
    return (n % consumers,) if filtered else (n,)


def _value(n: int, kind: str, pad: int) -> Any:
    if kind == "int":
        return n
    value: dict[str, Any] = {"n": n, "t": time.monotonic_ns()}
    if pad:
        value["pad"] = "x" * pad
    return value


def measure(name: str) -> tuple[float, float]:
    """Best CPU microseconds per event and per delivery of the receive path."""
    consumers, pad, kind, events = WORKLOADS[name]
    filtered = name in FILTERED
    mailboxes = [
        _CountingMailbox(frozenset({(i,)}) if filtered else None) for i in range(consumers)
    ]
    route = router(mailboxes)
    notifies = [
        pq.PGnotify(
            b"bench", 1, encode_payload(_key(n, consumers, filtered), _value(n, kind, pad)).encode()
        )
        for n in range(events)
    ]
    chunks = [notifies[i : i + CHUNK] for i in range(0, events, CHUNK)]
    best = float("inf")
    for _ in range(REPEATS):
        started = time.process_time()
        for chunk in chunks:
            route(chunk)
        best = min(best, time.process_time() - started)
    delivered = [m.events for m in mailboxes]
    each = events * REPEATS // consumers if filtered else events * REPEATS
    if delivered != [each] * consumers:  # a path that drops events is not faster
        raise SystemExit(f"{name}: mailboxes got {sorted(set(delivered))}, not {each}")
    per_event = best / events * 1e6
    return per_event, per_event / (1 if filtered else consumers)


def has_key_filters() -> bool:
    try:
        from pghub._mailbox import Mailbox
    except ImportError:
        return False
    return "keys" in inspect.signature(Mailbox).parameters


def main(argv: list[str]) -> int:
    for name in argv or list(WORKLOADS):
        if name in FILTERED and not has_key_filters():
            print(f"{name:<11} n/a: this pghub has no key filters")
            continue
        per_event, per_delivery = measure(name)
        print(f"{name:<11} {per_event:9.2f} us/event {per_delivery:8.3f} us/delivery")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
