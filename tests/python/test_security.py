"""Attacks on pghub by a second role, on the real server (docs/security.md).

Each test has an *attacker*: a LOGIN role with CREATE on the test database and nothing else,
which is what a trusted extension's installer needs. Its planted code records that it ran (a row
in a table that anyone may insert into) and, when it finds itself running as a superuser, makes
the attacker a superuser. Every test ends by checking that neither happened, whichever role
(an ordinary role or a superuser) then used pghub.

- the overload attack: the role that ran CREATE EXTENSION adds to schema pghub a function that
  pghub's own calls would prefer (``key_columns(oid)`` where pghub passes an ``oid`` to its
  ``key_columns(regclass, text[])``);
- the planted schema: a schema ``pghub`` made beforehand, even empty, by either install route
  (``CREATE EXTENSION``, ``pghub.install.install``, ``pghub install``); and one holding a
  ``pghub.version()`` that pghub's installer must never run;
- the ``"$user"`` schema: a schema named after the role that writes to a published table, with
  functions and operators that pghub's trigger code would resolve through the default search
  path ``"$user", public``, for row and statement triggers, fired by an ordinary role and by a
  superuser;
- durable topics: a role with nothing but PUBLIC's rights writes durable events and reads them,
  but cannot make a topic durable, change another role's topic or consumer, write the journal or
  plant a topic's view; the four SECURITY DEFINER functions do their one job for it and nothing
  more; and the durable paths (triggers, notify, read, tick, prune) never resolve an object of
  a schema named after their caller; pghub.notify_encoded (what the Python hub and sql_notify
  send with) journals nothing that pghub.encode would not write, whoever calls it.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pghub import Hub, decode_payload
from pghub.install import InstallError, install, installed_version

WAIT_SECONDS = 5.0  # every wait for an event is bounded

_role_numbers = itertools.count()


class Scene:
    """A fresh database with an attacker, an ordinary role and the superuser of the tests."""

    def __init__(self, admin_dsn: str, attacker: str, victim: str) -> None:
        self.dsn = admin_dsn
        self.attacker = attacker
        self.victim = victim
        self.superuser = str(conninfo_to_dict(admin_dsn)["user"])

    def connect(self, role: str | None = None) -> psycopg.Connection[Any]:
        """An autocommit session as ``role`` (default: the superuser), default search_path."""
        dsn = self.dsn if role is None else make_conninfo(self.dsn, user=role)
        return psycopg.connect(dsn, autocommit=True)

    def marks(self) -> list[tuple[str, str]]:
        """What the attacker's code recorded: (the role it ran as, what ran)."""
        with self.connect() as conn:
            rows = conn.execute("SELECT ran_as, what FROM attacker_space.marker ORDER BY 1, 2")
            return [(str(r[0]), str(r[1])) for r in rows.fetchall()]

    def attacker_is_superuser(self) -> bool:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT rolsuper FROM pg_catalog.pg_roles"
                " WHERE rolname OPERATOR(pg_catalog.=) %s::pg_catalog.name",
                [self.attacker],
            ).fetchone()
            assert row is not None
            return bool(row[0])

    def assert_nothing_gained(self) -> None:
        assert self.marks() == [], "the attacker's code ran"
        assert not self.attacker_is_superuser(), "the attacker became a superuser"


@pytest.fixture
def scene(server_dsn: str, empty_database: Callable[[], str]) -> Iterator[Scene]:
    """A new database on which ``attacker`` has CREATE; ``victim`` has only PUBLIC's rights.

    The attacker has made ``attacker_space.marker``, which any role may insert into. The
    database is dropped (by ``empty_database``) before the roles are.
    """
    number = next(_role_numbers)
    attacker = f"pghub_attacker_{os.getpid()}_{number}"
    victim = f"pghub_victim_{os.getpid()}_{number}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        for role in (attacker, victim):
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        dsn = empty_database()
        dbname = str(conninfo_to_dict(dsn)["dbname"])
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                    sql.Identifier(dbname), sql.Identifier(attacker)
                )
            )
        the_scene = Scene(dsn, attacker, victim)
        with the_scene.connect(attacker) as conn:
            conn.execute(
                "CREATE SCHEMA attacker_space;"
                " GRANT USAGE ON SCHEMA attacker_space TO PUBLIC;"
                " CREATE TABLE attacker_space.marker (ran_as text, what text);"
                " GRANT INSERT ON attacker_space.marker TO PUBLIC"
            )
        yield the_scene
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            for role in (attacker, victim):
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def attack_body(attacker: str, what: str, result: str) -> str:
    """A PL/pgSQL body that records ``what`` ran, escalates when it can, returns ``result``.

    Every name in it is qualified: it runs in its victim's search_path.
    """
    escalate = f"ALTER ROLE {_ident(attacker)} SUPERUSER"
    return (
        "BEGIN\n"
        "    INSERT INTO attacker_space.marker VALUES (CURRENT_USER, "
        f"{_literal(what)});\n"
        "    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r\n"
        "        WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER) THEN\n"
        f"        EXECUTE {_literal(escalate)};\n"
        "    END IF;\n"
        f"    RETURN {result};\n"
        "END"
    )


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# ==== The overload attack ====


def test_the_installing_role_cannot_plant_an_overload(scene: Scene) -> None:
    """CREATE EXTENSION by a non-superuser leaves schema pghub to the bootstrap superuser.

    Before: the installing role owned schema pghub and could add overloads that pghub's own
    calls prefer, since both triggers pass ``TG_RELID`` (an ``oid``) to ``key_columns(regclass,
    text[])``: ``key_columns(oid, text[])`` for the statement trigger, ``key_columns(oid)`` for a
    row trigger written by hand without key columns. They ran as whoever wrote to the table.
    """
    overloads = {
        "pghub.key_columns(tbl oid, columns text[])": "pghub.key_columns(oid, text[])",
        "pghub.key_columns(tbl oid)": "pghub.key_columns(oid)",
    }
    refused: list[str] = []
    with scene.connect(scene.attacker) as conn:
        conn.execute("CREATE EXTENSION pghub")
        owner = conn.execute(
            "SELECT nspowner::regrole::text, (SELECT rolsuper FROM pg_roles WHERE oid = nspowner)"
            " FROM pg_namespace WHERE nspname = 'pghub'"
        ).fetchone()
        for signature, what in overloads.items():
            body = attack_body(scene.attacker, what, "ARRAY['id']::name[]")
            try:
                conn.execute(
                    f"CREATE FUNCTION {signature} RETURNS name[] LANGUAGE plpgsql"
                    f" AS {_literal(body)}"
                )
            except psycopg.errors.InsufficientPrivilege:
                refused.append(what)
    # A table published per statement, plus a row trigger by hand (primary key by default).
    for role in (scene.victim, None):
        with scene.connect(role) as conn:
            conn.execute(
                "CREATE TEMPORARY TABLE t (id bigint PRIMARY KEY);"
                " SELECT pghub.publish_table('pg_temp.t');"
                " CREATE TRIGGER by_hand AFTER INSERT ON t FOR EACH ROW"
                " EXECUTE FUNCTION pghub.row_trigger('t');"
                " INSERT INTO t VALUES (1)"
            )
    scene.assert_nothing_gained()
    assert owner is not None
    assert owner[0] != scene.attacker
    assert owner[1], f"schema pghub is owned by {owner[0]}, not by a superuser"
    assert refused == list(overloads.values()), "the installing role could add to schema pghub"


# ==== The planted schema ====


def plant_empty_schema(scene: Scene) -> None:
    with scene.connect(scene.attacker) as conn:
        conn.execute("CREATE SCHEMA pghub; GRANT USAGE, CREATE ON SCHEMA pghub TO PUBLIC")


def assert_not_installed(scene: Scene) -> None:
    """Nothing of pghub went into the attacker's schema; it is still the attacker's."""
    with scene.connect() as conn:
        row = conn.execute(
            "SELECT nspowner::regrole::text,"
            " (SELECT count(*) FROM pg_proc WHERE pronamespace = n.oid),"
            " (SELECT count(*) FROM pg_extension WHERE extname = 'pghub')"
            " FROM pg_namespace AS n WHERE nspname = 'pghub'"
        ).fetchone()
    assert row == (scene.attacker, 0, 0)


@pytest.mark.parametrize("installer", ["ordinary", "superuser"])
def test_create_extension_refuses_a_schema_made_beforehand(scene: Scene, installer: str) -> None:
    plant_empty_schema(scene)
    role = None
    if installer == "ordinary":  # another role with CREATE on the database
        role = scene.victim
        with scene.connect() as admin:
            admin.execute(
                sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                    sql.Identifier(str(conninfo_to_dict(scene.dsn)["dbname"])),
                    sql.Identifier(role),
                )
            )
    with scene.connect(role) as conn, pytest.raises(psycopg.errors.DuplicateSchema) as refused:
        conn.execute("CREATE EXTENSION pghub")
    message = refused.value.diag.message_primary or ""
    assert message.startswith("pghub: schema pghub already exists (owner "), message
    assert scene.attacker in message
    assert refused.value.diag.message_hint
    assert_not_installed(scene)
    scene.assert_nothing_gained()


def test_the_script_route_refuses_a_schema_made_beforehand(scene: Scene) -> None:
    plant_empty_schema(scene)
    expected = r"^schema pghub already exists"
    with scene.connect() as conn, pytest.raises(InstallError, match=expected) as refused:
        install(conn)
    assert f"belongs to role {scene.attacker}" in str(refused.value)
    assert isinstance(refused.value.__cause__, psycopg.errors.DuplicateSchema)
    assert_not_installed(scene)


def test_pghub_install_refuses_a_schema_made_beforehand(scene: Scene) -> None:
    plant_empty_schema(scene)
    done = subprocess.run(
        [sys.executable, "-m", "pghub", "--dsn", scene.dsn, "install"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done
    assert "schema pghub already exists" in done.stderr
    assert "Traceback" not in done.stderr
    assert_not_installed(scene)


def test_a_planted_version_function_is_never_run(scene: Scene) -> None:
    """pghub.install reads pghub.version(), it does not call it: a superuser runs the installer.

    Before: ``installed_version()`` (used by ``install``, ``pghub install --check`` and
    ``pghub doctor``) called the attacker's ``pghub.version()`` as the installing role.
    """
    with scene.connect(scene.attacker) as conn:
        conn.execute(
            "CREATE SCHEMA pghub; GRANT USAGE ON SCHEMA pghub TO PUBLIC;"
            " CREATE FUNCTION pghub.version() RETURNS text LANGUAGE plpgsql AS "
            + _literal(attack_body(scene.attacker, "pghub.version()", "'0.3'::text"))
        )
    with scene.connect() as conn:
        assert installed_version(conn) is None
        with pytest.raises(InstallError, match=f"belongs to role {scene.attacker}"):
            install(conn)
    for command in (["install", "--check"], ["install"], ["doctor"]):
        subprocess.run(
            [sys.executable, "-m", "pghub", "--dsn", scene.dsn, *command],
            capture_output=True,
            timeout=60,
            check=False,
        )
    scene.assert_nothing_gained()


# ==== The "$user" schema ====

# Functions and operators pghub's trigger code used to resolve through the caller's search
# path, each with argument types that match pghub's call more closely than pg_catalog's own:
# (kind, name, argument types, result type, the pg_catalog expression it returns).
USER_SCHEMA_PLANTS = [
    ("operator", "->>", ("jsonb", "name"), "text", "a OPERATOR(pg_catalog.->>) b::text"),
    ("operator", "?", ("jsonb", "name"), "boolean", "a OPERATOR(pg_catalog.?) b::text"),
    ("operator", "=", ("name", "text"), "boolean", "a OPERATOR(pg_catalog.=) b::name"),
    ("function", "quote_ident", ("name",), "text", "pg_catalog.quote_ident(a::text)"),
    ("function", "format", ("text", "name", "name"), "text", "pg_catalog.format(a, b, c)"),
    ("function", "format", ("text", "name", "bigint"), "text", "pg_catalog.format(a, b, c)"),
    ("function", "format", ("text", "text"), "text", "pg_catalog.format(a, b)"),
    ("function", "lower", ("text",), "text", "pg_catalog.lower(a)"),
    (
        "function",
        "array_to_string",
        ("bigint[]", "text"),
        "text",
        "pg_catalog.array_to_string(a, b)",
    ),
    ("function", "to_jsonb", ("bigint[]",), "jsonb", "pg_catalog.to_jsonb(a)"),
    # durable topics: closer matches than pg_catalog's for what their code passes
    ("function", "format", ("text", "text", "integer"), "text", "pg_catalog.format(a, b, c)"),
    ("function", "to_regclass", ("name",), "regclass", "pg_catalog.to_regclass(a::text)"),
    ("operator", "||", ("text", "xid8"), "text", "a OPERATOR(pg_catalog.||) b::text"),
    ("operator", "%", ("bigint", "integer"), "bigint", "a OPERATOR(pg_catalog.%) b::bigint"),
    ("operator", "<=", ("timestamptz", "timestamp"), "boolean", "a OPERATOR(pg_catalog.<=) b"),
]


def plant_in_user_schema(scene: Scene, schema: str) -> None:
    """As the attacker: a schema named ``schema`` (a role's name), its plants usable by all."""
    statements = [
        f"CREATE SCHEMA {_ident(schema)}",
        f"GRANT USAGE ON SCHEMA {_ident(schema)} TO PUBLIC",
    ]
    for number, (kind, name, args, result, expression) in enumerate(USER_SCHEMA_PLANTS):
        params = ", ".join(f"{p} {t}" for p, t in zip("abc", args, strict=False))
        what = f"{name}({', '.join(args)})"
        function = name if kind == "function" else f"op{number}"
        body = attack_body(scene.attacker, what, expression)
        statements.append(
            f"CREATE FUNCTION {_ident(schema)}.{_ident(function)}({params}) RETURNS {result}"
            f" LANGUAGE plpgsql AS {_literal(body)}"
        )
        if kind == "operator":
            statements.append(
                f"CREATE OPERATOR {_ident(schema)}.{name} (LEFTARG = {args[0]},"
                f" RIGHTARG = {args[1]}, FUNCTION = {_ident(schema)}.{function})"
            )
    with scene.connect(scene.attacker) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.mark.parametrize("level", ["row", "statement"])
@pytest.mark.parametrize("writer", ["ordinary", "superuser"])
def test_a_schema_named_after_the_writer_is_not_used(scene: Scene, level: str, writer: str) -> None:
    with scene.connect() as admin:
        admin.execute("CREATE EXTENSION pghub")
        admin.execute(
            sql.SQL(
                "CREATE SCHEMA tables AUTHORIZATION {}; GRANT USAGE ON SCHEMA tables TO PUBLIC"
            ).format(sql.Identifier(scene.victim))
        )
    with scene.connect(scene.victim) as conn:
        conn.execute(
            "CREATE TABLE tables.t (id bigint PRIMARY KEY, note text);"
            " GRANT ALL ON tables.t TO PUBLIC"
        )
        data = ", with_data => true" if level == "row" else ""
        conn.execute(f"SELECT pghub.publish_table('tables.t', level => '{level}'{data})")
    role = scene.victim if writer == "ordinary" else None
    plant_in_user_schema(scene, scene.victim if role else scene.superuser)
    with scene.connect(role) as conn, scene.connect(role) as listener:
        path = conn.execute("SELECT current_schemas(false)").fetchone()
        assert path is not None
        assert path[0][0] == (role or scene.superuser), "the path starts with the planted schema"
        listener.execute("LISTEN t")
        conn.execute("INSERT INTO tables.t VALUES (1, 'a'), (2, 'b')")
        conn.execute("UPDATE tables.t SET note = 'c'")
        conn.execute("UPDATE tables.t SET id = id + 10")
        conn.execute("DELETE FROM tables.t")
        conn.execute("TRUNCATE tables.t")
        expected = 2 + 2 + 2 + 2 + 1 if level == "row" else 5
        got = list(listener.notifies(timeout=WAIT_SECONDS, stop_after=expected))
    scene.assert_nothing_gained()
    ops = [decode_payload(n.payload)[1]["op"] for n in got]
    assert len(ops) == expected, ops
    assert ops.count("tru") == 1


# ==== Durable topics ====


def test_a_role_without_grants_writes_and_reads_durable_events_and_nothing_more(
    scene: Scene,
) -> None:
    """Any role may send events on a durable topic and read them, as with LISTEN/NOTIFY; making
    topics durable is the installing role's (and whom it grants), a topic and a named consumer
    belong to the role that made them, and the journal is written only through pghub."""
    with scene.connect() as admin:
        admin.execute("CREATE EXTENSION pghub")
        admin.execute("SELECT pghub.make_durable('orders', '1 day')")
        admin.execute("SELECT pghub.consumer_position('audit', 'orders', 'earliest')")
    with scene.connect(scene.attacker) as conn:
        conn.execute("""SELECT pghub.notify('orders', '{1}', '{"by": "attacker"}')""")
        conn.execute("SELECT pghub._journal('ORDERS', '{2}', NULL)")  # what notify would do
        read = conn.execute("SELECT payload FROM pghub.read('orders', 'earliest')").fetchall()
        assert read == [('e1:{"by":"attacker"}',), ("e2",)]
        refused = [
            "SELECT pghub.make_durable('payments')",
            "SELECT pghub.make_durable('orders', wake => 'tick')",
            "SELECT pghub.make_transient('orders')",
            "SELECT pghub.ack('audit', 'orders', pghub.current_position())",
            "SELECT pghub.drop_consumer('audit')",
            "INSERT INTO pghub.journal$0 (txid, id, topic, announce, payload)"
            " VALUES (pg_current_xact_id(), 0, 1, 'n', 'e')",
            "INSERT INTO pghub.durable$topic (channel, retain, wake) VALUES ('x', '1 day', 'tick')",
            "UPDATE pghub.durable$topic SET wake = 'tick'",
            "DELETE FROM pghub.journal$gap",
            "TRUNCATE pghub.journal$0",
            "UPDATE pghub.journal$tick SET pos = pghub.current_position()",
            "CREATE VIEW pghub.payments AS SELECT 1 AS one",  # a planted topic view
            "SELECT * FROM pghub.journal$tick FOR UPDATE",
        ]
        for statement in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        # Row-level security hides the admin's consumer from the attacker's writes.
        for statement in (
            "UPDATE pghub.durable$consumer SET pos = pghub.current_position()",
            "DELETE FROM pghub.durable$consumer",
        ):
            assert conn.execute(statement).rowcount == 0
        # The SECURITY DEFINER functions do their one job and no other.
        conn.execute("SELECT pghub._sync_marker('payments')")  # not durable: no view
        for bad in ('a"b', "journal$0", "journal$all", ""):
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                conn.execute("SELECT pghub._sync_marker(%s)", [bad])
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                conn.execute("SELECT pghub._journal(%s, NULL, NULL)", [bad])
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            conn.execute(
                "SELECT pghub._journal('orders', NULL, to_jsonb(repeat('y', 9000)),"
                " to_jsonb(repeat('x', 9000)))"
            )
        conn.execute("SELECT * FROM pghub.tick()")
        conn.execute("SELECT * FROM pghub.prune('0')")
    with scene.connect() as admin:
        state = admin.execute(
            "SELECT d.wake, d.retain::text, d.owner_role::text, c.pos"
            " FROM pghub.durable$topic AS d JOIN pghub.durable$consumer AS c ON c.topic = d.id"
        ).fetchall()
        assert state == [("commit", "1 day", scene.superuser, "earliest")]
        marker = admin.execute("SELECT to_regclass('pghub.payments')").fetchone()
        assert marker == (None,)
        events = admin.execute("SELECT count(*) FROM pghub.orders").fetchone()
        assert events == (2,)
    scene.assert_nothing_gained()


def test_the_installing_role_grants_durability_and_topics_belong_to_their_makers(
    scene: Scene,
) -> None:
    """A non-superuser that ran CREATE EXTENSION may make topics durable and grant that on; the
    role it grants it to cannot change the installing role's topics."""
    with scene.connect(scene.attacker) as installer:
        installer.execute("CREATE EXTENSION pghub")
        assert installer.execute("SELECT pghub.make_durable('mine')").fetchone() == ("mine",)
        installer.execute(
            sql.SQL("GRANT INSERT, UPDATE, DELETE ON pghub.durable$topic TO {}").format(
                sql.Identifier(scene.victim)
            )
        )
    with scene.connect(scene.victim) as conn:
        assert conn.execute("SELECT pghub.make_durable('theirs')").fetchone() == ("theirs",)
        for statement in (
            "SELECT pghub.make_durable('mine', '1 hour')",
            "SELECT pghub.make_transient('mine')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="made durable by"):
                conn.execute(statement)
        assert conn.execute("UPDATE pghub.durable$topic SET wake = 'tick'").rowcount == 1
    with scene.connect() as admin:
        owners = admin.execute(
            "SELECT channel, wake, owner_role::text FROM pghub.durable$topic ORDER BY 1"
        ).fetchall()
    assert owners == [("mine", "commit", scene.attacker), ("theirs", "tick", scene.victim)]
    scene.assert_nothing_gained()


@pytest.mark.parametrize("writer", ["ordinary", "superuser"])
def test_durable_paths_use_no_object_of_a_schema_named_after_the_caller(
    scene: Scene, writer: str
) -> None:
    with scene.connect() as admin:
        admin.execute("CREATE EXTENSION pghub")
        admin.execute("SELECT pghub.make_durable('kept', '1 day')")
        admin.execute("SELECT pghub.make_durable('ticked', wake => 'tick')")
        admin.execute(
            sql.SQL(
                "CREATE SCHEMA tables AUTHORIZATION {}; GRANT USAGE ON SCHEMA tables TO PUBLIC"
            ).format(sql.Identifier(scene.victim))
        )
    with scene.connect(scene.victim) as conn:
        conn.execute(
            "CREATE TABLE tables.r (id bigint PRIMARY KEY, note text);"
            " CREATE TABLE tables.s (id bigint PRIMARY KEY);"
            " GRANT ALL ON tables.r, tables.s TO PUBLIC;"
            " SELECT pghub.publish_table('tables.r', 'kept', 'row', NULL, true);"
            " SELECT pghub.publish_table('tables.s', 'ticked')"
        )
    role = scene.victim if writer == "ordinary" else None
    plant_in_user_schema(scene, scene.victim if role else scene.superuser)
    with scene.connect(role) as conn:
        path = conn.execute("SELECT current_schemas(false)").fetchone()
        assert path is not None
        assert path[0][0] == (role or scene.superuser), "the path starts with the planted schema"
        if role is None:  # only a role the installer granted may make topics durable
            conn.execute("SELECT pghub.make_durable('other', '2 days', 'tick')")
        conn.execute("""SELECT pghub.notify('kept', '{1}', '{"a": 1}')""")
        conn.execute("SELECT pghub.notify('ticked', '{2}')")
        # What the Python hub and sql_notify send with, on durable and plain topics.
        conn.execute(
            "SELECT pghub.notify_encoded(ARRAY['kept', 'plain', 'ticked'], ARRAY['e7', 'e8', 'e9'])"
        )
        conn.execute("INSERT INTO tables.r VALUES (1, 'a'), (2, repeat('b', 9000))")
        conn.execute("INSERT INTO tables.s VALUES (1), (2)")
        position = conn.execute("SELECT pghub.consumer_position('c', 'kept', 'earliest')")
        start = position.fetchone()
        assert start is not None
        rows = conn.execute("SELECT pos, payload FROM pghub.read('kept', %s, 2)", start).fetchall()
        assert len(rows) == 2
        conn.execute("SELECT pghub.ack('c', 'kept', %s)", [rows[-1][0]])
        assert conn.execute("SELECT events FROM pghub.tick()").fetchone() == (3,)
        conn.execute("SELECT * FROM pghub.prune()")
        conn.execute("SELECT * FROM pghub.durable_topics()")
        conn.execute("SELECT * FROM pghub.durable_consumers()")
        conn.execute("SELECT pghub.drop_consumer('c')")
        conn.execute("SELECT pghub._sync_marker('kept')")  # SECURITY DEFINER, called directly
        if role is None:
            conn.execute("SELECT pghub.make_transient('other')")
    scene.assert_nothing_gained()


def test_no_role_journals_a_payload_that_pghub_encode_would_not_write(scene: Scene) -> None:
    """pghub.notify_encoded takes payloads encoded by the client (the Python hub, sql_notify).
    A role with nothing but PUBLIC's rights, calling it (or its helpers) directly, cannot get a
    malformed payload into the journal: each is decoded and encoded again by pghub, a payload
    pghub.decode refuses is refused with the whole statement, and a plain topic still refuses
    what does not fit in a notification. The hub, running as that role, journals as SQL does."""
    with scene.connect() as admin:
        admin.execute("CREATE EXTENSION pghub")
        admin.execute("SELECT pghub.make_durable('orders', '1 day')")
    refused = [
        ("x", psycopg.errors.InvalidTextRepresentation),
        ("e01", psycopg.errors.InvalidTextRepresentation),
        ("e1,", psycopg.errors.InvalidTextRepresentation),
        ("e9223372036854775808", psycopg.errors.InvalidTextRepresentation),
        ('e1:{"a":', psycopg.errors.InvalidTextRepresentation),
        ("e1:1e1073741823", psycopg.errors.InvalidTextRepresentation),
        ('e1:"\\u0000"', psycopg.errors.InvalidTextRepresentation),
        (None, psycopg.errors.NullValueNotAllowed),
    ]
    with scene.connect(scene.attacker) as conn:
        for payload, error in refused:
            with pytest.raises(error):  # the good event before it goes with the statement
                conn.execute(
                    "SELECT pghub.notify_encoded(ARRAY['orders', 'orders'], ARRAY['e5', %s])",
                    [payload],
                )
            with pytest.raises(error):
                conn.execute("SELECT pghub._journal_encoded('orders', %s)", [payload])
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            conn.execute(
                "SELECT pghub.notify_encoded(ARRAY['plain'], ARRAY['e1:\"' || repeat('x', 8000)"
                " || '\"'])"
            )
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("SELECT pghub.notify_encoded(ARRAY['a b'], ARRAY['e1'])")
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("SELECT pghub.notify_encoded(ARRAY['orders'], ARRAY['e1', 'e2'])")
        # Whitespace and unsorted members decode: journaled as pghub.encode writes them.
        conn.execute(
            "SELECT pghub.notify_encoded(ARRAY['Orders'], ARRAY[%s])", ['e1:{"b": 1,  "a":"$"}']
        )
        big = "e2:" + '"' + "y" * 9000 + '"'
        conn.execute("SELECT pghub.notify_encoded(ARRAY['orders'], ARRAY[%s])", [big])
    attacker_dsn = make_conninfo(scene.dsn, user=scene.attacker)
    with Hub(attacker_dsn, tick_interval=None, prune_interval=None) as hub:
        assert hub.notify("orders", [3], {"by": "hub"}).result(WAIT_SECONDS) is True
        assert hub.notify("orders", [4], "z" * 9000).result(WAIT_SECONDS) is True
        assert hub.notify("plain", [5], "z" * 9000).result(WAIT_SECONDS) is False
    with scene.connect() as admin:
        journaled = [r[0] for r in admin.execute("SELECT payload FROM pghub.orders ORDER BY id")]
    assert journaled == [
        'e1:{"a":"\\u0024","b":1}',
        big,
        'e3:{"by":"hub"}',
        'e4:"' + "z" * 9000 + '"',
    ]
    for payload in journaled:
        decode_payload(payload)
    scene.assert_nothing_gained()
