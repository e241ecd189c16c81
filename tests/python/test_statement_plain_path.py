"""The triggers' plain paths: a one-row statement on a statement trigger publish_table wrote,
and each row of a row trigger publish_table wrote without row data.

publish_table writes ``'+checked'`` before the topic; such a trigger publishes a statement that
changed one row without a catalog query or dynamic SQL. These tests hold it to the bytes the
set-based path sends (the same statements through a trigger written as an older publish_table
wrote it), check that it really skips ``pghub.key_columns``, that key columns changed after
publish_table never yield a wrong key, and that a forged ``'+checked'`` reaches nothing of the
writer's. Both plain paths write the payload themselves instead of calling ``pghub.encode``:
they are held to the bytes of the full paths and of the Python encoder for table names that
need escaping, and durable topics still go through ``pghub.notify`` to the journal. Helpers and
fixtures come from test_triggers.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from test_triggers import Listener, publish

from pghub import encode_payload
from pghub.install import install

REPO = Path(__file__).resolve().parents[2]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Transactions of statements on t (k1, k2, v, n, o; key (k2, k1)); most change one row. {t}
# is the table's name (quoted as needed).
SCRIPT: list[list[str]] = [
    ["INSERT INTO {t} VALUES (1, 10, 'a')"],
    [
        f"INSERT INTO {{t}} VALUES (-5, {INT64_MIN}, 'min')",
        f"INSERT INTO {{t}} VALUES (7, {INT64_MAX}, 'x')",
    ],
    ["UPDATE {t} SET v = 'b' WHERE k1 = 1"],  # the key stays: one key
    ["UPDATE {t} SET k2 = 3 WHERE k1 = 1"],  # new key sorts first
    ["UPDATE {t} SET k2 = 30, k1 = 0 WHERE k1 = 1"],  # new key sorts last
    ["UPDATE {t} SET v = 'none' WHERE k1 = 12345"],  # no row: no event
    ["INSERT INTO {t} VALUES (2, 20, 'c'), (3, 30, 'd')"],  # two rows: the set-based path
    ["UPDATE {t} SET v = 'e' WHERE k2 IN (20, 30)"],
    ["UPDATE {t} SET k1 = k1 + 100 WHERE k2 IN (20, 30)"],  # two rows, keys changed
    ["INSERT INTO {t} VALUES (102, 20, 'again') ON CONFLICT (k2, k1) DO UPDATE SET v = 'up'"],
    [
        "DELETE FROM {t} WHERE k1 = 7",
        "DELETE FROM {t} WHERE k1 = -5",
        "DELETE FROM {t} WHERE k1 = 9",
    ],
    ["DELETE FROM {t}"],
]
OLD_TRIGGERS = """
CREATE TRIGGER pghub_ins AFTER INSERT ON {t} REFERENCING NEW TABLE AS pghub_new
    FOR EACH STATEMENT EXECUTE FUNCTION pghub.statement_trigger('t', 'k2', 'k1');
CREATE TRIGGER pghub_upd AFTER UPDATE ON {t} REFERENCING OLD TABLE AS pghub_old
    NEW TABLE AS pghub_new
    FOR EACH STATEMENT EXECUTE FUNCTION pghub.statement_trigger('t', 'k2', 'k1');
CREATE TRIGGER pghub_del AFTER DELETE ON {t} REFERENCING OLD TABLE AS pghub_old
    FOR EACH STATEMENT EXECUTE FUNCTION pghub.statement_trigger('t', 'k2', 'k1');
"""
# Table names whose JSON text needs escaping ('"', '\\', '$' written \u0024, non-ASCII), in a
# schema whose name does too; "t" is the plain case.
TABLES = [
    pytest.param("t", id="plain"),
    pytest.param(r'"Sch$ ""q"""."T ""é"" \ $1"', id="odd"),
]


@pytest.fixture
def listen(dsn: str) -> Iterator[Any]:
    opened: list[Listener] = []

    def open_listener(channel: str) -> Listener:
        opened.append(Listener(dsn, channel))
        return opened[-1]

    yield open_listener
    for listener in opened:
        listener.close()


@pytest.fixture
def plain_roles(conn: psycopg.Connection[Any]) -> Iterator[tuple[str, str]]:
    """A table owner and a writer without any special right (dropped afterwards)."""
    owner, writer = (f"pghub_plain_{who}_{os.getpid()}" for who in ("owner", "writer"))
    for role in (owner, writer):
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(owner)))
    yield owner, writer
    conn.execute("RESET ROLE")
    for role in (owner, writer):
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def run_script(conn: psycopg.Connection[Any], listener: Listener, table: str = "t") -> list[str]:
    payloads: list[str] = []
    for transaction in SCRIPT:
        with conn.transaction():
            for statement in transaction:
                conn.execute(statement.format(t=table))
        events = listener.collect(conn)
        # the Python encoder writes the same bytes for the key and value decoded
        assert [encode_payload(list(e.key), e.value) for e in events] == [e.payload for e in events]
        payloads.extend(event.payload for event in events)
    return payloads


def fresh_table(conn: psycopg.Connection[Any], table: str = "t", primary_key: bool = False) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    if "." in table:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {table.split('.')[0]}")
    # columns named as the trigger's aliases of the transition tables (n, o): not the row
    conn.execute(
        f"CREATE TABLE {table} (k1 int NOT NULL, k2 bigint NOT NULL, v text, n int, o int"
        + (", PRIMARY KEY (k2, k1))" if primary_key else ")")
    )
    if not primary_key:
        conn.execute(f"CREATE UNIQUE INDEX ON {table} (k2, k1)")


def function_calls(conn: psycopg.Connection[Any], statement: str) -> dict[str, int]:
    """How many times each PL/pgSQL function of pghub ran for the statement (rolled back)."""
    query = (
        "SELECT funcname, sum(calls) FROM pg_stat_xact_user_functions"
        " WHERE schemaname = 'pghub' GROUP BY funcname"
    )
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL track_functions = 'pl'")
        before = dict(conn.execute(query).fetchall())
        conn.execute(statement)
        after = dict(conn.execute(query).fetchall())
    return {name: int(n) - int(before.get(name, 0)) for name, n in after.items()}


@pytest.mark.parametrize("table", TABLES)
def test_the_plain_path_sends_the_bytes_of_the_set_based_path(
    conn: psycopg.Connection[Any], listen: Any, table: str
) -> None:
    listener = listen("t")
    fresh_table(conn, table)
    # as an older publish_table wrote them: every statement set-based
    conn.execute(OLD_TRIGGERS.format(t=table))
    before = run_script(conn, listener, table)
    fresh_table(conn, table)
    publish(conn, table, topic="t", key_columns=["k2", "k1"])
    after = run_script(conn, listener, table)
    assert after == before
    assert len(before) == 13  # every statement that changed rows sent one event
    if table == "t":
        assert before[0] == (
            'e10,1:{"op":"ins","seq":1,"part":1,"arity":2,"count":1,"parts":1,'
            '"table":"public.t","total":1}'
        )
    else:
        assert r'"table":"\"Sch\u0024 \"\"q\"\"\".\"T \"\"é\"\" \\ \u00241\"",' in before[0]


@pytest.mark.parametrize("table", TABLES)
def test_the_row_plain_path_sends_the_bytes_of_the_full_path(
    conn: psycopg.Connection[Any], listen: Any, table: str
) -> None:
    # The full path: a row trigger without key columns looks the primary key up each row
    # and sends through pghub.notify, as every row trigger did before.
    listener = listen("t")
    fresh_table(conn, table, primary_key=True)
    conn.execute(
        f"CREATE TRIGGER pghub_row AFTER INSERT OR UPDATE OR DELETE ON {table}"
        " FOR EACH ROW EXECUTE FUNCTION pghub.row_trigger('t')"
    )
    before = run_script(conn, listener, table)
    fresh_table(conn, table, primary_key=True)
    publish(conn, table, topic="t", level="row")  # row_trigger('t', 'k2', 'k1')
    after = run_script(conn, listener, table)
    assert after == before
    assert len(before) == 20  # one event a changed row
    if table == "t":
        assert before[0] == 'e10,1:{"op":"ins","seq":1,"table":"public.t"}'
        assert 'e3,1:{"op":"upd","seq":1,"table":"public.t","old_key":[10,1]}' in before


def test_the_plain_paths_write_the_payload_themselves(
    conn: psycopg.Connection[Any], listen: Any
) -> None:
    # Neither plain path calls pghub.encode (a function with a search_path of its own: a call
    # costs microseconds) or pghub.key_columns; the full paths do.
    for level in ("statement", "row"):
        fresh_table(conn, primary_key=True)
        conn.execute("INSERT INTO t VALUES (1, 1, 'a'), (2, 2, 'b')")
        publish(conn, "t", level=level)
        for statement in (
            "INSERT INTO t VALUES (3, 3, 'c')",
            "UPDATE t SET v = 'z' WHERE k1 = 1",
            "UPDATE t SET k1 = 9 WHERE k1 = 1",
            "DELETE FROM t WHERE k1 = 2",
        ):
            calls = function_calls(conn, statement)
            assert calls.get(f"{level}_trigger") == 1, (level, statement)
            assert calls.get("encode", 0) == calls.get("key_columns", 0) == 0, (level, statement)
    conn.execute("SELECT pghub.unpublish_table('t')")
    conn.execute(
        "CREATE TRIGGER pghub_row AFTER INSERT ON t FOR EACH ROW"
        " EXECUTE FUNCTION pghub.row_trigger('t')"
    )  # no key columns: the full path
    calls = function_calls(conn, "INSERT INTO t VALUES (4, 4, 'd')")
    assert calls.get("encode") == calls.get("key_columns") == 1


@pytest.mark.parametrize("wake", ["commit", "tick"])
def test_durable_topics_leave_the_plain_paths_for_the_journal(
    conn: psycopg.Connection[Any], dsn: str, wake: str
) -> None:
    # On a durable topic both plain paths hand the event to pghub.notify: journaled in the
    # writer's transaction with the bytes a plain topic gets, NOTIFYed once in commit mode and
    # not at all in tick mode (pghub.tick does it).
    conn.execute("SELECT pghub.make_durable('kept', wake => %s)", (wake,))
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN kept")
        listener.execute("LISTEN kept_mark")
        for level in ("statement", "row"):
            conn.execute(f"CREATE TABLE t_{level} (id bigint PRIMARY KEY)")
            publish(conn, f"t_{level}", topic="kept", level=level)
            for statement in (
                f"INSERT INTO t_{level} VALUES (1)",
                f"UPDATE t_{level} SET id = 2",
                f"DELETE FROM t_{level}",
            ):
                assert function_calls(conn, statement).get("_journal") == 1, (level, statement)
                conn.execute(statement)
        expected = [
            'e1:{"op":"ins","seq":1,"part":1,"arity":1,"count":1,"parts":1,'
            '"table":"public.t_statement","total":1}',
            'e1,2:{"op":"upd","seq":1,"part":1,"arity":1,"count":2,"parts":1,'
            '"table":"public.t_statement","total":2}',
            'e2:{"op":"del","seq":1,"part":1,"arity":1,"count":1,"parts":1,'
            '"table":"public.t_statement","total":1}',
            'e1:{"op":"ins","seq":1,"table":"public.t_row"}',
            'e2:{"op":"upd","seq":1,"table":"public.t_row","old_key":[1]}',
            'e2:{"op":"del","seq":1,"table":"public.t_row"}',
        ]
        journal = conn.execute("SELECT payload FROM pghub.kept ORDER BY txid, id").fetchall()
        assert [payload for (payload,) in journal] == expected
        # Notifications arrive in commit order: all of the writes' have come once a later
        # transaction's mark has (on a channel of its own, not durable).
        conn.execute("SELECT pg_notify('kept_mark', 'end')")
        heard: list[str] = []
        for note in listener.notifies(timeout=30):
            if note.channel == "kept_mark":
                break
            heard.append(note.payload)
        else:
            raise AssertionError("the mark did not arrive within 30 s")
        assert heard == (expected if wake == "commit" else [])


def key_columns_calls(conn: psycopg.Connection[Any], statement: str) -> int:
    """How many times pghub.key_columns ran for the statement (its transaction rolled back).
    The counts of earlier transactions may not have been flushed yet: the difference counts."""
    query = (
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions"
        " WHERE schemaname = 'pghub' AND funcname = 'key_columns'"
    )
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL track_functions = 'pl'")
        before = conn.execute(query).fetchone()
        conn.execute(statement)
        after = conn.execute(query).fetchone()
    assert before is not None
    assert after is not None
    return int(after[0]) - int(before[0])


def test_a_one_row_statement_looks_nothing_up(conn: psycopg.Connection[Any]) -> None:
    fresh_table(conn)
    conn.execute("INSERT INTO t VALUES (1, 1, 'a'), (2, 2, 'b')")
    publish(conn, "t", key_columns=["k2", "k1"])
    for statement in (
        "INSERT INTO t VALUES (3, 3, 'c')",
        "UPDATE t SET k1 = 9 WHERE k1 = 1",
        "DELETE FROM t WHERE k1 = 2",
    ):
        assert key_columns_calls(conn, statement) == 0, statement
    assert key_columns_calls(conn, "UPDATE t SET v = 'z'") == 1  # two rows: set-based
    conn.execute("SELECT pghub.unpublish_table('t')")
    conn.execute(OLD_TRIGGERS.format(t="t"))  # an older publish_table's: looks up every statement
    assert key_columns_calls(conn, "INSERT INTO t VALUES (3, 3, 'c')") == 1


ALTERED = [
    pytest.param("ALTER TABLE t ALTER COLUMN n TYPE numeric", "1.5", "42804", id="numeric"),
    pytest.param("ALTER TABLE t ALTER COLUMN n TYPE text", "'7'", "42804", id="text"),
    pytest.param("ALTER TABLE t ALTER COLUMN n TYPE float8", "2.5", "42804", id="float"),
    pytest.param("ALTER TABLE t RENAME COLUMN n TO m", "7", "42703", id="renamed"),
    pytest.param("ALTER TABLE t DROP COLUMN n", None, "42703", id="dropped"),
    pytest.param("ALTER TABLE t ALTER COLUMN n DROP NOT NULL", "NULL", "55000", id="nullable"),
]


@pytest.mark.parametrize(("alter", "value", "sqlstate"), ALTERED)
def test_key_columns_changed_after_publish_give_no_wrong_key(
    conn: psycopg.Connection[Any], listen: Any, alter: str, value: str | None, sqlstate: str
) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, n int NOT NULL)")
    publish(conn, "t", key_columns=["n"])
    conn.execute(alter)
    rows = [f"({i}, {value})" if value else f"({i})" for i in (1, 2, 3)]
    # one row (the plain path), then two (the set-based path)
    for statement in (
        f"INSERT INTO t VALUES {rows[0]}",
        f"INSERT INTO t VALUES {rows[1]}, {rows[2]}",
    ):
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(statement)
        assert raised.value.sqlstate == sqlstate, statement


def test_a_retyped_key_column_still_gives_the_value_it_holds(
    conn: psycopg.Connection[Any], listen: Any
) -> None:
    # A one-row statement publishes the integer the column holds (never a rounded one); a
    # statement of several rows checks the column's type, as every statement did before.
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, n int NOT NULL)")
    publish(conn, "t", key_columns=["n"])
    conn.execute("ALTER TABLE t ALTER COLUMN n TYPE numeric")
    listener = listen("t")
    conn.execute("INSERT INTO t VALUES (1, 42)")
    assert [event.key for event in listener.collect(conn)] == [(42,)]
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("INSERT INTO t VALUES (2, 2.0), (3, 3)")
    assert raised.value.sqlstate == "42804"


def test_a_forged_checked_option_reaches_nothing_of_the_writer(
    conn: psycopg.Connection[Any], listen: Any, plain_roles: tuple[str, str]
) -> None:
    # The owner writes '+checked' on a trigger whose transition table is not pghub_new; the
    # writer's session has a temporary table of that name. The trigger must not read it.
    owner, writer = (sql.Identifier(role) for role in plain_roles)
    conn.execute(sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {}").format(
        sql.Identifier(conn.info.dbname), writer
    ))  # fmt: skip
    conn.execute(sql.SQL("SET ROLE {}").format(owner))
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    conn.execute(
        "CREATE TRIGGER forged AFTER INSERT ON notes REFERENCING NEW TABLE AS fresh"
        " FOR EACH STATEMENT EXECUTE FUNCTION pghub.statement_trigger('+checked', 'notes', 'id')"
    )
    conn.execute(sql.SQL("GRANT INSERT ON notes TO {}").format(writer))
    listener = listen("notes")
    conn.execute(sql.SQL("SET ROLE {}").format(writer))
    conn.execute("CREATE TEMPORARY TABLE pghub_new (id int, secret text)")
    conn.execute("INSERT INTO pghub_new VALUES (666, 'the writer''s own')")
    conn.execute("INSERT INTO notes VALUES (1, 'a')")  # the set-based path: the real names
    events = listener.collect(conn)
    assert [(event.key, event.value["op"]) for event in events] == [((1,), "ins")]
    conn.execute("DROP TABLE pghub_new")
    with pytest.raises(psycopg.Error) as raised:  # no such table: the write is refused
        conn.execute("INSERT INTO notes VALUES (2, 'b')")
    assert raised.value.sqlstate == "42P01"
    conn.execute("RESET ROLE")


BEFORE_PLAIN_PATH = "e3dab07"  # the last revision whose publish_table wrote no '+checked'


def test_an_install_from_before_the_plain_path_is_refreshed_in_place(
    conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # A script install of the previous 0.3 with a published table; `pghub install` of this
    # tree refreshes it (same version), the old triggers keep working, publish_table again
    # rewrites them with '+checked'.
    for name in ("pghub.control", "pghub--0.3.sql"):
        shown = subprocess.run(
            ["git", "show", f"{BEFORE_PLAIN_PATH}:sql/{name}"],
            cwd=REPO, capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        if shown.returncode != 0:
            pytest.skip(f"no git history here: {shown.stderr.strip()}")
        (tmp_path / name).write_text(shown.stdout, encoding="utf-8")
    name = f"pghub_plain_upgrade_{os.getpid()}"
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(conn.info.dsn, dbname=name)
    try:
        with psycopg.connect(dsn, autocommit=True) as old:
            assert install(old, sql_dir=tmp_path).action == "installed"
            old.execute("CREATE TABLE t (id int PRIMARY KEY)")
            publish(old, "t")
            assert install(old).action == "refreshed"
            listener = Listener(dsn, "t")
            try:
                definition = (
                    "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 'pghub_ins'"
                )
                row = old.execute(definition).fetchone()
                assert row is not None
                assert "'+checked'" not in row[0]
                assert key_columns_calls(old, "INSERT INTO t VALUES (1)") == 1  # as before
                old.execute("INSERT INTO t VALUES (1)")
                publish(old, "t")
                row = old.execute(definition).fetchone()
                assert row is not None
                assert "statement_trigger('+checked', 't', 'id')" in row[0]
                assert key_columns_calls(old, "INSERT INTO t VALUES (2)") == 0
                old.execute("INSERT INTO t VALUES (2)")
                assert [event.payload for event in listener.collect(old)] == [
                    f'e{i}:{{"op":"ins","seq":1,"part":1,"arity":1,"count":1,"parts":1,'
                    f'"table":"public.t","total":1}}'
                    for i in (1, 2)
                ]
            finally:
                listener.close()
    finally:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
