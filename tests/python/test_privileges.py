"""Roles that are not superusers install pghub and use all of it.

An *owner* role has CREATE on its database and nothing else: it installs the trusted extension
(or runs the script route). A *user* role has only what PUBLIC has, plus a schema of its own for
its tables: it calls every function and publishes its own table. Both are checked against the
catalog, so a function added later without being exercised (or granted) here fails the test.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pghub.install import install

WAIT_SECONDS = 5.0  # every wait for an event is bounded
# 42501 on another role's table: dropping its triggers, or creating one without TRIGGER privilege
OTHERS_TABLE = r"must be owner of (relation|table) t|permission denied for table t"

# Every pghub function, and how this test reaches it. Internal helpers are reached through the
# public function that calls them.
EXERCISED = {
    "version": "called",
    "channel": "called",
    "_topic_fault": "through channel() with a bad topic",
    "encode": "called",
    "decode": "called",
    "_payload_fault": "through decode() with a bad payload",
    "notify": "called, event received",
    "key_columns": "called",
    "publish_table": "called on the role's own table, per row and per statement",
    "unpublish_table": "called",
    "row_trigger": "fired by publish_table(level => 'row')",
    "statement_trigger": "fired by publish_table(level => 'statement')",
    # durable topics (exercise_durable)
    "make_durable": "called by the installing role; refused to a plain role",
    "make_transient": "called by the installing role; refused to a plain role",
    "_sync_marker": "through make_durable and make_transient",
    "_journal": "through notify, notify_encoded and row_trigger on a durable topic",
    "notify_encoded": "called on a durable and a plain topic; refused over 7999 bytes (plain)",
    "_journal_encoded": "through notify_encoded on a durable topic",
    "_refuse_payload": "through notify_encoded over 7999 bytes on a plain topic",
    "_snapshot_now": "through current_position and read",
    "_position": "through read, consumer_position and ack",
    "_durable_topic": "through read, consumer_position and ack",
    "_consumer_name": "through consumer_position, ack and drop_consumer",
    "_gap": "through read",
    "_batch": "through read and tick",
    "_removable": "through prune",
    "current_position": "called",
    "consumer_position": "called",
    "ack": "called; refused on another role's consumer",
    "drop_consumer": "called",
    "read": "called",
    "tick": "called",
    "prune": "called",
    "durable_topics": "called",
    "durable_consumers": "called",
}

_role_numbers = itertools.count()


@pytest.fixture
def make_role(server_dsn: str) -> Iterator[Callable[[str], str]]:
    """A factory of LOGIN roles without any attribute (no superuser, createdb or createrole)."""
    made: list[str] = []

    def create(kind: str) -> str:
        name = f"pghub_{kind}_{os.getpid()}_{next(_role_numbers)}"
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        made.append(name)
        return name

    yield create
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        for name in made:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def roles_and_database(
    make_role: Callable[[str], str], empty_database: Callable[[], str]
) -> tuple[str, str, str]:
    """(owner, user, dsn): a new database on which owner has CREATE; user owns schema user_space.

    Requested in this order so that the databases are dropped before the roles.
    """
    owner, user = make_role("owner"), make_role("user")
    dsn = empty_database()
    with psycopg.connect(dsn, autocommit=True) as admin:
        dbname = str(conninfo_to_dict(dsn)["dbname"])
        admin.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(dbname), sql.Identifier(owner)
            )
        )
        admin.execute(
            sql.SQL("CREATE SCHEMA user_space AUTHORIZATION {}").format(sql.Identifier(user))
        )
    return owner, user, dsn


def as_role(dsn: str, role: str) -> psycopg.Connection[Any]:
    return psycopg.connect(make_conninfo(dsn, user=role), autocommit=True)


def receive(listener: psycopg.Connection[Any], count: int) -> list[tuple[str, str]]:
    """The next ``count`` notifications, or fewer if they do not come within the bound."""
    return [
        (n.channel, n.payload) for n in listener.notifies(timeout=WAIT_SECONDS, stop_after=count)
    ]


def nothing_more(listener: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [(n.channel, n.payload) for n in listener.notifies(timeout=0.3)]


def decoded(conn: psycopg.Connection[Any], payload: str) -> tuple[list[int], Any]:
    row = conn.execute("SELECT key, value FROM pghub.decode(%s)", [payload]).fetchone()
    assert row is not None
    return list(row[0]), row[1]


@pytest.mark.parametrize("route", ["extension", "script"])
def test_non_superuser_installs_and_everyone_uses_everything(
    route: str, roles_and_database: tuple[str, str, str]
) -> None:
    owner, user, dsn = roles_and_database
    with as_role(dsn, owner) as conn:
        superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert superuser.fetchone() == (False,)
        if route == "extension":
            conn.execute("CREATE EXTENSION pghub")
            row = conn.execute(
                "SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'pghub'"
            ).fetchone()
            assert row == (owner,)
        else:
            assert install(conn).action == "installed"
        conn.execute("CREATE SCHEMA owner_space")  # CREATE on the database allows this
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA owner_space TO {}").format(sql.Identifier(user))
        )
    exercise_everything(dsn, owner, "owner_space")
    exercise_everything(dsn, user, "user_space")
    exercise_durable(dsn, owner, user)
    # Somebody else's table: neither published nor unpublished by the user.
    with as_role(dsn, owner) as conn:
        conn.execute("SELECT pghub.publish_table('owner_space.t')")
    with as_role(dsn, user) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=OTHERS_TABLE):
            conn.execute("SELECT pghub.publish_table('owner_space.t', level => 'row')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=OTHERS_TABLE):
            conn.execute("SELECT pghub.unpublish_table('owner_space.t')")
        triggers = conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'owner_space.t'::regclass ORDER BY 1"
        ).fetchall()
        assert triggers == [("pghub_del",), ("pghub_ins",), ("pghub_tru",), ("pghub_upd",)]


def exercise_everything(dsn: str, role: str, schema: str) -> None:
    """As ``role``: every pghub function, and publishing a table in ``schema`` (the role's)."""
    with as_role(dsn, role) as conn, as_role(dsn, role) as listener:
        functions = conn.execute(
            """
            SELECT p.proname, has_function_privilege(p.oid, 'EXECUTE')
            FROM pg_proc AS p WHERE p.pronamespace = 'pghub'::regnamespace
            """
        ).fetchall()
        assert {name for name, _ in functions} == set(EXERCISED), (
            "pghub's functions changed: list each in EXERCISED with how the test reaches it"
        )
        assert all(allowed for _, allowed in functions), functions

        # the core functions
        assert conn.execute("SELECT pghub.version()").fetchone() == ("0.3",)
        assert conn.execute("SELECT pghub.channel('Orders')").fetchone() == ("orders",)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="Or ders"):
            conn.execute("SELECT pghub.channel('Or ders')")
        payload = conn.execute("""SELECT pghub.encode('{1,2}', '{"a": 1}')""").fetchone()
        assert payload == ('e1,2:{"a":1}',)
        assert decoded(conn, 'e1,2:{"a":1}') == ([1, 2], {"a": 1})
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            conn.execute("SELECT * FROM pghub.decode('x1')")
        listener.execute("LISTEN orders")
        conn.execute("""SELECT pghub.notify('Orders', '{7}', '{"by": "sql"}')""")
        assert receive(listener, 1) == [("orders", 'e7:{"by":"sql"}')]

        # publishing a table the role owns: per row, then per statement, then not at all
        table = f"{schema}.t"
        conn.execute(
            sql.SQL("CREATE TABLE {}.t (id bigint PRIMARY KEY, name text)").format(
                sql.Identifier(schema)
            )
        )
        insert = sql.SQL("INSERT INTO {}.t VALUES (1, 'a'), (2, 'b')").format(
            sql.Identifier(schema)
        )
        update = sql.SQL("UPDATE {}.t SET name = 'c'").format(sql.Identifier(schema))
        delete = sql.SQL("DELETE FROM {}.t").format(sql.Identifier(schema))
        assert conn.execute("SELECT pghub.key_columns(%s)", [table]).fetchone() == (["id"],)
        listener.execute("LISTEN t")

        published = conn.execute("SELECT pghub.publish_table(%s, level => 'row')", [table])
        assert published.fetchone() == ("t",)
        conn.execute(insert)
        events = [decoded(conn, p) for _, p in receive(listener, 2)]
        assert events == [
            ([1], {"op": "ins", "table": table, "seq": 1}),
            ([2], {"op": "ins", "table": table, "seq": 2}),
        ]

        assert conn.execute("SELECT pghub.publish_table(%s)", [table]).fetchone() == ("t",)
        conn.execute(update)
        ((key, value),) = [decoded(conn, p) for _, p in receive(listener, 1)]
        assert (sorted(key), value["op"], value["count"]) == ([1, 2], "upd", 2)

        assert conn.execute("SELECT pghub.unpublish_table(%s)", [table]).fetchone() == (4,)
        conn.execute(delete)
        assert nothing_more(listener) == []


def exercise_durable(dsn: str, owner: str, user: str) -> None:
    """The installing role makes topics durable; a role with only PUBLIC's rights writes to one
    (pghub.notify, a row trigger with a row too large for NOTIFY), reads it, keeps a named
    consumer, ticks and prunes, but may neither make a topic durable, nor change the installing
    role's topic or consumer, nor write the journal or the topics table directly."""
    with as_role(dsn, owner) as conn:
        assert conn.execute("SELECT pghub.make_durable('Kept', '1 hour')").fetchone() == ("kept",)
        made = conn.execute("SELECT pghub.make_durable('ticked', wake => 'tick')").fetchone()
        assert made == ("ticked",)
        assert conn.execute("SELECT pghub.consumer_position('o', 'kept')").fetchone() is not None
    with as_role(dsn, user) as conn, as_role(dsn, user) as listener:
        listener.execute("LISTEN kept")
        start = conn.execute("SELECT pghub.current_position()").fetchone()
        assert start is not None
        conn.execute("""SELECT pghub.notify('Kept', '{1}', '{"by": "user"}')""")
        assert receive(listener, 1) == [("kept", 'e1:{"by":"user"}')]
        conn.execute("SELECT pghub.notify('ticked', '{2}')")
        conn.execute("CREATE TABLE user_space.big (id bigint PRIMARY KEY, body text)")
        conn.execute("SELECT pghub.publish_table('user_space.big', 'Kept', 'row', NULL, true)")
        conn.execute("INSERT INTO user_space.big VALUES (3, repeat('x', 9000))")
        conn.execute("SELECT pghub.notify_encoded(ARRAY['kept', 'plain'], ARRAY['e4', 'e5'])")
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            conn.execute(
                "SELECT pghub.notify_encoded(ARRAY['plain'], ARRAY['e' || repeat('1', 8000)])"
            )
        rows = conn.execute("SELECT pos, payload FROM pghub.read('kept', %s)", start).fetchall()
        assert [decoded(conn, payload)[0] for _, payload in rows] == [[1], [3], [4]]
        assert decoded(conn, rows[1][1])[1]["data"]["body"] == "x" * 9000
        first = conn.execute("SELECT pghub.consumer_position('u', 'kept', 'earliest')").fetchone()
        assert first == ("earliest",)
        conn.execute("SELECT pghub.ack('u', 'kept', %s)", [rows[-1][0]])
        assert conn.execute("SELECT * FROM pghub.tick()").fetchone() == (1, False)
        assert conn.execute("SELECT rotated FROM pghub.prune()").fetchone() is not None
        topics = conn.execute("SELECT topic, events FROM pghub.durable_topics()").fetchall()
        assert topics == [("kept", 3), ("ticked", 1)]
        lags = conn.execute("SELECT consumer, lag FROM pghub.durable_consumers()").fetchall()
        assert lags == [("o", 3), ("u", 0)]
        refused = [
            "SELECT pghub.make_durable('mine')",
            "SELECT pghub.make_transient('kept')",
            "SELECT pghub.make_durable('kept', '1 day')",
            "SELECT pghub.ack('o', 'kept', 'earliest')",
            "SELECT pghub.drop_consumer('o')",
            "INSERT INTO pghub.journal$0 VALUES ('1', 1, 1, 'n', 'e', NULL)",
            "UPDATE pghub.durable$topic SET wake = 'tick'",
            "TRUNCATE pghub.journal$1",
        ]
        for statement in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        # row-level security: the owner's consumer is not the user's to change
        for statement in (
            "UPDATE pghub.durable$consumer SET pos = 'earliest' WHERE consumer = 'o'",
            "DELETE FROM pghub.durable$consumer WHERE consumer = 'o'",
        ):
            assert conn.execute(statement).rowcount == 0
        assert conn.execute("SELECT pghub.drop_consumer('u')").fetchone() == (1,)
    with as_role(dsn, owner) as conn:
        assert conn.execute("SELECT pghub.make_transient('kept')").fetchone() == (True,)
        assert conn.execute("SELECT pghub.make_transient('kept')").fetchone() == (False,)
