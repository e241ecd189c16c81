"""The ``pghub`` command line: listen, notify, install, sql, doctor, demo, bench (docs/cli.md)."""

from __future__ import annotations

from .main import main

__all__ = ["main"]
