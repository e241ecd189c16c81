"""Every option of a hub: its name, type and default, and the one place each is checked.

:class:`HubOptions` is the single source of truth: ``Hub`` and ``AsyncHub`` take its fields
as keyword arguments, docs/hub.md lists them (a test compares the two), and nothing else
restates a default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Overflow = Literal["drop_oldest", "drop_newest"]
OVERFLOW_POLICIES: tuple[Overflow, ...] = ("drop_oldest", "drop_newest")


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
    batch_max_notifies: int = 1000
    batch_max_chars: int = 1_000_000

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "liveness_timeout", "reconnect_delay"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.reconnect_max_delay < self.reconnect_delay:
            raise ValueError("reconnect_max_delay must be at least reconnect_delay")
        for name in ("queue_size", "send_queue_size", "batch_max_notifies", "batch_max_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {self.overflow!r}")
