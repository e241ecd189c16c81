"""Fixtures the hub's tests share (the database fixtures are in ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hubkit import HubPool

from pghub.testing import FaultProxy


@pytest.fixture
def hubs() -> Iterator[HubPool]:
    """Hubs made for this test, each stopped (bounded) when it ends."""
    pool = HubPool()
    yield pool
    pool.stop_all()


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    """A fault-injecting TCP proxy in front of the server (``proxy.dsn(dsn)``)."""
    with FaultProxy(lifetime=120) as p:
        yield p
