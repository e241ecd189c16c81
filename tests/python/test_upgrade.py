"""The upgrade layout works: an update script ``pghub--0.3--0.4.sql`` is shipped by the Makefile's
wildcard, ``ALTER EXTENSION pghub UPDATE`` finds the path and runs it, and the script route
upgrades a script install through the same file.

The 0.4 here is a stand-in made in a scratch copy of sql/ (never in the repo's sql/): it replaces
``pghub.version()`` and adds one function, which is all an update script's shape needs. The
extension route is tried on a private server of the same major version as the test server, so
that the fake 0.4 reaches no other database.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pghub.install import InstallError, default_version, install, installed_version, update_path
from pgmatrix.server import SUPPORTED, PrivateServer

REPO = Path(__file__).resolve().parents[2]
CURRENT = default_version(REPO / "sql")
_major, _minor = CURRENT.split(".")
NEXT = f"{_major}.{int(_minor) + 1}"  # 0.3 -> 0.4: the stand-in's version
STEP = f"pghub--{CURRENT}--{NEXT}.sql"

UPDATE_SCRIPT = f"""\
-- pghub {CURRENT} -> {NEXT} (a stand-in for tests/python/test_upgrade.py)
\\echo Use "ALTER EXTENSION pghub UPDATE TO '{NEXT}'" to load this file. \\quit
SET LOCAL search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION pghub.version()
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT '{NEXT}'::text $$;

CREATE FUNCTION pghub.upgrade_probe()
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT 'added by {CURRENT}--{NEXT}'::text $$;

COMMENT ON FUNCTION pghub.upgrade_probe() IS 'Added by the update to {NEXT} (test stand-in).';
"""


@pytest.fixture
def next_version(tmp_path: Path) -> Path:
    """A scratch copy of the Makefile and sql/ with an update to NEXT, the default version."""
    scratch = tmp_path / "repo"
    (scratch / "sql").mkdir(parents=True)
    shutil.copy2(REPO / "Makefile", scratch / "Makefile")
    for source in (REPO / "sql").glob("pghub*"):
        shutil.copy2(source, scratch / "sql" / source.name)
    (scratch / "sql" / STEP).write_text(UPDATE_SCRIPT, encoding="utf-8")
    control = scratch / "sql" / "pghub.control"
    text = control.read_text(encoding="utf-8")
    control.write_text(text.replace(f"'{CURRENT}'", f"'{NEXT}'"), encoding="utf-8")
    return scratch


@pytest.fixture
def private_server(conn: psycopg.Connection[Any]) -> Iterator[PrivateServer]:
    """A private server of the test server's major version, with nothing installed yet."""
    row = conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()
    assert row is not None
    major = int(row[0])
    assert major in SUPPORTED, f"PostgreSQL {major} is not one of the supported {SUPPORTED}"
    # pytest's tmp_path is 0700 and the server runs as postgres: a directory of its own in /tmp
    server = PrivateServer(major, Path(tempfile.mkdtemp(prefix="pghub-upgrade-", dir="/tmp")))
    try:
        server.start()
        yield server
    finally:
        server.remove()


def test_update_path_is_the_one_file(next_version: Path) -> None:
    sql_dir = next_version / "sql"
    assert update_path(CURRENT, NEXT, sql_dir) == [STEP]
    assert update_path(NEXT, CURRENT, sql_dir) is None
    assert update_path(CURRENT, CURRENT, sql_dir) == []
    assert update_path(CURRENT, NEXT, REPO / "sql") is None  # the stand-in stayed in the scratch


def test_alter_extension_update_on_a_private_server(
    next_version: Path, private_server: PrivateServer
) -> None:
    private_server.make_install(next_version)
    assert (private_server.extension_dir / STEP).is_file(), "DATA wildcard"
    with psycopg.connect(private_server.dsn(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE upgraded")
        admin.execute("CREATE DATABASE installed_new")
    with psycopg.connect(private_server.dsn("upgraded"), autocommit=True) as conn:
        paths = conn.execute(
            "SELECT source, target, path FROM pg_extension_update_paths('pghub')"
            " WHERE path IS NOT NULL ORDER BY 1, 2"
        ).fetchall()
        assert (CURRENT, NEXT, f"{CURRENT}--{NEXT}") in paths
        conn.execute(sql.SQL("CREATE EXTENSION pghub VERSION {}").format(sql.Literal(CURRENT)))
        assert conn.execute("SELECT pghub.version()").fetchone() == (CURRENT,)
        conn.execute("ALTER EXTENSION pghub UPDATE")
        assert extension_state(conn) == (NEXT, NEXT, True)
        # what the old version had still works after the update
        assert conn.execute("SELECT pghub.encode('{1}', '{\"a\": 1}')").fetchone() == (
            'e1:{"a":1}',
        )
    with psycopg.connect(private_server.dsn("installed_new"), autocommit=True) as conn:
        # no full script for NEXT: CREATE EXTENSION installs CURRENT and follows the update
        conn.execute("CREATE EXTENSION pghub")
        assert extension_state(conn) == (NEXT, NEXT, True)


def extension_state(conn: psycopg.Connection[Any]) -> tuple[str, str, bool]:
    """(extversion, pghub.version(), whether the added function is a member of the extension)."""
    row = conn.execute(
        """
        SELECT e.extversion, pghub.version(), EXISTS (
            SELECT FROM pg_depend AS d
            WHERE d.classid = 'pg_proc'::regclass
                AND d.objid = 'pghub.upgrade_probe()'::regprocedure
                AND d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
                AND d.deptype = 'e')
        FROM pg_extension AS e WHERE e.extname = 'pghub'
        """
    ).fetchone()
    assert row is not None
    return str(row[0]), str(row[1]), bool(row[2])


def test_script_route_upgrades_through_the_update_script(
    next_version: Path, empty_database: Callable[[], str]
) -> None:
    sql_dir = next_version / "sql"
    dsn = empty_database()
    first = install(dsn, sql_dir=sql_dir, version=CURRENT)
    assert (first.action, first.version) == ("installed", CURRENT)
    assert first.scripts == (f"pghub--{CURRENT}.sql",)
    upgraded = install(dsn, sql_dir=sql_dir)
    assert (upgraded.action, upgraded.previous_version, upgraded.version) == (
        "upgraded",
        CURRENT,
        NEXT,
    )
    assert upgraded.scripts == (STEP,)
    again = install(dsn, sql_dir=sql_dir)
    assert (again.action, again.scripts) == ("none", ())
    with psycopg.connect(dsn) as conn:
        assert installed_version(conn) == ("script", NEXT)
        probe = conn.execute("SELECT pghub.upgrade_probe()").fetchone()
        assert probe == (f"added by {CURRENT}--{NEXT}",)
    with pytest.raises(InstallError, match=f"no update scripts lead to {CURRENT}"):
        install(dsn, sql_dir=sql_dir, version=CURRENT)


def test_script_route_installs_a_version_reached_by_updates(
    next_version: Path, empty_database: Callable[[], str]
) -> None:
    dsn = empty_database()
    result = install(dsn, sql_dir=next_version / "sql")
    assert (result.action, result.version) == ("installed", NEXT)
    assert result.scripts == (f"pghub--{CURRENT}.sql", STEP)
