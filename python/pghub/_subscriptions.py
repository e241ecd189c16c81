"""Who listens to what: consumers' subscriptions against the server's LISTEN set (pure logic).

The engine asks :meth:`Subscriptions.changes` what to LISTEN and UNLISTEN, tells it what took
effect, and routes each notification through :attr:`Subscriptions.routes`. A consumer is told
of a subscription (SUBSCRIBE) only once its channel is listened to on the server, and a channel
is routed only to consumers that have been told.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)


class Subscriptions(Generic[C]):
    def __init__(self) -> None:
        self._wanted: dict[str, dict[C, bool]] = {}  # channel -> consumer -> told (SUBSCRIBE sent)
        self._listening: set[str] = set()  # LISTEN in effect on the current session
        self._in_flight: set[str] = set()  # LISTEN or UNLISTEN sent, result not yet read
        self._failed: set[str] = set()  # (UN)LISTEN refused: not retried on this session
        self.routes: dict[str, tuple[C, ...]] = {}  # channel -> consumers told, listened to

    @property
    def listening(self) -> frozenset[str]:
        return frozenset(self._listening)

    def subscribe(self, consumer: C, channels: list[str]) -> list[str]:
        """Add subscriptions; returns the channels already listened to, which take effect now."""
        effective = []
        for channel in channels:
            consumers = self._wanted.setdefault(channel, {})
            if consumer in consumers:
                continue
            live = channel in self._listening and channel not in self._in_flight
            consumers[consumer] = live
            if live:
                effective.append(channel)
                self._route(channel)
        return effective

    def unsubscribe(self, consumer: C, channels: list[str]) -> list[str]:
        """Drop subscriptions; returns the channels this consumer had been told of."""
        told = []
        for channel in channels:
            consumers = self._wanted.get(channel)
            if consumers is None or consumer not in consumers:
                continue
            if consumers.pop(consumer):
                told.append(channel)
            if not consumers:
                del self._wanted[channel]
            self._route(channel)
        return told

    def drop(self, consumer: C) -> None:
        """Forget every subscription of a consumer that is gone."""
        for channel in [c for c, consumers in self._wanted.items() if consumer in consumers]:
            self.unsubscribe(consumer, [channel])

    def pending(self) -> bool:
        """Whether :meth:`changes` has anything to give now (it marks nothing)."""
        busy = self._in_flight | self._failed
        wanted = set(self._wanted)
        return bool(wanted - self._listening - busy or self._listening - wanted - busy)

    def changes(self) -> tuple[list[str], list[str]]:
        """(to LISTEN, to UNLISTEN) to bring the session in line; marks them in flight."""
        busy = self._in_flight | self._failed
        listen = sorted(set(self._wanted) - self._listening - busy)
        unlisten = sorted(self._listening - set(self._wanted) - busy)
        self._in_flight.update(listen, unlisten)
        return listen, unlisten

    def applied(self, listened: list[str], unlistened: list[str]) -> list[tuple[C, str]]:
        """The server took the changes; returns the (consumer, channel) pairs to tell now."""
        self._in_flight.difference_update(listened, unlistened)
        self._listening.update(listened)
        self._listening.difference_update(unlistened)
        to_tell = self._tell(listened)
        for channel in unlistened:
            self._route(channel)
        return to_tell

    def refused(self, listened: list[str], unlistened: list[str]) -> list[tuple[C, str]]:
        """The server refused the changes: none took effect. They wait for a new session
        rather than being retried in a loop (the engine drops a session whose LISTEN is
        refused, so what waits here is refused UNLISTENs).

        A channel whose UNLISTEN was refused is still listened to: consumers that subscribed
        to it while the UNLISTEN was in flight hear it now. Returns those to tell.
        """
        self._in_flight.difference_update(listened, unlistened)
        self._failed.update(listened, unlistened)
        return self._tell(unlistened)

    def lost(self) -> None:
        """The session is gone: nothing is listened to any more, nothing is in flight."""
        self._listening.clear()
        self._in_flight.clear()
        self._failed.clear()
        self.routes.clear()

    def _tell(self, channels: list[str]) -> list[tuple[C, str]]:
        """Mark the consumers of these channels, now listened to, as told; returns them."""
        to_tell = []
        for channel in channels:
            consumers = self._wanted.get(channel, {})
            if channel in self._listening:
                for consumer, told in consumers.items():
                    if not told:
                        consumers[consumer] = True
                        to_tell.append((consumer, channel))
            self._route(channel)
        return to_tell

    def _route(self, channel: str) -> None:
        consumers = self._wanted.get(channel)
        if consumers and channel in self._listening:
            routed = tuple(c for c, told in consumers.items() if told)
            if routed:
                self.routes[channel] = routed
                return
        self.routes.pop(channel, None)
