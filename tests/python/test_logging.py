"""pghub's logging: silent unless configured, one logger per area, the hub's name as a record
attribute rather than a prefix, DEBUG lines for connections and subscriptions, and a failed
callback logged with its consumer, topic and key, never the event's value (docs/hub.md,
Logging). Checked with caplog and, where "configured nothing" matters, in a fresh interpreter.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hubkit import HubPool, Recorder, send_raw, terminate, wait_until

import pghub
from pghub import Action, Event

RUN_TIMEOUT = 30


@pytest.fixture
def hubs() -> Iterator[HubPool]:
    pool = HubPool()
    yield pool
    pool.stop_all()


def hub_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("pghub")]


def python(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=RUN_TIMEOUT, env=env
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- silent unless configured ---------------------------------------------------------------------


def test_the_pghub_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger("pghub").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_a_program_that_configures_no_logging_gets_nothing_on_stderr() -> None:
    """Without a handler on the way, Python's last resort printed the hub's errors to stderr
    (``pghub hub 'hub1': cannot connect: ...``) in programs that asked for no logging."""
    result = python(
        "import pghub\n"
        f"hub = pghub.Hub('host=127.0.0.1 port={closed_port()} connect_timeout=1')\n"
        "try:\n"
        "    hub.start()\n"
        "except pghub.ConnectFailed:\n"
        "    print('failed as expected')\n"
    )
    assert result.stdout == "failed as expected\n"
    assert result.stderr == ""


def test_the_command_line_configures_logging_only_when_it_runs() -> None:
    result = python(
        "import logging\n"
        "from pghub.cli import main\n"
        "print(len(logging.getLogger().handlers), logging.getLogger('pghub').level)\n"
        "main(['sql'])\n"
        "print(len(logging.getLogger().handlers), logging.getLogger('pghub').level)\n"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "0 0"  # imported: nothing configured
    assert lines[-1] == f"1 {logging.CRITICAL}"  # main() ran: its handler, its levels


# --- names, attributes, DEBUG lines ---------------------------------------------------------------


def test_hub_records_carry_the_hub_name_as_an_attribute_not_a_prefix(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pghub")
    hub = hubs.started(dsn, name="logged", reconnect_delay=0.05)
    rec = Recorder()
    consumer = hub.consumer(rec, "logs", name="auditor")
    assert consumer.wait_subscribed(5)
    assert terminate(conn, [hub.stats().backend_pid or 0]) == 1
    rec.wait_advisory(Action.RECONNECT, timeout=10)
    records = hub_records(caplog)
    assert records
    assert {r.name for r in records} == {"pghub.hub"}
    assert all(getattr(r, "pghub_hub", None) == "logged" for r in records)
    assert not [r.getMessage() for r in records if "pghub hub" in r.getMessage()]
    said = [(r.levelname, r.getMessage()) for r in records]
    wanted = [
        ("DEBUG", "connecting (attempt 1)"),
        ("DEBUG", "session up (backend pid"),
        ("INFO", "connected and listening (backend pid"),
        ("DEBUG", "consumer 'auditor' made"),
        ("DEBUG", "consumer 'auditor' subscribes to ['logs']"),
        ("DEBUG", 'sending LISTEN "logs"'),
        ("DEBUG", "took effect: LISTEN ['logs']"),
        ("DEBUG", "SUBSCRIBE 'logs' to <Mailbox 'auditor'>"),
        ("WARNING", "connection lost: "),
        ("DEBUG", "connecting (attempt 2)"),
        ("INFO", "connected and listening (backend pid"),
    ]
    position = 0
    for level, start in wanted:  # in this order, other lines between them allowed
        found = [
            i
            for i, (lv, m) in enumerate(said)
            if i >= position and lv == level and m.startswith(start)
        ]
        assert found, f"no {level} {start!r} after line {position}: {said}"
        position = found[0] + 1


def test_a_failed_callback_names_its_consumer_topic_and_key_not_the_value(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, caplog: pytest.LogCaptureFixture
) -> None:
    hub = hubs.started(dsn, name="audited")

    def explode(event: Event) -> None:
        if event.advisory is None:
            raise ValueError("cannot apply it")

    rec = Recorder(then=explode)
    hub.consumer(rec, "secrets", name="ledger")
    rec.wait_advisory(Action.SUBSCRIBE, "secrets")
    send_raw(conn, "secrets", 'e4,2:{"card":"4111-1111-1111-1111"}')
    wait_until(lambda: hub.stats().callback_errors == 1, what="the callback error counted")
    wait_until(lambda: any(r.exc_info for r in hub_records(caplog)), what="its record")
    (record,) = [r for r in hub_records(caplog) if r.exc_info]
    assert record.levelno == logging.ERROR
    assert record.name == "pghub.hub"
    message = record.getMessage()
    assert message == "consumer 'ledger': callback raised on an event of 'secrets', key [4, 2]"
    assert "4111" not in message
    attributes = {k: getattr(record, k) for k in ("pghub_hub", "pghub_consumer", "pghub_topic")}
    assert attributes == {
        "pghub_hub": "audited",
        "pghub_consumer": "ledger",
        "pghub_topic": "secrets",
    }
    assert record.pghub_key == (4, 2)  # type: ignore[attr-defined]
    assert "cannot apply it" in str(record.exc_info[1])  # type: ignore[index]


def test_a_consumer_is_named_after_its_callback_by_default(dsn: str) -> None:
    class Cache:
        def apply(self, event: Event) -> None:
            pass

    hub = pghub.Hub(dsn)
    assert hub.consumer(Cache().apply).name.endswith("Cache.apply")
    assert hub.consumer(Recorder()).name == "Recorder"
    assert hub.consumer(print, name="printer").name == "printer"
    hub.stop()


def test_a_given_logger_gets_the_records_with_the_hub_name(
    dsn: str, hubs: HubPool, caplog: pytest.LogCaptureFixture
) -> None:
    mine = logging.getLogger("app.events")
    caplog.set_level(logging.INFO, logger="app.events")
    hubs.started(dsn, name="mine", logger=mine)
    records = [r for r in caplog.records if r.name == "app.events"]
    assert any(r.getMessage().startswith("connected and listening") for r in records)
    assert all(getattr(r, "pghub_hub", None) == "mine" for r in records)


def test_sql_notify_logs_on_pghub_sql(
    conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pghub.sql")
    pghub.sql_notify(conn, "Orders", [1], {"a": 1})
    (record,) = [r for r in caplog.records if r.name == "pghub.sql"]
    assert record.levelno == logging.DEBUG
    assert record.getMessage().startswith("pg_notify on 'orders' (")


def test_the_docs_format_shows_the_hub_and_other_records_alike() -> None:
    """The format docs/hub.md suggests: pghub records show their hub, others a dash."""
    handler_output = python(
        "import logging, pghub\n"
        "handler = logging.StreamHandler()\n"
        "handler.setFormatter(logging.Formatter("
        "'%(name)s [%(pghub_hub)s] %(message)s', defaults={'pghub_hub': '-'}))\n"
        "logging.basicConfig(level=logging.INFO, handlers=[handler])\n"
        "logging.getLogger('app').info('hello')\n"
        f"hub = pghub.Hub('host=127.0.0.1 port={closed_port()} connect_timeout=1', name='h')\n"
        "try:\n"
        "    hub.start()\n"
        "except pghub.ConnectFailed:\n"
        "    pass\n"
    )
    lines = handler_output.stderr.splitlines()
    assert lines[0] == "app [-] hello"
    assert lines[1].startswith("pghub.hub [h] cannot connect: ")
