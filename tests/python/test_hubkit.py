"""The test helpers themselves (hubkit.py): a wait that fails, fails fast and lists what it got;
a recorder counts advisories by topic and checks that exactly one final advisory came, last.
"""

from __future__ import annotations

import time

import pytest
from hubkit import Recorder

from pghub import Action, Advisory, Event


def test_recorder_wait_fails_fast_and_lists_what_it_got() -> None:
    rec = Recorder("r")
    rec(Event(None, (), Advisory(Action.CONNECT)))
    rec(Event("t", (1,), {"a": 1}))
    started = time.monotonic()
    with pytest.raises(AssertionError) as info:
        rec.wait_advisory(Action.STOP, timeout=0.2)
    assert time.monotonic() - started < 1.0
    message = str(info.value)
    assert "STOP" in message
    assert "CONNECT" in message
    assert "t[1]={'a': 1}" in message


def test_recorder_counts_advisories_and_checks_the_final_is_last() -> None:
    rec = Recorder("r")
    rec(Event(None, (), Advisory(Action.SUBSCRIBE, topic="a")))
    rec(Event("a", (), None))
    rec(Event(None, (), Advisory(Action.CLOSE, final=True)))
    assert rec.count(Action.SUBSCRIBE, "a") == 1
    assert rec.count(Action.SUBSCRIBE, "b") == 0
    assert rec.events() == [Event("a", (), None)]
    assert rec.wait_final(timeout=0.1) == Advisory(Action.CLOSE, final=True)
    rec.assert_final_last(Action.CLOSE)
    rec(Event("a", (), None))
    with pytest.raises(AssertionError):
        rec.assert_final_last(Action.CLOSE)
