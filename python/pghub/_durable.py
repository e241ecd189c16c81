"""Durable consumers' decisions, without I/O: what to read, what to deliver, what to acknowledge.

A durable consumer is an ordinary consumer of the hub for its advisories and its wake-ups: it
listens to its topics' channels and to ``pghub:wake`` on the hub's one listening session, and
any notification there only says "read the journal". Its mailbox
(:class:`pghub._reader.WakeMailbox`) therefore keeps no events, only the set of channels woken
since the consumer last looked: a burst of wake-ups costs a set insertion each, never fills a
queue, never pauses the hub.

:class:`DurableCursor` is the consumer's life as a generator of :data:`Step` s that a driver
(``pghub._reader``: a psycopg connection for :class:`pghub.Hub`, an ``AsyncConnection`` for
:class:`pghub.AsyncHub`) carries out, sending each one's answer back:

- :class:`Wait`: wait for the mailbox (at most ``timeout`` seconds; 0: only look) and answer
  with what it holds (:class:`Taken`);
- :class:`Query`: run one statement on the hub's reader session and answer with its rows (or
  throw the error into the generator);
- :class:`Deliver`: give these events and advisories, in order, to the callback (or the
  reader of a subscription) and answer with how many of them were given before it ended;
- :class:`Prefetch`: a query that is coming (the next page of a batch): the driver may run it
  meanwhile, and answer it from that when it comes (the server and the consumer's callback
  then work at once: replay runs at the pace of the slower, not of both in turn).

Positions live here, in memory, per topic: within a hub's lifetime each event is delivered
once whatever happens to either session (a read that failed is read again from the same
position, which returns the same page). A named consumer starts from the position the server
kept for it and acknowledges, after each page, the position of the last event its callback
returned from: after a crash, what was delivered and not acknowledged comes again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ._backoff import Backoff
from ._log import Log
from .events import WAKE_CHANNEL, Action, Advisory, DurableEvent, Event

#: Events a read asks for at most, to begin with: a page, acknowledged once its callbacks have
#: returned. In a long replay pages grow (doubling, to MAX_PAGE_EVENTS) while a page's payloads
#: stay under PAGE_BYTES, and shrink (halving, to MIN_PAGE_EVENTS) when they go over it: fewer
#: round trips for small events, bounded memory for large ones.
PAGE_EVENTS = 1000
MAX_PAGE_EVENTS = 10_000
MIN_PAGE_EVENTS = 10
PAGE_BYTES = 8_000_000
#: With no wake-up for this long, read anyway (a safety net: a wake-up is never needed for
#: correctness, only for latency).
POLL_SECONDS = 5.0
#: After a failed read or acknowledgement, try again after this (doubling, to the cap).
RETRY_DELAY = 0.5
RETRY_MAX_DELAY = 30.0

READ_SQL = "SELECT pos, payload, gap FROM pghub.read(%s, %s, %s)"
NAMED_START_SQL = "SELECT pghub.consumer_position(%s, %s, %s)"
NOW_SQL = "SELECT pghub.current_position()"
ACK_SQL = "SELECT pghub.ack(%s, %s, %s)"

Row = tuple[Any, ...]
Keys = frozenset[tuple[int, ...]]


def check_since(since: str) -> str:
    """``since``: 'now', 'earliest' or a position (the server checks a position's form)."""
    if not isinstance(since, str) or not since or not since.isprintable():
        raise ValueError(f"since must be 'now', 'earliest' or a position (a str), got {since!r}")
    return since


def check_name(durable: str) -> str:
    if not isinstance(durable, str) or not 1 <= len(durable) <= 200:
        raise ValueError(f"durable must be a consumer name of 1 to 200 characters, got {durable!r}")
    return durable


class Wait(NamedTuple):
    timeout: float | None


class Query(NamedTuple):
    sql: str
    params: tuple[Any, ...]


class Deliver(NamedTuple):
    events: list[Event]


class Prefetch(NamedTuple):
    """A query that will be asked for next: the driver may start it now (answer: None), so
    that the server reads the next page while the consumer handles this one."""

    query: Query


Step = Wait | Query | Deliver | Prefetch


@dataclass
class Taken:
    """What a :class:`Wait` found: advisories in order, and the channels woken."""

    advisories: deque[Event] = field(default_factory=deque)
    woken: set[str] = field(default_factory=set)


@dataclass
class _Topic:
    position: str | None = None  # None: not started (its start waits for its SUBSCRIBE)
    acked: str | None = None  # what the server holds for a named consumer
    owed: bool = False  # events (or a GAP) were handled since the last acknowledgement


class DurableCursor:
    """One durable consumer's positions and the order of its reads (see the module's doc)."""

    def __init__(
        self,
        name: str | None,
        since: str,
        *,
        decode: Callable[[str], tuple[tuple[int, ...], Any]],
        keys: Keys | None,
        log: Log,
        now: Callable[[], float],
        page: int = PAGE_EVENTS,
    ) -> None:
        self.name = name  # None: an anonymous reader, its position only in memory
        self.since = check_since(since)
        self._decode = decode
        self.keys = keys
        self._log = log
        self.consumer = ""  # its consumer's name, for the log (set by the consumer)
        self._page = self._base_page = page
        self._topics: dict[str, _Topic] = {}  # subscribed (SUBSCRIBE seen), by channel
        self._waiting: set[str] = set()  # SUBSCRIBE seen before the wake channel's
        self._wake_listened = False
        self._due: deque[str] = deque()  # started topics to read, in turn
        self._unstarted: list[str] = []  # subscribed, their position not yet taken
        self._started: set[str] = set()  # (any thread reads it: see started)
        self._now = now  # the driver's clock (retries)
        #: Called (on the consumer's thread or loop) when topics have been started.
        self.on_started: Callable[[], None] = _nothing
        self._backoff = Backoff(RETRY_DELAY, RETRY_MAX_DELAY)
        self._retry_at: float | None = None  # after a failure: no query before this
        self.ended = False
        self.invalid = 0  # journal payloads that did not decode (never expected)

    @property
    def started(self) -> frozenset[str]:
        """The topics whose position is taken: every event committed from now on will come."""
        return frozenset(self._started)

    # --- what the mailbox says -----------------------------------------------------------

    def _absorb(self, taken: Taken) -> list[Event]:
        """Note wake-ups and advisories; the advisories to deliver, in order."""
        for channel in taken.woken:
            self._wake(channel)
        out: list[Event] = []
        for event in taken.advisories:
            advisory: Advisory = event.value
            action, topic = advisory.action, advisory.topic
            if topic == WAKE_CHANNEL:
                if action is Action.SUBSCRIBE:
                    self._wake_listened = True
                    for waiting in sorted(self._waiting):
                        self._subscribed(waiting)
                    self._waiting.clear()
                continue  # the wake channel is the hub's business, not the consumer's
            if action is Action.OVERFLOW:
                self._wake_all()  # a lost wake-up costs a read, nothing more
                continue
            if action is Action.SUBSCRIBE and topic is not None:
                if self._wake_listened:
                    self._subscribed(topic)
                else:
                    self._waiting.add(topic)
            elif action is Action.UNSUBSCRIBE and topic is not None:
                self._topics.pop(topic, None)
                self._waiting.discard(topic)
                self._started.discard(topic)
            elif action is Action.RECONNECT or action is Action.CONNECT:
                self._wake_all()  # what was committed meanwhile is in the journal
            if advisory.final:
                self.ended = True
            out.append(event)
        return out

    def _subscribed(self, topic: str) -> None:
        # LISTENed (the topic and the wake channel): only now may "now" be taken.
        if topic not in self._topics:
            self._topics[topic] = _Topic()
            self._unstarted.append(topic)

    def _wake(self, channel: str) -> None:
        topic = self._topics.get(channel)
        if topic is not None and topic.position is not None and channel not in self._due:
            self._due.append(channel)

    def _wake_all(self) -> None:
        for channel in self._topics:
            self._wake(channel)

    # --- the consumer's life ---------------------------------------------------------------

    def run(self) -> Generator[Step, Any, None]:
        """The steps of this consumer until its final advisory (see the module's doc).

        A topic's SUBSCRIBE is delivered once its position is taken (after its LISTEN and the
        wake channel's): from then on every event committed reaches the consumer. Advisories
        wait meanwhile (unless one is final), so that they keep their order.
        """
        held: list[Event] = []
        taken: Taken = yield Wait(None)
        while True:
            held.extend(self._absorb(taken))
            final = self.ended
            if self._unstarted and not final and self._may_try():
                yield from self._start_all()
            if held and (final or not self._unstarted):
                yield Deliver(held)
                held = []
                if final:
                    return
            if self._due and self._may_try():
                yield from self._read_one()
                taken = yield Wait(0)  # between pages: advisories and wake-ups that came
                continue
            retry_at = self._retry_at
            timeout = POLL_SECONDS if retry_at is None else max(0.0, retry_at - self._now())
            taken = yield Wait(timeout)
            if not taken.advisories and not taken.woken:
                self._wake_all()  # nothing for a while, or a retry is due: read anyway

    def _may_try(self) -> bool:
        """No failure is waiting for its retry."""
        return self._retry_at is None or self._now() >= self._retry_at

    def _start_all(self) -> Generator[Step, Any, None]:
        for channel in list(self._unstarted):
            topic = self._topics.get(channel)
            self._unstarted.remove(channel)
            if topic is None:
                continue  # unsubscribed meanwhile
            try:
                topic.position = topic.acked = yield from self._start(channel)
            except Exception as exc:
                self._unstarted.append(channel)
                self._failed(channel, "start", exc)
                return
            self._succeeded()
            self._started.add(channel)
            self._wake(channel)
        self.on_started()

    def _read_one(self) -> Generator[Step, Any, None]:
        """One page of the next due topic: read it, deliver it, acknowledge it."""
        channel = self._due.popleft()
        topic = self._topics.get(channel)
        if topic is None or topic.position is None:
            return
        try:
            rows: list[Row] = yield Query(READ_SQL, (channel, topic.position, self._page))
        except Exception as exc:
            self._failed(channel, "read", exc)
            return
        self._succeeded()
        events = self._page_of(channel, rows)
        given = len(events)
        last = str(rows[-1][0])
        self._resize(rows, "/" in last)
        if "/" in last:  # in the middle of a batch: the next page is wanted at once
            yield Prefetch(Query(READ_SQL, (channel, last, self._page)))
        if events:
            given = yield Deliver(events)
        if channel not in self._topics:
            return  # unsubscribed meanwhile
        if given == len(events):
            topic.position = last
            if "/" in last:
                self._wake(channel)  # in the middle of a batch: more to read now
        else:  # cut short (closed): up to the last event given (a GAP moves nothing)
            for event in reversed(events[:given]):
                if event.position is not None:
                    topic.position = event.position
                    break
        if len(rows) > 1 or rows[0][1] is not None or rows[0][2] is not None:
            topic.owed = True  # not for a read with nothing new: that would be a write a poll
        yield from self._ack(channel, topic)

    def _resize(self, rows: list[Row], more: bool) -> None:
        size = 0
        for row in rows:
            if row[1] is not None:
                size += len(row[1])
        if size > PAGE_BYTES:
            self._page = max(MIN_PAGE_EVENTS, self._page // 2)
        elif more and len(rows) >= self._page and size * 2 <= PAGE_BYTES:
            self._page = min(MAX_PAGE_EVENTS, self._page * 2)
        elif not more:
            self._page = min(self._page, self._base_page)  # caught up: small pages again

    def _start(self, channel: str) -> Generator[Step, Any, str]:
        since = self.since
        if self.name is not None:
            rows = yield Query(NAMED_START_SQL, (self.name, channel, since))
            return str(rows[0][0])
        if since == "now":
            rows = yield Query(NOW_SQL, ())
            return str(rows[0][0])
        return since

    def _ack(self, channel: str, topic: _Topic) -> Generator[Step, Any, None]:
        if self.name is None or not topic.owed or topic.position == topic.acked:
            return
        try:
            yield Query(ACK_SQL, (self.name, channel, topic.position))
        except Exception as exc:
            self._failed(channel, "acknowledgement", exc)
            return
        topic.acked = topic.position
        topic.owed = False

    def _succeeded(self) -> None:
        self._retry_at = None
        self._backoff.reset()

    def _failed(self, channel: str, what: str, exc: Exception) -> None:
        delay = self._backoff.next_delay()
        self._retry_at = self._now() + delay
        self._wake(channel)
        self._log.warning(
            "durable consumer %r: %s of %r failed (%s: %s); tried again in %.1f s",
            self.consumer,
            what,
            channel,
            type(exc).__name__,
            str(exc).strip(),
            delay,
        )

    def _page_of(self, channel: str, rows: list[Row]) -> list[Event]:
        """The events of a page (a GAP advisory first, if any). The one per-event loop of a
        durable consumer: kept lean (replay runs through it at 100,000s a second)."""
        events: list[Event] = []
        append = events.append
        decode = self._decode
        keys = self.keys
        new = tuple.__new__
        for pos, payload, gap in rows:
            if payload is None:
                if gap is not None:
                    append(Event(None, (), Advisory(Action.GAP, topic=channel, gap=_gap(gap))))
                continue
            try:
                key, value = decode(payload)
            except Exception as exc:  # InvalidPayload, or a decode hook of the caller's
                self.invalid += 1
                self._log.warning(
                    "durable consumer %r: invalid payload on %r: %s", self.consumer, channel, exc
                )
                continue
            if keys is not None and key not in keys:
                continue
            event = new(DurableEvent, (channel, key, value))
            event.__dict__["_position"] = pos  # as durable_event() does, without the call
            append(event)
        return events


def _nothing() -> None:
    pass


def _gap(gap: Any) -> Mapping[str, Any]:
    return dict(gap) if isinstance(gap, Mapping) else {"gap": gap}
