"""Reconnect delays: capped exponential backoff with jitter (pure logic, no I/O)."""

from __future__ import annotations

import random


class Backoff:
    """The delay before each reconnect attempt.

    The n-th consecutive failure waits ``min(cap, initial * 2**n)``, of which a random half is
    jitter, so that many processes that lost the same server do not return in lockstep.
    """

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        if initial <= 0 or cap < initial:
            raise ValueError(f"backoff needs 0 < initial <= cap, got initial={initial}, cap={cap}")
        self.initial = initial
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay to wait now; each call counts one more failure."""
        ceiling = min(self.cap, self.initial * 2.0 ** min(self.failures, 62))
        self.failures += 1
        jitter: float = self._rng.uniform(0, ceiling / 2)
        return ceiling / 2 + jitter

    def reset(self) -> None:
        """A connection succeeded: the next failure starts from the initial delay again."""
        self.failures = 0
