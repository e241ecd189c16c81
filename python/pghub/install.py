"""Install pghub over a connection, where the server's files are out of reach (the script route).

Managed servers do not let you copy ``pghub.control`` and ``pghub--0.3.sql`` into their
``share/extension`` directory, so ``CREATE EXTENSION pghub`` is not available there. This module
runs the extension's own script, exactly as shipped, over an ordinary connection instead:

- the ``\\echo ... \\quit`` guard line is dropped, as the server itself drops it under
  ``CREATE EXTENSION``; ``@extowner@`` is substituted as the server would;
- everything runs in one transaction under an advisory lock, so a failure leaves nothing behind
  and two installers cannot interleave, with ``search_path`` set to ``pg_catalog, pg_temp``;
- the version is read back from the definition of ``pghub.version()``, which every script
  defines (read, never called: the function might not be pghub's). That function is how a later
  version finds a script install: it then runs the same update scripts (``pghub--0.3--0.4.sql``)
  that ``ALTER EXTENSION pghub UPDATE`` would run.

The script creates schema ``pghub`` itself and refuses one that is not the installing role's own
earlier install (SQLSTATE 42P06, raised here as :class:`InstallError`): see docs/security.md.

A database where pghub came with ``CREATE EXTENSION`` is left alone: :func:`install` reports it and
does nothing (upgrade it with ``ALTER EXTENSION pghub UPDATE``). See docs/install.md.
"""

from __future__ import annotations

import re
import sys
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql

from .errors import PghubError

if sys.version_info >= (3, 11):
    from importlib.resources.abc import Traversable
else:  # Python 3.10 has it only here
    from importlib.abc import Traversable

EXTENSION = "pghub"
SCHEMA = "pghub"

# Any fixed number will do: it only has to be the same for every pghub installer.
_INSTALL_LOCK_KEY = 0x7067687562  # "pghub" in ASCII

_ECHO_LINE = re.compile(r"^\\echo.*$", re.MULTILINE)
_META_LINE = re.compile(r"^\s*\\\S+", re.MULTILINE)
_FULL_SCRIPT = re.compile(rf"^{EXTENSION}--([^-]+(?:-[^-]+)*)\.sql$")
_UPDATE_SCRIPT = re.compile(rf"^{EXTENSION}--([^-]+(?:-[^-]+)*)--([^-]+(?:-[^-]+)*)\.sql$")
_DEFAULT_VERSION = re.compile(r"^\s*default_version\s*=\s*'([^']*)'", re.MULTILINE)
# The body every script gives pghub.version(): SELECT '0.3'::text
_VERSION_BODY = re.compile(r"\s*SELECT\s+'([^'\\]+)'::(?:pg_catalog\.)?text\s*;?\s*")
# While pghub.install runs its own queries and the scripts: nothing but pg_catalog is searched
# (pg_temp last, for relations only), so no other role's function or operator can be resolved.
_SAFE_SEARCH_PATH = "pg_catalog, pg_temp"
# A script's refusal of an existing schema pghub (see the DO block at the top of the script).
_DUPLICATE_SCHEMA = "42P06"

Route = Literal["script", "extension"]
Action = Literal["installed", "upgraded", "refreshed", "none"]


class InstallError(PghubError):
    """pghub cannot be installed (or upgraded) into this database; the message says why."""


@dataclass(frozen=True)
class InstallResult:
    """What :func:`install` found and did."""

    route: Route
    """``script`` (installed by this module) or ``extension`` (``CREATE EXTENSION``)."""
    action: Action
    """``installed``, ``upgraded``, ``refreshed`` (same version run again) or ``none``."""
    version: str
    """The pghub version in the database now."""
    previous_version: str | None
    """The version found before, ``None`` if pghub was not there."""
    scripts: tuple[str, ...] = ()
    """The script files run, in order."""

    @property
    def message(self) -> str:
        """One line for a person: what happened."""
        if self.route == "extension":
            return (
                f"pghub {self.version} is installed as an extension (CREATE EXTENSION); "
                "nothing done. Upgrade it with ALTER EXTENSION pghub UPDATE."
            )
        if self.action == "installed":
            return f"pghub {self.version} installed by script ({', '.join(self.scripts)})"
        if self.action == "upgraded":
            return (
                f"pghub upgraded from {self.previous_version} to {self.version} by script "
                f"({', '.join(self.scripts)})"
            )
        if self.action == "refreshed":
            return f"pghub {self.version} was already installed by script; its script ran again"
        return f"pghub {self.version} was already installed by script; nothing to run"


def sql_directory() -> Traversable:
    """The directory of the extension's files, shipped inside the package (``pghub/sql``)."""
    return resources.files(__package__ or "pghub") / "sql"


def default_version(sql_dir: Traversable | Path | None = None) -> str:
    """The ``default_version`` of ``pghub.control``: the version this package installs."""
    control = (sql_dir or sql_directory()) / f"{EXTENSION}.control"
    found = _DEFAULT_VERSION.search(control.read_text(encoding="utf-8"))
    if found is None:
        raise InstallError(f"{control} has no default_version")
    return found.group(1)


def script_text(version: str | None = None, sql_dir: Traversable | Path | None = None) -> str:
    """The extension's install script for ``version`` (default: the packaged one), as shipped."""
    directory = sql_dir or sql_directory()
    script = directory / f"{EXTENSION}--{version or default_version(directory)}.sql"
    if not script.is_file():
        raise InstallError(f"no install script {script.name} in {directory}")
    return script.read_text(encoding="utf-8")


def prepare_script(text: str, *, owner_ident: str | None = None) -> str:
    """Make an extension script runnable outside ``CREATE EXTENSION``, as the server would.

    Drops ``\\echo`` lines (the server's own rule) and puts ``owner_ident`` (a role name, quoted
    as an identifier) in for ``@extowner@``. Any other psql meta-command is an error: the server
    could not run it either. So is ``@extschema@``: under ``CREATE EXTENSION`` it is
    ``pg_catalog`` (where the control file records the extension), not ``pghub``, so a script
    names schema ``pghub`` itself.
    """
    text = _ECHO_LINE.sub("", text)
    meta = _META_LINE.search(text)
    if meta is not None:
        line = text.count("\n", 0, meta.start()) + 1
        raise InstallError(f"line {line}: psql command {meta.group(0).strip()!r} in the script")
    if "@extschema:" in text:
        raise InstallError("the script names another extension's schema (@extschema:name@)")
    if "@extschema@" in text:
        raise InstallError(
            f"the script uses @extschema@ (pg_catalog under CREATE EXTENSION): name {SCHEMA}"
        )
    if "@extowner@" in text:
        if owner_ident is None:
            raise InstallError("the script uses @extowner@: it needs the installing role")
        text = text.replace("@extowner@", owner_ident)
    return text


def install_sql(version: str | None = None, sql_dir: Traversable | Path | None = None) -> str:
    """A self-contained SQL text that installs pghub when run by psql or any SQL client.

    It is the script route without Python: one transaction, the search path the server would
    set, the script as :func:`prepare_script` makes it. Unlike :func:`install` it does not look
    at the database first (re-running it is harmless: the script is idempotent, and refuses a
    schema pghub that is not the running role's own install).
    """
    chosen = version or default_version(sql_dir)
    body = prepare_script(script_text(chosen, sql_dir))
    return (
        f"-- pghub {chosen}: the extension script, runnable without CREATE EXTENSION\n"
        "BEGIN;\n"
        f"SELECT pg_catalog.pg_advisory_xact_lock({_INSTALL_LOCK_KEY});\n"
        f"SET LOCAL search_path = {_SAFE_SEARCH_PATH};\n"
        "SET LOCAL client_min_messages = warning;\n"
        f"{body.rstrip()}\n"
        "COMMIT;\n"
    )


def install(
    conn_or_dsn: psycopg.Connection[Any] | str,
    *,
    version: str | None = None,
    sql_dir: Traversable | Path | None = None,
) -> InstallResult:
    """Install pghub into the database by running its script over the connection.

    Idempotent: a database that already has this version gets the script once more (it only
    replaces functions), an older script install is upgraded through the update scripts, and a
    database with the extension from ``CREATE EXTENSION`` is reported and left alone.

    Given a DSN, opens and closes its own connection. Given a connection, runs in a transaction
    of its own (committed here) or, if one is open, in a savepoint of the caller's.

    Raises :class:`InstallError` when there is no way from what is installed to ``version``, when
    a schema ``pghub`` exists that is not this role's own earlier install (made by another role,
    even empty), or when the script fails (nothing is left behind then; the cause is chained).
    """
    directory = sql_dir or sql_directory()
    target = version or default_version(directory)
    if isinstance(conn_or_dsn, str):
        with psycopg.connect(conn_or_dsn) as conn:
            return _install(conn, target, directory)
    return _install(conn_or_dsn, target, directory)


def installed_version(conn: psycopg.Connection[Any]) -> tuple[Route, str] | None:
    """How and in which version pghub is in this database, or ``None`` if it is not.

    A script install is recognised by its ``pghub.version()``, whose definition is read, never
    run: whoever made a schema pghub could have put anything in a function of that name, and
    this may run as a superuser. Every name and operator here is schema-qualified for the same
    reason (the connection's search_path is the caller's).
    """
    row = conn.execute(
        "SELECT e.extversion FROM pg_catalog.pg_extension AS e"
        " WHERE e.extname OPERATOR(pg_catalog.=) %s::pg_catalog.name",
        [EXTENSION],
    ).fetchone()
    if row is not None:
        return "extension", str(row[0])
    row = conn.execute(
        "SELECT p.prosrc FROM pg_catalog.pg_proc AS p"
        " WHERE p.oid OPERATOR(pg_catalog.=) pg_catalog.to_regprocedure(%s::pg_catalog.text)"
        " AND p.prolang OPERATOR(pg_catalog.=) ("
        "   SELECT l.oid FROM pg_catalog.pg_language AS l"
        "   WHERE l.lanname OPERATOR(pg_catalog.=) 'sql'::pg_catalog.name)",
        [f"{SCHEMA}.version()"],
    ).fetchone()
    found = _VERSION_BODY.fullmatch(str(row[0])) if row is not None else None
    return ("script", found.group(1)) if found is not None else None


def uninstall(conn: psycopg.Connection[Any], *, cascade: bool = False) -> bool:
    """Remove a script install (drop schema ``pghub``); ``False`` if there was none.

    Without ``cascade`` it refuses while objects outside the schema use pghub's (a trigger on
    one of your tables, say: unpublish it first); with it, those go too. A ``CREATE EXTENSION``
    install is refused: use ``DROP EXTENSION pghub``.
    """
    with conn.transaction(), _safe_search_path(conn):
        _lock(conn)
        found = installed_version(conn)
        if found is None:
            return False
        if found[0] == "extension":
            raise InstallError("pghub is installed as an extension: use DROP EXTENSION pghub")
        users = [str(row[0]) for row in conn.execute(_OUTSIDE_USERS, [SCHEMA]).fetchall()]
        if users and not cascade:
            raise InstallError(f"pghub is still in use by: {'; '.join(users)}")
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(SCHEMA)))
    return True


# Objects outside the schema that depend on objects inside it (triggers, views, defaults...).
# Inside: the schema's objects and their parts (indexes, constraints, defaults, policies and the
# rules of pghub's own views depend on them automatically or internally).
_OUTSIDE_USERS = """
WITH RECURSIVE inside AS (
    SELECT d.classid, d.objid FROM pg_catalog.pg_depend AS d
    JOIN pg_catalog.pg_namespace AS n ON d.refobjid = n.oid
    WHERE d.refclassid = 'pg_catalog.pg_namespace'::regclass AND n.nspname = %s::name
    UNION
    SELECT d.classid, d.objid FROM pg_catalog.pg_depend AS d
    JOIN inside AS i ON d.refclassid = i.classid AND d.refobjid = i.objid
    WHERE d.deptype IN ('a', 'i')
)
SELECT DISTINCT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid)
FROM pg_catalog.pg_depend AS d
JOIN inside AS i ON d.refclassid = i.classid AND d.refobjid = i.objid
WHERE NOT EXISTS (SELECT FROM inside AS o WHERE o.classid = d.classid AND o.objid = d.objid)
    AND d.deptype IN ('n', 'a')
ORDER BY 1
"""  # run under _safe_search_path: the operators are pg_catalog's


def update_path(
    start: str, target: str, sql_dir: Traversable | Path | None = None
) -> list[str] | None:
    """The update scripts that lead from ``start`` to ``target`` (fewest steps), or ``None``.

    The same graph ``ALTER EXTENSION pghub UPDATE`` walks: one edge per ``pghub--A--B.sql``.
    """
    edges: dict[str, list[tuple[str, str]]] = {}
    for name in _script_names(sql_dir or sql_directory()):
        step = _UPDATE_SCRIPT.match(name)
        if step is not None:
            edges.setdefault(step.group(1), []).append((step.group(2), name))
    came_from: dict[str, tuple[str, str] | None] = {start: None}
    queue = deque([start])
    while queue:
        here = queue.popleft()
        if here == target:
            path: list[str] = []
            back = came_from[here]
            while back is not None:
                path.append(back[1])
                back = came_from[back[0]]
            return path[::-1]
        for there, name in sorted(edges.get(here, [])):
            if there not in came_from:
                came_from[there] = (here, name)
                queue.append(there)
    return None


def _install(
    conn: psycopg.Connection[Any], target: str, directory: Traversable | Path
) -> InstallResult:
    with conn.transaction(), _safe_search_path(conn):
        _lock(conn)
        found = installed_version(conn)
        if found is not None and found[0] == "extension":
            return InstallResult("extension", "none", found[1], found[1])
        previous = found[1] if found is not None else None
        scripts = _plan(previous, target, directory)
        owner = conn.execute("SELECT pg_catalog.quote_ident(CURRENT_USER)").fetchone()
        for name in scripts:
            text = prepare_script(
                (directory / name).read_text(encoding="utf-8"),
                owner_ident=str(owner[0]) if owner is not None else None,
            )
            try:
                conn.execute(text)
            except psycopg.Error as error:
                if error.sqlstate == _DUPLICATE_SCHEMA and error.diag.message_hint:
                    # The script's own refusal of a schema pghub: its words say it all (less
                    # the "pghub: " that marks them in the server's log).
                    said = (error.diag.message_primary or "").removeprefix("pghub: ")
                    raise InstallError(f"{said} ({error.diag.message_hint})") from error
                raise InstallError(f"{name} failed: {error}") from error
        now = installed_version(conn)
        if now is None or now[1] != target:
            got = "nothing" if now is None else now[1]
            raise InstallError(
                f"after {', '.join(scripts)} pghub.version() says {got}, not {target}"
            )
    if previous is None:
        action: Action = "installed"
    elif previous != target:
        action = "upgraded"
    else:
        action = "refreshed" if scripts else "none"
    return InstallResult("script", action, target, previous, tuple(scripts))


def _plan(previous: str | None, target: str, directory: Traversable | Path) -> list[str]:
    """The scripts to run: the full script for a fresh install or a re-run, else update steps."""
    names = set(_script_names(directory))
    full = f"{EXTENSION}--{target}.sql"
    if previous == target:
        # Run again to repair what may have been dropped by hand; with no full script for this
        # version (it was reached by updates) there is nothing to run.
        return [full] if full in names else []
    if previous is not None:
        steps = update_path(previous, target, directory)
        if steps is None:
            raise InstallError(
                f"pghub {previous} is installed and no update scripts lead to {target} "
                f"(looked for {EXTENSION}--{previous}--*.sql in {directory})"
            )
        return steps
    if full in names:
        return [full]
    # No full script for this version: install an older one and update, as CREATE EXTENSION does.
    for name in sorted(names):
        start = _FULL_SCRIPT.match(name)
        if start is None or _UPDATE_SCRIPT.match(name):
            continue
        steps = update_path(start.group(1), target, directory)
        if steps is not None:
            return [name, *steps]
    raise InstallError(f"no script installs pghub {target} (looked in {directory})")


def _script_names(directory: Traversable | Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir() if entry.name.endswith(".sql"))


def _lock(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "SELECT pg_catalog.pg_advisory_xact_lock(%s::pg_catalog.int8)", [_INSTALL_LOCK_KEY]
    )


@contextmanager
def _safe_search_path(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """The settings CREATE EXTENSION runs a script with (the safe search_path), restored after.

    The installer's own queries run under them too: with the caller's search_path, a role that
    made a schema named after the installing role could resolve an operator in them. Restored
    by hand rather than left to SET LOCAL: inside a caller's transaction (a savepoint here) they
    would otherwise last until the caller commits.
    """
    settings = {"search_path": _SAFE_SEARCH_PATH, "client_min_messages": "warning"}
    saved = {name: _current_setting(conn, name) for name in settings}
    for name, value in settings.items():
        conn.execute(
            "SELECT pg_catalog.set_config(%s::pg_catalog.text, %s::pg_catalog.text, true)",
            [name, value],
        )
    try:
        yield
    finally:
        if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
            for name, value in saved.items():
                conn.execute(
                    "SELECT pg_catalog.set_config(%s::pg_catalog.text, %s::pg_catalog.text, true)",
                    [name, value],
                )


def _current_setting(conn: psycopg.Connection[Any], name: str) -> str:
    row = conn.execute("SELECT pg_catalog.current_setting(%s::pg_catalog.text)", [name]).fetchone()
    return str(row[0]) if row is not None else ""


def _quote_ident(name: str) -> str:
    """Quote an identifier as quote_ident does (keywords aside: pghub's schema name is none)."""
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'
