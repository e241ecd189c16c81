"""plpgsql_check over every PL/pgSQL function of pghub: static checks of the bodies.

sqlfluff does not look inside ``$$ ... $$``; plpgsql_check does (misspelt columns, wrong types,
unused variables, unreachable code, SQL injection in EXECUTE). Every finding fails the test,
except a reviewed one listed in ``ACCEPTED`` with the reason. Findings are matched by function,
message and the identifier they point at, not by line, so an edit elsewhere keeps them matched
while a new finding of the same kind still fails.

plpgsql_check is Debian's ``postgresql-15-plpgsql-check`` (``.ci/run`` installs it); the private
servers of ``make test-matrix`` do not have it, so there the test is skipped.
"""

from __future__ import annotations

import os
import re
from typing import Any, NamedTuple

import psycopg
import pytest

# Levels plpgsql_check reports: error, warning, warning extra, performance, security.
CHECK = """
SELECT p.proname, r.level, r.lineno, r.message, r.detail, r.query, r.position
FROM pg_proc AS p
JOIN pg_language AS l ON p.prolang = l.oid
CROSS JOIN LATERAL plpgsql_check_function_tb(
    p.oid,
    relid => CASE WHEN p.prorettype = 'trigger'::regtype THEN 'pghub_check_t'::regclass ELSE 0 END,
    fatal_errors => false,
    other_warnings => true,
    extra_warnings => true,
    performance_warnings => true,
    security_warnings => true,
    compatibility_warnings => true,
    -- the transition tables publish_table declares for statement triggers
    oldtable => CASE WHEN p.prorettype = 'trigger'::regtype THEN 'pghub_old' END,
    newtable => CASE WHEN p.prorettype = 'trigger'::regtype THEN 'pghub_new' END
) AS r
WHERE p.pronamespace = 'pghub'::regnamespace AND l.lanname = 'plpgsql'
ORDER BY p.proname, r.lineno
"""


class Finding(NamedTuple):
    function: str
    level: str
    line: int | None
    message: str
    detail: str | None
    subject: str  # the identifier at the reported position in the query, if any

    def __str__(self) -> str:
        where = f"{self.function} line {self.line}"
        return f"{where}: {self.level}: {self.message} [{self.subject}] {self.detail or ''}"


# (function, message, subject) -> why it is fine. Reviewed by hand; keep each reason honest.
ACCEPTED = {
    (
        "publish_table",
        "text type variable is not sanitized",
        "args",
    ): "args is string_agg(quote_literal(...)) of every trigger argument: quoted when built",
    (
        "unpublish_table",
        "routine is marked as VOLATILE, should be STABLE",
        "",
    ): "it drops triggers (DDL in dynamic SQL, which plpgsql_check cannot see): VOLATILE is right",
    (
        "row_trigger",
        'never read variable "done"',
        "",
    ): "done := pg_notify(...) IS NULL sends the event: an assignment, where PERFORM would run "
    "a query (about 2 µs more an event, docs/sql.md)",
    (
        "statement_trigger",
        'never read variable "done"',
        "",
    ): "done := pg_notify(...) IS NULL sends the event, as in row_trigger",
}


def subject_at(query: str | None, position: int | None) -> str:
    """The identifier starting at a 1-based position of the query text."""
    if not query or not position:
        return ""
    found = re.match(r"[A-Za-z_][A-Za-z0-9_]*", query[position - 1 :])
    return found.group(0) if found else ""


def findings(conn: psycopg.Connection[Any]) -> list[Finding]:
    return [
        Finding(name, level, line, message, detail, subject_at(query, position))
        for name, level, line, message, detail, query, position in conn.execute(CHECK)
    ]


@pytest.fixture
def checked(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The test database with plpgsql_check and a table to check trigger functions against."""
    available = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'plpgsql_check'"
    ).fetchone()
    if available is None:
        if os.environ.get("PGHUB_MATRIX"):
            pytest.skip("plpgsql_check is installed for the main PostgreSQL 15 server only")
        pytest.fail("plpgsql_check is missing: apt-get install postgresql-15-plpgsql-check")
    conn.execute("CREATE EXTENSION plpgsql_check")
    conn.execute("CREATE TABLE pghub_check_t (id bigint PRIMARY KEY, part int, name text)")
    return conn


def test_every_plpgsql_function_passes_plpgsql_check(checked: psycopg.Connection[Any]) -> None:
    plpgsql = checked.execute(
        """
        SELECT count(*) FROM pg_proc AS p JOIN pg_language AS l ON p.prolang = l.oid
        WHERE p.pronamespace = 'pghub'::regnamespace AND l.lanname = 'plpgsql'
        """
    ).fetchone()
    assert plpgsql is not None
    assert plpgsql[0] > 0
    found = findings(checked)
    unexpected = [f for f in found if (f.function, f.message, f.subject) not in ACCEPTED]
    assert not unexpected, "plpgsql_check findings:\n" + "\n".join(map(str, unexpected))
    stale = set(ACCEPTED) - {(f.function, f.message, f.subject) for f in found}
    assert not stale, f"ACCEPTED entries that no longer happen (remove them): {stale}"


def test_the_check_catches_a_broken_function(checked: psycopg.Connection[Any]) -> None:
    """The query above really reports errors and warnings (so a clean run means something)."""
    checked.execute(
        """
        CREATE FUNCTION pghub.broken_on_purpose() RETURNS bigint LANGUAGE plpgsql AS $$
        DECLARE
            unused integer;
        BEGIN
            RETURN (SELECT no_such_column FROM pg_class LIMIT 1);
        END
        $$
        """
    )
    got = {(f.function, f.level, f.message) for f in findings(checked)}
    assert ("broken_on_purpose", "error", 'column "no_such_column" does not exist') in got
    assert ("broken_on_purpose", "warning", 'unused variable "unused"') in got
