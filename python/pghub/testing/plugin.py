"""pghub's pytest plugin, loaded through the ``pytest11`` entry point (``-p no:pghub`` to skip).

Fixtures, every one named ``pghub_*`` so as not to clash with a project's own:

- ``pghub_dsn``: the conninfo of the test's database: ``--pghub-dsn``, else the ``pghub_dsn``
  ini key, else the database of pytest-postgresql's ``postgresql`` fixture when there is one.
  Override it in a conftest.py for anything else.
- ``pghub_hub_options``: keyword arguments for the hub (``{}``); override it to change them.
- ``pghub_hub``: a started :class:`pghub.Hub` on ``pghub_dsn``, stopped after the test. The
  test fails if a consumer callback of that hub raised, unless it is marked
  ``pghub_allow_callback_errors``.
- ``pghub_fault_proxy``: a started :class:`pghub.testing.FaultProxy` to ``pghub_dsn``'s server.

Loading it starts nothing and connects nowhere; it imports pghub itself (and psycopg with it),
never pytest-postgresql, prometheus_client or OpenTelemetry.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg.conninfo import make_conninfo

from ..hub import Hub
from .faultproxy import FaultProxy

ALLOW_CALLBACK_ERRORS = "pghub_allow_callback_errors"
# Public as pytest.FixtureLookupError in recent pytest; a LookupError in every version.
_FIXTURE_MISSING: type[Exception] = getattr(pytest, "FixtureLookupError", LookupError)
STOP_TIMEOUT = 30.0  # seconds pghub_hub's teardown waits for the hub to stop

_NO_DSN = (
    "pghub_dsn: no database to test against. Give one with --pghub-dsn=DSN or the ini key"
    " pghub_dsn, use pytest-postgresql (its postgresql fixture is picked up), or define a"
    " pghub_dsn fixture in conftest.py (docs/testing.md)"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pghub", "pghub test fixtures (pghub.testing)")
    group.addoption(
        "--pghub-dsn",
        dest="pghub_dsn",
        default=None,
        metavar="DSN",
        help="the database the pghub_dsn fixture gives (overrides the pghub_dsn ini key)",
    )
    parser.addini("pghub_dsn", "the database the pghub_dsn fixture gives", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{ALLOW_CALLBACK_ERRORS}: a consumer callback of pghub_hub may raise in this test",
    )


@pytest.fixture
def pghub_dsn(request: pytest.FixtureRequest) -> str:
    """The conninfo string of the database to test against (see the module's docstring)."""
    configured = request.config.getoption("pghub_dsn") or request.config.getini("pghub_dsn")
    if configured:
        return str(configured)
    try:
        database = request.getfixturevalue("postgresql")
    except _FIXTURE_MISSING:
        pytest.fail(_NO_DSN, pytrace=False)
    return _conninfo_of(database)


@pytest.fixture
def pghub_hub_options() -> dict[str, Any]:
    """Keyword arguments for ``pghub_hub``'s :class:`pghub.Hub`; override to change them."""
    return {}


@pytest.fixture
def pghub_hub(
    request: pytest.FixtureRequest, pghub_dsn: str, pghub_hub_options: dict[str, Any]
) -> Iterator[Hub]:
    """A started :class:`pghub.Hub` on ``pghub_dsn``, stopped after the test."""
    hub = Hub(pghub_dsn, **{"name": "pghub_hub", **pghub_hub_options})
    hub.start()
    try:
        yield hub
    finally:
        _stop(hub)
    errors = hub.stats().callback_errors
    if errors and request.node.get_closest_marker(ALLOW_CALLBACK_ERRORS) is None:
        pytest.fail(
            f"pghub_hub: {errors} consumer callback call(s) raised (logged on the 'pghub.hub'"
            f" logger); mark the test {ALLOW_CALLBACK_ERRORS} if that is expected",
            pytrace=False,
        )


@pytest.fixture
def pghub_fault_proxy(pghub_dsn: str) -> Iterator[FaultProxy]:
    """A started :class:`pghub.testing.FaultProxy` to the server of ``pghub_dsn``; connect
    through it with ``pghub_fault_proxy.dsn(pghub_dsn)``. Closed after the test."""
    try:
        proxy = FaultProxy.for_dsn(pghub_dsn, lifetime=None)
    except ValueError as error:
        pytest.fail(f"pghub_fault_proxy: {error}", pytrace=False)
    with proxy:
        yield proxy


def _conninfo_of(database: Any) -> str:
    """A conninfo string for a psycopg connection (pytest-postgresql's fixture) or a string."""
    if isinstance(database, str):
        return database
    info = getattr(database, "info", None)
    if info is None or not hasattr(info, "dbname"):
        pytest.fail(
            f"pghub_dsn: the postgresql fixture gave a {type(database).__name__}, not a psycopg"
            " connection; define a pghub_dsn fixture in conftest.py",
            pytrace=False,
        )
    params = {
        "host": info.host,
        "port": info.port,
        "dbname": info.dbname,
        "user": info.user,
        "password": info.password,
    }
    return make_conninfo("", **{k: v for k, v in params.items() if v not in (None, "")})


def _stop(hub: Hub) -> None:
    """Stop the hub, failing the test rather than hanging when it does not stop in time (a
    consumer callback that never returns keeps ``stop()`` waiting for it)."""
    failure: list[BaseException] = []

    def stop() -> None:
        try:
            hub.stop(wait=True)
        except BaseException as error:
            failure.append(error)

    stopper = threading.Thread(target=stop, name=f"pghub-{hub.name}-stop", daemon=True)
    stopper.start()
    stopper.join(STOP_TIMEOUT)
    if stopper.is_alive():
        pytest.fail(
            f"pghub_hub: stop() did not return within {STOP_TIMEOUT} s (is a consumer callback"
            " blocked?)",
            pytrace=False,
        )
    if failure:
        raise failure[0]
