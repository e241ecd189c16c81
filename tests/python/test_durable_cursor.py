"""The durable cursor's decisions, without a server: a journal that grows while a consumer reads
it in pages, with wake-ups that come or not and queries that fail at random. Whatever happens,
each event is delivered once, in order, and what is acknowledged is where the consumer is.

The fake journal follows pghub.read's rules as the cursor relies on them: a page is at most
``page`` events after the position; the last row's position is where to go on, with a ``/``
while the batch (here: the journal as it was when the batch began) has more; a read with
nothing new returns one row with only a position.
"""

from __future__ import annotations

import logging
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pghub._durable import (
    ACK_SQL,
    NAMED_START_SQL,
    READ_SQL,
    Deliver,
    DurableCursor,
    Prefetch,
    Query,
    Taken,
    Wait,
)
from pghub.events import WAKE_CHANNEL, Action, Advisory, Event
from pghub.wire import decode_payload, encode_payload


class Journal:
    def __init__(self) -> None:
        self.events: list[int] = []
        self.batch_end: dict[int, int] = {}  # a batch's start -> its end (fixed when it began)

    def read(self, since: str, page: int) -> list[tuple[Any, ...]]:
        end: int | None = None
        if since == "earliest":
            start = 0
        elif "/" in since:
            first, _, batch = since.partition("/")
            start, end = int(first), int(batch)
        else:
            start = int(since)
        if end is None:
            end = len(self.events)  # a new batch: what is visible now
        taken = self.events[start : min(end, start + page)]
        if not taken:
            return [(str(start), None, None)]
        rows = []
        for i, key in enumerate(taken):
            n = start + i + 1
            pos = str(n) if n == end else f"{n}/{end}"
            rows.append((pos, encode_payload([key], None), None))
        return rows


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 7),  # events committed before this step
            st.booleans(),  # a wake-up comes for them
            st.integers(0, 3),  # queries that fail in this step
        ),
        min_size=1,
        max_size=12,
    ),
    st.integers(1, 5),
)
def test_each_event_once_in_order_whatever_fails(
    steps: list[tuple[int, bool, int]], page: int
) -> None:
    journal = Journal()
    clock = [0.0]
    cursor = DurableCursor(
        "c",
        "earliest",
        decode=decode_payload,
        keys=None,
        log=logging.getLogger("test"),
        now=lambda: clock[0],
        page=page,
    )
    delivered: list[int] = []
    acked: list[str] = []
    run = cursor.run()
    inbox = Taken()
    inbox.advisories.append(Event(None, (), Advisory(Action.SUBSCRIBE, topic=WAKE_CHANNEL)))
    inbox.advisories.append(Event(None, (), Advisory(Action.SUBSCRIBE, topic="t")))
    failures = 0
    key = 0
    plan = [*steps, (0, True, 0), (0, False, 0), (0, False, 0)]  # then quiet: polls catch up
    answer: Any = None
    error: Exception | None = None
    for new, wake, fail in plan:
        for _ in range(new):
            journal.events.append(key)
            key += 1
        if wake and new:
            inbox.woken.add("t")
        failures += fail
        waits = 0
        while waits < 3:  # run until the cursor has waited, with nothing new, a few times
            step = run.throw(error) if error is not None else run.send(answer)
            answer, error = None, None
            if isinstance(step, Wait):
                answer, inbox = inbox, Taken()
                if not answer.advisories and not answer.woken:
                    waits += 1
                    clock[0] += step.timeout if step.timeout is not None else 1.0
            elif isinstance(step, Prefetch):
                pass
            elif isinstance(step, Query):
                if failures:
                    failures -= 1
                    error = ConnectionError("lost")
                elif step.sql == READ_SQL:
                    answer = journal.read(step.params[1], step.params[2])
                elif step.sql == NAMED_START_SQL:
                    answer = [(step.params[2],)]
                elif step.sql == ACK_SQL:
                    acked.append(step.params[2])
            elif isinstance(step, Deliver):
                delivered += [e.key[0] for e in step.events if e.topic is not None]
                answer = len(step.events)
    # Quiet for long enough: every retry and poll has run.
    for _ in range(5000):
        step = run.send(answer)
        answer = None
        if isinstance(step, Wait):
            if len(delivered) == len(journal.events) and not failures:
                break
            answer = Taken()
            clock[0] += 60.0
        elif isinstance(step, Query) and step.sql == READ_SQL:
            answer = journal.read(step.params[1], step.params[2])
        elif isinstance(step, Query) and step.sql == ACK_SQL:
            acked.append(step.params[2])
        elif isinstance(step, Deliver):
            delivered += [e.key[0] for e in step.events if e.topic is not None]
            answer = len(step.events)
    assert delivered == journal.events, "each event once, in order"
    if journal.events:
        assert acked, "what was delivered is acknowledged"
        assert int(acked[-1].partition("/")[0]) == len(journal.events)
        assert [int(a.partition("/")[0]) for a in acked] == sorted(
            int(a.partition("/")[0]) for a in acked
        ), "acknowledgements only move forward"
