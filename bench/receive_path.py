"""The hub's receive path in isolation: no server, no sockets, no thread wake-ups.

Feeds ready-made notifications (as libpq hands them over) to ``Engine._route`` in chunks, the
way a socket read delivers them, with consumers whose mailboxes only count. It reports the
engine thread's CPU microseconds per event and per delivery, the best of several repeats, so
that a change to decoding or routing can be judged on a noisy machine. Which pghub it
measures is whichever Python imports: ``PYTHONPATH=/some/copy python bench/receive_path.py``
measures a modified copy against the same workloads.

    python bench/receive_path.py            # every workload
    python bench/receive_path.py fanout     # one of: fanout, fanout-int, single, large
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from psycopg import pq

from pghub._engine import Engine, HubOptions
from pghub.wire import encode_payload

WORKLOADS = {
    # name: (consumers, padding characters, value kind, events)
    "fanout": (100, 0, "dict", 2_000),
    "fanout-int": (100, 0, "int", 2_000),
    "single": (1, 0, "dict", 20_000),
    "large": (1, 4000, "dict", 10_000),
}
CHUNK = 50  # notifications per socket read
REPEATS = 7


class _CountingMailbox:
    def __init__(self) -> None:
        self.events = 0

    def put_events(self, events: list[Any]) -> None:
        self.events += len(events)


class _Consumer:
    def __init__(self) -> None:
        self.mailbox = _CountingMailbox()


def _value(n: int, kind: str, pad: int) -> Any:
    if kind == "int":
        return n
    value: dict[str, Any] = {"n": n, "t": time.monotonic_ns()}
    if pad:
        value["pad"] = "x" * pad
    return value


def measure(name: str) -> tuple[float, float]:
    """Best CPU microseconds per event and per delivery of ``Engine._route``."""
    consumers, pad, kind, events = WORKLOADS[name]
    engine = Engine(
        "host=127.0.0.1",
        name="receive-path",
        logger=logging.getLogger("receive-path"),
        options=HubOptions(),
        on_confirm=lambda items, ok: None,
        on_finished=lambda: None,
    )
    engine._subs.routes["bench"] = tuple(_Consumer() for _ in range(consumers))  # type: ignore[misc]
    notifies = [
        pq.PGnotify(b"bench", 1, encode_payload((n,), _value(n, kind, pad)).encode())
        for n in range(events)
    ]
    chunks = [notifies[i : i + CHUNK] for i in range(0, events, CHUNK)]
    best = float("inf")
    for _ in range(REPEATS):
        started = time.process_time()
        for chunk in chunks:
            engine._route(chunk)
        best = min(best, time.process_time() - started)
    per_event = best / events * 1e6
    return per_event, per_event / consumers


def main(argv: list[str]) -> int:
    for name in argv or list(WORKLOADS):
        per_event, per_delivery = measure(name)
        print(f"{name:<11} {per_event:9.2f} us/event {per_delivery:8.3f} us/delivery")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
