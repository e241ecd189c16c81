"""fork() after a hub began: in the child, its thread is gone and its session is the parent's.

Engines register here; in a child made by fork() each is told (:meth:`Forkable.forked`) and
decides whether it had begun. :func:`refusal` is the error every call raises then.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol

from .errors import HubForked


class Forkable(Protocol):
    def forked(self) -> None: ...


_watched: weakref.WeakSet[Forkable] = weakref.WeakSet()


def watch(engine: Forkable) -> None:
    _watched.add(engine)


def _after_fork_in_child() -> None:
    for engine in list(_watched):
        engine.forked()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


def refusal(name: str, parent: int) -> HubForked:
    return HubForked(
        f"hub {name!r} belongs to process {parent}; this is process {os.getpid()}, forked"
        " from it, where the hub's engine thread and session do not exist: make and start a"
        " new hub in the child (or start processes with multiprocessing's 'spawn' or"
        " 'forkserver')"
    )
