"""Every option of a hub: its name, type and default, and the one place each is checked.

:class:`HubOptions` is the single source of truth: ``Hub`` and ``AsyncHub`` take its fields
as keyword arguments (typed by :class:`HubOptionArgs`, which a test holds to the same names
and types), docs/hub.md lists them (a test compares the two), and nothing else restates a
default or a bound. A consumer's own ``queue_size``/``overflow`` are checked here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

Overflow = Literal["drop_oldest", "drop_newest"]
OVERFLOW_POLICIES: tuple[Overflow, ...] = ("drop_oldest", "drop_newest")
# Where a consumer's callback runs: the sync hub's "thread" (its own), "pool" (the hub's
# callback pool) or "inline" (the engine thread); the async hub's "task" (its own).
Run = Literal["thread", "pool", "inline", "task"]

# The kernel's bound on TCP_KEEPIDLE (Linux: MAX_TCP_KEEPIDLE); keepalives_idle is a third of
# liveness_timeout, which is therefore at most three times this.
MAX_TCP_KEEPIDLE = 32767
MAX_LIVENESS_TIMEOUT = 3 * MAX_TCP_KEEPIDLE

_SECONDS = ("connect_timeout", "liveness_timeout", "reconnect_delay", "reconnect_max_delay")
_WAITS = ("send_wait", "overflow_pause")  # 0 allowed: do not wait
_COUNTS = ("send_queue_size", "batch_max_notifies", "batch_max_chars", "pool_max_threads")
_HOOKS = ("default", "parse_float", "parse_int")
_PERIODS = ("tick_interval", "prune_interval")  # None: never


@dataclass(frozen=True)
class HubOptions:
    """Every tunable of a hub, with its default (documented in docs/hub.md)."""

    retry_first_connect: bool = False
    connect_timeout: float = 10.0
    reconnect_delay: float = 0.5
    reconnect_max_delay: float = 30.0
    liveness_timeout: float = 30.0
    queue_size: int = 10_000
    overflow: Overflow = "drop_oldest"
    send_queue_size: int = 100_000
    # How long notify() waits for room in a full send queue before SendQueueFull (0: never).
    send_wait: float = 5.0
    # How long the engine stops reading while a consumer's queue is half full, before it
    # reads on and that consumer's queue drops by its policy (0: never pause).
    overflow_pause: float = 2.0
    batch_max_notifies: int = 1000
    batch_max_chars: int = 1_000_000
    # JSON hooks, as json.dumps(default=) and json.loads(parse_float=, parse_int=): they change
    # the Python values on each side, never a byte of the wire format.
    default: Callable[[Any], Any] | None = None
    parse_float: Callable[[str], Any] | None = None
    parse_int: Callable[[str], Any] | None = None
    # The elected ticker (docs/durable.md): the one hub of the database that holds its lock
    # runs pghub.tick() this often while tick-mode durable topics exist, and pghub.prune()
    # this often while durable topics exist. None: this hub never does.
    tick_interval: float | None = 0.01
    prune_interval: float | None = 60.0
    # Whether this hub stands for election: None, once it has a durable consumer (a hub with
    # plain consumers only opens no connection for it); True, always; False, never.
    ticker: bool | None = None
    # The sync hub's callback pool (consumers made with run="pool" or "inline"): at most this
    # many worker threads; one more starts while every worker is stuck in a turn.
    pool_max_threads: int = 32

    def __post_init__(self) -> None:
        for name in _SECONDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number of seconds, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"{name} must be a finite number of seconds above 0, got {value!r}"
                )
        for name in _WAITS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number of seconds, got {value!r}")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number of seconds, at least 0")
        for name in _PERIODS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"{name} must be a finite number of seconds above 0, or None, got {value!r}"
                )
        if self.liveness_timeout > MAX_LIVENESS_TIMEOUT:
            # Refused here rather than by the kernel at every connect (setsockopt fails).
            raise ValueError(
                f"liveness_timeout must be above 0 and at most {MAX_LIVENESS_TIMEOUT} s, got"
                f" {self.liveness_timeout!r}: TCP keepalives start after liveness_timeout/3,"
                f" and the kernel takes at most {MAX_TCP_KEEPIDLE} s (TCP_KEEPIDLE)"
            )
        if self.reconnect_max_delay < self.reconnect_delay:
            raise ValueError("reconnect_max_delay must be at least reconnect_delay")
        for name in _COUNTS:
            _at_least_one(name, getattr(self, name))
        check_queue(self.queue_size, self.overflow)
        for name in _HOOKS:
            hook = getattr(self, name)
            if hook is not None and not callable(hook):
                raise TypeError(f"{name} must be a function or None, got {hook!r}")
        if self.ticker not in (None, True, False):
            raise TypeError(f"ticker must be True, False or None, got {self.ticker!r}")


class HubOptionArgs(TypedDict, total=False):
    """:class:`HubOptions` as keyword arguments (for typing ``Hub(...)``; same names, same
    types: tests/python/test_hub_options.py compares them)."""

    retry_first_connect: bool
    connect_timeout: float
    reconnect_delay: float
    reconnect_max_delay: float
    liveness_timeout: float
    queue_size: int
    overflow: Overflow
    send_queue_size: int
    send_wait: float
    overflow_pause: float
    batch_max_notifies: int
    batch_max_chars: int
    default: Callable[[Any], Any] | None
    parse_float: Callable[[str], Any] | None
    parse_int: Callable[[str], Any] | None
    tick_interval: float | None
    prune_interval: float | None
    ticker: bool | None
    pool_max_threads: int


def check_queue(queue_size: int, overflow: Overflow) -> None:
    """A consumer's queue bound and overflow policy (the hub's, or a consumer's own)."""
    _at_least_one("queue_size", queue_size)
    if overflow not in OVERFLOW_POLICIES:
        raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}")


def _at_least_one(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")


def check_run(run: str, allowed: tuple[str, ...], hub: str) -> None:
    """A consumer's ``run=``: one its hub offers (docs/hub.md, Where callbacks run)."""
    if run not in allowed:
        raise ValueError(f"run must be one of {allowed} for {hub}, got {run!r}")
