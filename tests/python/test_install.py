"""The script route (pghub.install) against CREATE EXTENSION, on the real server.

Both routes must leave the same functions behind; the script route must be idempotent, atomic,
and must leave an extension install alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pghub import install as pghub_install
from pghub.install import InstallError, install, installed_version, prepare_script

REPO = Path(__file__).resolve().parents[2]
SQL_DIR = REPO / "sql"
INSTALL_ROUTE = os.environ.get("PGHUB_INSTALL", "extension")  # as tests/conftest.py reads it

# Everything about a function that a caller can see or depend on.
FUNCTIONS = """
SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_function_arguments(p.oid),
       pg_get_function_result(p.oid), p.prokind, p.provolatile, p.proisstrict, p.proparallel,
       p.prosecdef, p.proleakproof, p.proretset, p.procost, p.prorows, l.lanname,
       p.proconfig, p.prosrc, obj_description(p.oid, 'pg_proc'), p.proacl::text
FROM pg_proc AS p JOIN pg_language AS l ON p.prolang = l.oid
WHERE p.pronamespace = 'pghub'::regnamespace
ORDER BY 1, 2
"""
# Every object in the schema (functions, types, tables...) with its comment.
OBJECTS = """
SELECT pg_describe_object(d.classid, d.objid, d.objsubid),
       (SELECT c.description FROM pg_description AS c
        WHERE c.classoid = d.classid AND c.objoid = d.objid AND c.objsubid = d.objsubid)
FROM pg_depend AS d
WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = 'pghub'::regnamespace
    AND d.classid <> 'pg_extension'::regclass
ORDER BY 1
"""
SCHEMA = """
SELECT nspacl::text, obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = 'pghub'
"""


def catalog(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """What pghub put into a database, in a form two databases can be compared by."""
    with psycopg.connect(dsn) as conn:
        return {
            "functions": conn.execute(FUNCTIONS).fetchall(),
            "objects": conn.execute(OBJECTS).fetchall(),
            "schema": conn.execute(SCHEMA).fetchall(),
        }


def create_extension(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pghub")


def scratch_sql_dir(tmp_path: Path, extra: str) -> Path:
    """A copy of sql/ whose 0.3 script ends with ``extra``."""
    scratch = tmp_path / "sql"
    shutil.copytree(SQL_DIR, scratch)
    script = scratch / "pghub--0.3.sql"
    script.write_text(script.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return scratch


def test_template_uses_the_chosen_route(conn: psycopg.Connection[Any]) -> None:
    found = installed_version(conn)
    assert found == (INSTALL_ROUTE, pghub_install.default_version())


def test_packaged_script_is_the_repo_script_unchanged() -> None:
    shipped = pghub_install.sql_directory() / "pghub--0.3.sql"
    assert shipped.is_file()
    assert shipped.read_bytes() == (SQL_DIR / "pghub--0.3.sql").read_bytes()
    assert pghub_install.script_text() == (SQL_DIR / "pghub--0.3.sql").read_text(encoding="utf-8")
    control = (SQL_DIR / "pghub.control").read_text(encoding="utf-8")
    assert f"default_version = '{pghub_install.default_version()}'" in control


@pytest.mark.slow
def test_wheel_ships_the_script(tmp_path: Path) -> None:
    """A built wheel holds sql/ inside the package, and importlib.resources finds it there."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, source / name)
    if not (source / "README.md").exists():
        (source / "README.md").write_text("pghub\n", encoding="utf-8")
    shutil.copytree(REPO / "sql", source / "sql")
    shutil.copytree(
        REPO / "python" / "pghub",
        source / "python" / "pghub",
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), "."],
        cwd=source,
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("pghub-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        # against the copy built from: sql/ may change while the wheel builds
        for name in ("pghub--0.3.sql", "pghub.control"):
            assert archive.read(f"pghub/sql/{name}") == (source / "sql" / name).read_bytes()
        archive.extractall(tmp_path / "site")
    probe = (
        "import pathlib, pghub, pghub.install as i;"
        "print(pathlib.Path(pghub.__file__).parent);"
        "print(i.default_version(), len(i.script_text()))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split("\n")
    assert Path(shown[0]) == tmp_path / "site" / "pghub"
    script = (source / "sql" / "pghub--0.3.sql").read_text(encoding="utf-8")
    assert shown[1] == f"0.3 {len(script)}"


def test_both_routes_give_the_same_functions(empty_database: Callable[[], str]) -> None:
    by_extension, by_script = empty_database(), empty_database()
    with psycopg.connect(by_extension) as conn:
        server_copy = conn.execute(
            "SELECT pg_read_file(setting || '/extension/pghub--0.3.sql')"
            " FROM pg_config WHERE name = 'SHAREDIR'"
        ).fetchone()
    assert server_copy == (pghub_install.script_text(),), "sql/ changed since make install"
    create_extension(by_extension)
    result = install(by_script)
    assert (result.route, result.action, result.version) == ("script", "installed", "0.3")
    assert result.scripts == ("pghub--0.3.sql",)
    extension_catalog = catalog(by_extension)
    assert extension_catalog["functions"], "CREATE EXTENSION made no functions"
    assert catalog(by_script) == extension_catalog


def test_install_twice_changes_nothing(empty_database: Callable[[], str]) -> None:
    dsn = empty_database()
    first = install(dsn)
    before = catalog(dsn)
    again = install(dsn)
    assert (first.action, again.action) == ("installed", "refreshed")
    assert again.previous_version == again.version == "0.3"
    assert catalog(dsn) == before


def test_extension_install_is_left_alone(empty_database: Callable[[], str]) -> None:
    dsn = empty_database()
    create_extension(dsn)
    before = catalog(dsn)
    result = install(dsn)
    assert (result.route, result.action, result.version) == ("extension", "none", "0.3")
    assert "ALTER EXTENSION pghub UPDATE" in result.message
    assert catalog(dsn) == before


def test_failing_script_leaves_nothing_behind(
    empty_database: Callable[[], str], tmp_path: Path
) -> None:
    dsn = empty_database()
    broken = scratch_sql_dir(tmp_path, "\nSELECT pghub.no_such_function();\n")
    with pytest.raises(InstallError, match=r"pghub--0\.3\.sql failed: .*no_such_function") as err:
        install(dsn, sql_dir=broken)
    assert isinstance(err.value.__cause__, psycopg.errors.UndefinedFunction)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT to_regnamespace('pghub')").fetchone() == (None,)


def test_a_foreign_pghub_schema_is_not_touched(empty_database: Callable[[], str]) -> None:
    dsn = empty_database()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA pghub; CREATE TABLE pghub.mine (id int)")
        with pytest.raises(InstallError, match=r"schema pghub already exists and holds no pghub"):
            install(conn)
        assert conn.execute("SELECT to_regprocedure('pghub.version()')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM pghub.mine").fetchone() == (0,)


def test_an_empty_pghub_schema_is_refused(empty_database: Callable[[], str]) -> None:
    """Even one the installing role made itself: pghub installs only into a schema it made.

    (One made by another role, by both routes, is in test_security.py.)
    """
    dsn = empty_database()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA pghub")
        with pytest.raises(InstallError, match=r"^schema pghub already exists") as err:
            install(conn)
        assert isinstance(err.value.__cause__, psycopg.errors.DuplicateSchema)
        assert conn.execute("SELECT to_regprocedure('pghub.version()')").fetchone() == (None,)
        conn.execute("DROP SCHEMA pghub")
        assert install(conn).action == "installed"


def test_install_in_the_callers_transaction(empty_database: Callable[[], str]) -> None:
    dsn = empty_database()
    with psycopg.connect(dsn) as conn:
        conn.execute("SET search_path = public")
        conn.execute("SELECT 1")  # a transaction is now open: install() uses a savepoint
        assert install(conn).action == "installed"
        assert conn.execute("SELECT pghub.version()").fetchone() == ("0.3",)
        assert conn.execute("SHOW search_path").fetchone() == ("public",)
        conn.rollback()
        assert installed_version(conn) is None


def test_concurrent_installs_take_turns(empty_database: Callable[[], str]) -> None:
    dsn = empty_database()
    results: list[str] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            results.append(install(dsn).action)
        except BaseException as error:  # reported by the assertion below
            failures.append(error)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures
    assert sorted(results) == ["installed", "refreshed", "refreshed"]


def test_install_sql_runs_in_psql_and_the_raw_script_does_not(
    empty_database: Callable[[], str],
) -> None:
    dsn = empty_database()
    psql = [shutil.which("psql") or "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn]
    raw = subprocess.run(
        psql, input=pghub_install.script_text(), capture_output=True, text=True, timeout=60
    )
    assert raw.returncode == 0
    assert 'Use "CREATE EXTENSION pghub"' in raw.stdout
    with psycopg.connect(dsn) as conn:
        assert installed_version(conn) is None
    for _ in range(2):  # idempotent
        subprocess.run(
            psql,
            input=pghub_install.install_sql(),
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
    with psycopg.connect(dsn) as conn:
        assert installed_version(conn) == ("script", "0.3")


def test_uninstall(empty_database: Callable[[], str]) -> None:
    script_db, extension_db = empty_database(), empty_database()
    install(script_db)
    create_extension(extension_db)
    with psycopg.connect(script_db, autocommit=True) as conn:
        conn.execute("CREATE VIEW public.uses_pghub AS SELECT pghub.channel('Orders') AS channel")
        with pytest.raises(
            InstallError, match=r"in use by: rule _RETURN on view public\.uses_pghub"
        ):
            pghub_install.uninstall(conn)
        assert installed_version(conn) == ("script", "0.3")
        assert pghub_install.uninstall(conn, cascade=True) is True
        assert conn.execute("SELECT to_regclass('public.uses_pghub')").fetchone() == (None,)
        assert conn.execute("SELECT to_regnamespace('pghub')").fetchone() == (None,)
        assert pghub_install.uninstall(conn) is False
    with (
        psycopg.connect(extension_db) as conn,
        pytest.raises(InstallError, match="DROP EXTENSION"),
    ):
        pghub_install.uninstall(conn)


def test_prepare_script_does_what_create_extension_does() -> None:
    text = (
        '\\echo Use "CREATE EXTENSION pghub" to load this file. \\quit\n'
        "SET search_path = pg_catalog, pg_temp;\n"
        "GRANT USAGE ON SCHEMA pghub TO @extowner@;\n"
    )
    prepared = prepare_script(text, owner_ident='"Some Role"')
    assert prepared == (
        '\nSET search_path = pg_catalog, pg_temp;\nGRANT USAGE ON SCHEMA pghub TO "Some Role";\n'
    )
    with pytest.raises(InstallError, match="@extowner@"):
        prepare_script(text)
    # Under CREATE EXTENSION @extschema@ is pg_catalog (the control file's schema), not pghub.
    with pytest.raises(InstallError, match=r"@extschema@ \(pg_catalog under CREATE EXTENSION\)"):
        prepare_script("SET search_path = @extschema@;\n")
    with pytest.raises(InstallError, match=r"line 2: psql command '\\\\set'"):
        prepare_script("SELECT 1;\n\\set x 1\n")
    with pytest.raises(InstallError, match="another extension"):
        prepare_script("SELECT @extschema:plpgsql_check@.f();\n")


def test_config_dump_guard_lets_the_script_route_run(
    empty_database: Callable[[], str], tmp_path: Path
) -> None:
    """The documented guard for pg_extension_config_dump() runs on the script route."""
    guarded = scratch_sql_dir(
        tmp_path,
        """
CREATE TABLE IF NOT EXISTS pghub.settings (name text PRIMARY KEY);
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pghub') THEN
        PERFORM pg_catalog.pg_extension_config_dump('pghub.settings', '');
    END IF;
END
$$;
""",
    )
    dsn = empty_database()
    assert install(dsn, sql_dir=guarded).action == "installed"
    assert install(dsn, sql_dir=guarded).action == "refreshed"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pghub.settings").fetchone() == (0,)
