"""A driver for the hub's I/O-free core in tests: a clock, recording mailboxes, no server.

:class:`Rig` plays the engine's part: it gives the core facts with the time, remembers the
command in flight, and records every confirmation and first-connect outcome. Each step is
explicit so that a test reads as the sequence of things that happened on the wire.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pghub._backoff import Backoff
from pghub._core import Command, Core, FirstConnect, Kind, Phase
from pghub._options import HubOptions
from pghub._outbox import Outgoing
from pghub.events import Action, Advisory, Event

LOG = logging.getLogger("pghub.test_core")


@dataclass(frozen=True)
class Refused:
    """What ``_session.CommandError`` carries: the server's refusal of a statement."""

    sqlstate: str = "25006"
    message: str = "cannot execute LISTEN during recovery"


class Box:
    """A mailbox that records what the core puts into it, in order."""

    def __init__(self, name: str = "box") -> None:
        self.name = name
        self.items: list[Event] = []

    def put_events(self, events: list[Event]) -> None:
        self.items.extend(events)

    def put_advisory(self, advisory: Advisory) -> None:
        self.items.append(Event(None, (), advisory))

    def advisories(self) -> list[Advisory]:
        return [e.value for e in self.items if e.topic is None]

    def actions(self) -> list[Action]:
        return [a.action for a in self.advisories()]

    def said(self) -> list[str]:
        """Advisories in a short form: 'CONNECT', 'SUBSCRIBE(a)', 'STOP!'."""
        out = []
        for a in self.advisories():
            text = a.action.name + (f"({a.topic})" if a.topic else "")
            out.append(text + ("!" if a.final else ""))
        return out

    def events(self) -> list[Event]:
        return [e for e in self.items if e.topic is not None]

    def __repr__(self) -> str:
        return f"<Box {self.name}>"


def item(n: int, channel: str = "a", group: int | None = None) -> Outgoing:
    """A notify whose confirm field is its number, so answers can be told apart."""
    return Outgoing(channel, f"payload{n}", n if group is None else group, n)


class Rig:
    """The core with a hand-driven clock and session."""

    def __init__(
        self, on_confirm: Callable[[list[Outgoing], bool], None] | None = None, **options: Any
    ) -> None:
        self.now = 100.0
        self.answers: list[tuple[int, bool]] = []
        self.first: list[tuple[FirstConnect, str]] = []
        self.pid = 1000
        self.options = HubOptions(**options)
        self.core = Core(
            self.options,
            name="rig",
            logger=LOG,
            on_confirm=on_confirm or self._confirm,
            on_first_connect=lambda outcome, why: self.first.append((outcome, why)),
            backoff=Backoff(
                self.options.reconnect_delay, self.options.reconnect_max_delay, random.Random(7)
            ),
        )

    def _confirm(self, items: list[Outgoing], ok: bool) -> None:
        self.answers.extend((i.confirm, ok) for i in items)

    @property
    def phase(self) -> Phase:
        return self.core.phase

    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.core.due(self.now)

    def until_due(self) -> None:
        """Let the clock run to the core's next deadline."""
        deadline = self.core.deadline()
        assert deadline is not None
        self.now = max(self.now, deadline)
        self.core.due(self.now)

    def open(self) -> None:
        """Start (once) and bring the current attempt's session up."""
        if self.core.attempt == 0:
            self.core.start(self.now)
        assert self.phase is Phase.CONNECTING, self.phase
        self.pid += 1
        self.core.connected(self.pid, self.now)

    def send(self, flushed: bool = True) -> Command:
        """Take the next command; it must exist. ``flushed``: it reached the kernel whole."""
        command = self.core.next_command(self.now)
        assert command is not None, f"nothing to send in {self.phase}"
        if flushed:
            self.core.flushed()
        return command

    def answer(self, *refusals: Refused | None) -> None:
        """The command in flight finished: one entry per statement (default: all ok)."""
        command = self.core.command
        assert command is not None
        if not refusals:
            statements = max(1, len(command.listen) + len(command.unlisten))
            refusals = (None,) * statements
        self.core.results(list(refusals), self.now)

    def roundtrip(self, *refusals: Refused | None) -> Command:
        command = self.send()
        self.answer(*refusals)
        return command

    def settle(self, limit: int = 50) -> None:
        """Answer every command ok until the core has nothing to send (no probe)."""
        for _ in range(limit):
            command = self.core.next_command(self.now)
            if command is None:
                return
            assert command.kind is not Kind.PROBE, "settle() found only a probe to send"
            self.core.flushed()
            self.answer()
        raise AssertionError("the core kept sending")

    def up(self) -> None:
        """Open a session and let its settings and LISTENs through: CONNECTED."""
        self.open()
        self.settle()
        assert self.phase is Phase.CONNECTED, self.phase

    def finish(self) -> None:
        """The driver's end: the wind-down, then STOP to the mailboxes."""
        self.core.wind_down()
        self.core.stop_mailboxes()
        self.core.finished()

    def lose(self, reason: str = "reset") -> None:
        self.core.lost(reason, self.now)

    def answered(self) -> dict[int, bool]:
        out: dict[int, bool] = {}
        for n, ok in self.answers:
            assert n not in out, f"notify {n} answered twice"
            out[n] = ok
        return out
