"""Tools for testing code that uses pghub, and the pytest plugin that offers them as fixtures.

- :class:`EventRecorder`, :func:`listen`, :func:`alisten`: record what a consumer receives and
  wait, with a timeout, for an event that matches a predicate;
- :func:`next_event`: the same over an :meth:`pghub.AsyncHub.subscription`;
- :class:`FaultProxy`: a TCP proxy that resets, black-holes or refuses connections;
- :func:`install_pghub`: a pytest-postgresql loader that installs pghub into the test database;
- :mod:`pghub.testing.plugin`: the fixtures ``pghub_dsn``, ``pghub_hub``, ``pghub_hub_options``
  and ``pghub_fault_proxy``, loaded by pytest through the ``pytest11`` entry point.

See docs/testing.md.
"""

from __future__ import annotations

from ._events import EventRecorder, EventTimeout, alisten, listen, next_event
from ._install import install_pghub
from .faultproxy import FaultProxy

__all__ = [
    "EventRecorder",
    "EventTimeout",
    "FaultProxy",
    "alisten",
    "install_pghub",
    "listen",
    "next_event",
]
