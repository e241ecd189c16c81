"""Runs the pgTAP files of tests/sql, one test each, in the test's own fresh database.

Each file is sent as one query string; every result set it yields is TAP text. A test fails
on any ``not ok`` line, on a plan that does not match the number of assertions run, on a
file without a plan, and on any error that escapes the file. The failing lines are shown,
with the diagnostics pgTAP writes after them.

The file also holds what pgTAP cannot see from inside one session: that a rejected
``pghub.notify`` sends nothing, and that events sent from SQL of every kind (plain SELECT,
DO block, function, procedure, trigger) arrive.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

SQL_TESTS = Path(__file__).resolve().parents[1] / "sql"
TAP_FILES = sorted(SQL_TESTS.glob("*.sql"))
PLAN = re.compile(r"^1\.\.(\d+)$")
RESULT = re.compile(r"^(not )?ok (\d+)\b")
WAIT_SECONDS = 5.0  # every wait for a notification is bounded


def run_tap(conn: psycopg.Connection[Any], script: str) -> list[str]:
    """Execute a pgTAP script and return every line of every result set, in order."""
    lines: list[str] = []
    with conn.cursor() as cur:
        cur.execute(script.encode())  # no parameters: sent as one simple query
        while True:
            if cur.description is not None:
                for row in cur.fetchall():
                    for cell in row:
                        if isinstance(cell, str):
                            lines.extend(cell.splitlines())
            if not cur.nextset():
                break
    return lines


def tap_failures(lines: list[str]) -> list[str]:
    """What is wrong with a TAP stream: failed assertions with their diagnostics, plan errors."""
    problems: list[str] = []
    planned: int | None = None
    numbers: list[int] = []
    for index, line in enumerate(lines):
        plan = PLAN.match(line)
        if plan is not None:
            if planned is not None:
                problems.append(f"a second plan: {line}")
            planned = int(plan.group(1))
            continue
        result = RESULT.match(line)
        if result is None:
            continue
        numbers.append(int(result.group(2)))
        if result.group(1):  # not ok: show it with the diagnostics that follow
            shown = [line]
            for follow in lines[index + 1 :]:
                if not follow.startswith("#") or follow.startswith("# Looks like"):
                    break
                shown.append(follow)
            problems.append("\n".join(shown))
    if planned is None:
        problems.append("no plan: the file must SELECT plan(n)")
    elif len(numbers) != planned:
        problems.append(f"planned {planned} assertions but {len(numbers)} ran")
    if numbers != list(range(1, len(numbers) + 1)):
        problems.append(f"assertions numbered out of order: {numbers}")
    problems.extend(line for line in lines if line.startswith("# Looks like"))
    return problems


def test_tap_files_exist() -> None:
    assert TAP_FILES, f"no pgTAP files in {SQL_TESTS}"


@pytest.mark.parametrize("path", TAP_FILES, ids=[p.stem for p in TAP_FILES])
def test_pgtap(conn: psycopg.Connection[Any], path: Path) -> None:
    conn.execute("CREATE EXTENSION IF NOT EXISTS pgtap")
    lines = run_tap(conn, path.read_text(encoding="utf-8"))
    problems = tap_failures(lines)
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


def test_runner_catches_failures() -> None:
    """The checks above really fail: a not ok, a short run, a missing plan."""
    assert tap_failures(["1..2", "ok 1 - a", "ok 2 - b"]) == []
    failed = tap_failures(["1..2", "ok 1 - a", "not ok 2 - b", "# Failed test 2", "#  got: 1"])
    assert failed == ["not ok 2 - b\n# Failed test 2\n#  got: 1"]
    assert tap_failures(["1..3", "ok 1", "ok 2"]) == ["planned 3 assertions but 2 ran"]
    assert tap_failures(["ok 1"]) == ["no plan: the file must SELECT plan(n)"]


def test_runner_fails_a_broken_assertion(conn: psycopg.Connection[Any]) -> None:
    """A real pgTAP run with a false assertion gives a not ok line the runner reports."""
    conn.execute("CREATE EXTENSION IF NOT EXISTS pgtap")
    lines = run_tap(
        conn,
        "BEGIN; SELECT plan(2); SELECT is(pghub.channel('A'), 'a', 'right');"
        " SELECT is(pghub.channel('A'), 'A', 'wrong'); SELECT finish(); ROLLBACK;",
    )
    problems = tap_failures(lines)
    assert problems[0].startswith("not ok 2 - wrong")
    assert "want: A" in problems[0]
    assert problems[1:] == ["# Looks like you failed 1 test of 2"]


# --- what one session cannot see: notifications that arrive, or do not -------------------


def _next_notification(listener: psycopg.Connection[Any]) -> psycopg.Notify | None:
    for notify in listener.notifies(timeout=WAIT_SECONDS, stop_after=1):
        return notify
    return None


REJECTED_CALLS = [
    pytest.param("SELECT pghub.notify('')", "22023", id="empty-topic"),
    pytest.param("SELECT pghub.notify('a-b', '{1}')", "22023", id="bad-character"),
    pytest.param("SELECT pghub.notify(repeat('t', 64))", "22023", id="long-topic"),
    pytest.param("SELECT pghub.notify(NULL, '{1}')", "22023", id="null-topic"),
    pytest.param("SELECT pghub.notify('t', '{1,NULL}')", "22004", id="null-element"),
    pytest.param("SELECT pghub.notify('t', '{{1,2},{3,4}}')", "2202E", id="two-dimensions"),
    pytest.param(
        "SELECT pghub.notify('t', NULL, to_jsonb(repeat('x', 7996)))", "54000", id="8000-bytes"
    ),
    pytest.param(
        "SELECT pghub.notify('t', NULL, to_jsonb(repeat('$', 1333)))", "54000", id="dollars"
    ),
]


@pytest.mark.parametrize(("statement", "sqlstate"), REJECTED_CALLS)
def test_rejected_notify_sends_nothing(
    conn: psycopg.Connection[Any], dsn: str, statement: str, sqlstate: str
) -> None:
    with psycopg.connect(dsn, autocommit=True) as listener:
        # Every channel a faulty notify could have used that pg_notify would accept.
        listener.execute('LISTEN t; LISTEN "a-b"')
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(statement)
        assert raised.value.sqlstate == sqlstate
        # A marker sent afterwards must be the first thing to arrive (commit order).
        conn.execute("SELECT pghub.notify('t', '{42}')")
        first = _next_notification(listener)
        assert first is not None, "the marker never arrived"
        assert (first.channel, first.payload) == ("t", "e42")


SENDERS = [
    pytest.param("SELECT pghub.notify('Orders', '{1}', '{\"via\": \"select\"}')", id="select"),
    pytest.param(
        "DO $$ BEGIN PERFORM pghub.notify('Orders', '{1}', '{\"via\": \"select\"}'); END $$",
        id="do-block",
    ),
    pytest.param(
        "CREATE FUNCTION send() RETURNS void LANGUAGE sql"
        " AS $$ SELECT pghub.notify('Orders', '{1}', '{\"via\": \"select\"}') $$;"
        " SELECT send()",
        id="function",
    ),
    pytest.param(
        "CREATE PROCEDURE send() LANGUAGE plpgsql"
        " AS $$ BEGIN PERFORM pghub.notify('Orders', '{1}', '{\"via\": \"select\"}'); END $$;"
        " CALL send()",
        id="procedure",
    ),
    pytest.param(
        "CREATE TABLE orders (id bigint, via text);"
        " CREATE FUNCTION orders_sent() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " PERFORM pghub.notify('Orders', ARRAY[NEW.id], jsonb_build_object('via', NEW.via));"
        " RETURN NEW; END $$;"
        " CREATE TRIGGER sent AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION orders_sent();"
        " INSERT INTO orders VALUES (1, 'select')",
        id="trigger",
    ),
]


@pytest.mark.parametrize("statements", SENDERS)
def test_notify_from_sql_arrives(conn: psycopg.Connection[Any], dsn: str, statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN orders")
        conn.execute(statements.encode())  # several statements: one simple query
        got = _next_notification(listener)
        assert got is not None, f"nothing arrived within {WAIT_SECONDS} s"
        assert (got.channel, got.payload) == ("orders", 'e1:{"via":"select"}')
