"""The fault proxy itself, checked against the real server with plain psycopg."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from pghub.testing import FaultProxy


def test_query_goes_through_the_proxy(dsn: str) -> None:
    with FaultProxy() as proxy, psycopg.connect(proxy.dsn(dsn), connect_timeout=5) as c:
        assert proxy.connections == 1
        row = c.execute("SELECT inet_server_port(), current_database()").fetchone()
        assert row is not None
        assert row[0] == 5432
        assert row[1] == psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]


def test_dsn_keeps_everything_but_host_and_port(dsn: str) -> None:
    with FaultProxy() as proxy:
        through = psycopg.conninfo.conninfo_to_dict(proxy.dsn(dsn + " application_name=x"))
    original = psycopg.conninfo.conninfo_to_dict(dsn)
    assert through["host"] == "127.0.0.1"
    assert through["port"] == str(proxy.port)
    assert through["application_name"] == "x"
    assert through["dbname"] == original["dbname"]
    assert through["user"] == original["user"]


def test_reset_breaks_the_connection(dsn: str) -> None:
    with FaultProxy() as proxy, psycopg.connect(proxy.dsn(dsn), connect_timeout=5) as c:
        c.execute("SELECT 1")
        assert proxy.reset() == 1
        assert proxy.connections == 0
        with pytest.raises(psycopg.OperationalError):
            c.execute("SELECT 1")
        # The proxy still accepts new connections after a reset.
        with psycopg.connect(proxy.dsn(dsn), connect_timeout=5) as again:
            assert again.execute("SELECT 2").fetchone() == (2,)


def test_blackhole_hangs_until_the_client_timeout(dsn: str) -> None:
    outcome: list[BaseException | tuple[object, ...] | None] = []

    def query(c: psycopg.Connection[tuple[object, ...]]) -> None:
        try:
            outcome.append(c.execute("SELECT 1").fetchone())
        except BaseException as exc:
            outcome.append(exc)

    with FaultProxy() as proxy, psycopg.connect(proxy.dsn(dsn), connect_timeout=5) as c:
        c.execute("SELECT 1")
        proxy.blackhole()
        worker = threading.Thread(target=query, args=(c,), daemon=True)
        worker.start()
        worker.join(timeout=1.5)  # the client-side timeout
        assert worker.is_alive(), f"the query did not hang: {outcome}"
        # The sockets stayed open all along: the proxy still counts the connection.
        assert proxy.connections == 1
        # Give up on it the hard way; the hung query then fails instead of hanging forever.
        proxy.reset()
        worker.join(timeout=5)
        assert not worker.is_alive()
        assert len(outcome) == 1
        assert isinstance(outcome[0], psycopg.OperationalError), outcome


def test_blackhole_then_resume_delivers_the_held_reply(dsn: str) -> None:
    with FaultProxy() as proxy, psycopg.connect(proxy.dsn(dsn), connect_timeout=5) as c:
        proxy.blackhole()
        pgconn = c.pgconn
        pgconn.send_query(b"SELECT 42")
        time.sleep(0.5)
        pgconn.consume_input()
        assert pgconn.is_busy()  # nothing arrived in half a second
        proxy.resume()
        deadline = time.monotonic() + 5
        while pgconn.is_busy():
            assert time.monotonic() < deadline, "no reply within 5 s of resume()"
            time.sleep(0.02)
            pgconn.consume_input()
        result = pgconn.get_result()
        assert result is not None
        assert result.get_value(0, 0) == b"42"
        assert pgconn.get_result() is None  # the query is over; the connection is idle again


def test_blackhole_of_new_connections_makes_connect_time_out(dsn: str) -> None:
    with FaultProxy() as proxy:
        proxy.blackhole(new_connections=True)
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(proxy.dsn(dsn), connect_timeout=2)
        assert time.monotonic() - started < 5


def test_blackhole_spares_new_connections_by_default(dsn: str) -> None:
    with FaultProxy() as proxy, psycopg.connect(proxy.dsn(dsn), connect_timeout=5) as old:
        proxy.blackhole()
        with psycopg.connect(proxy.dsn(dsn), connect_timeout=5) as fresh:
            assert fresh.execute("SELECT 3").fetchone() == (3,)
        assert old.pgconn.status == psycopg.pq.ConnStatus.OK


def test_refuse_makes_connect_fail_fast_and_accept_undoes_it(dsn: str) -> None:
    with FaultProxy() as proxy:
        proxy.refuse()
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(proxy.dsn(dsn), connect_timeout=10)
        assert time.monotonic() - started < 1.0
        assert proxy.refused >= 1
        assert proxy.connections == 0
        proxy.accept()
        with psycopg.connect(proxy.dsn(dsn), connect_timeout=5) as c:
            assert c.execute("SELECT 4").fetchone() == (4,)


def test_exit_closes_every_socket(dsn: str) -> None:
    with FaultProxy() as proxy:
        c = psycopg.connect(proxy.dsn(dsn), connect_timeout=5)
        proxy.wait_connections(1)
    try:
        with pytest.raises(psycopg.OperationalError):
            c.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(proxy.dsn(dsn), connect_timeout=2)
    finally:
        c.close()


def test_lifetime_is_bounded(dsn: str) -> None:
    proxy = FaultProxy(lifetime=0.5).start()
    try:
        c = psycopg.connect(proxy.dsn(dsn), connect_timeout=5)
        deadline = time.monotonic() + 5
        while proxy.connections:
            assert time.monotonic() < deadline, "the proxy outlived its lifetime"
            time.sleep(0.05)
        with pytest.raises(psycopg.OperationalError):
            c.execute("SELECT 1")
        c.close()
    finally:
        proxy.close()
