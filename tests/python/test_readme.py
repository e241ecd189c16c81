"""README's SQL examples run as written, in a database where pghub is installed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg

README = Path(__file__).resolve().parents[2] / "README.md"


def sql_blocks(section: str) -> list[str]:
    """The ```sql blocks of one ``## section`` of the README."""
    text = README.read_text()
    found = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert found is not None, f"README has no section {section!r}"
    return re.findall(r"^```sql\n(.*?)^```", found.group(1), re.M | re.S)


def test_the_sql_section_runs_as_written(conn: psycopg.Connection[Any]) -> None:
    blocks = sql_blocks("SQL")
    assert blocks
    for block in blocks:
        conn.execute(block)  # the whole block, as psql -c would run it; raises where it fails
    published = conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders'::regclass AND NOT tgisinternal"
    ).fetchone()
    assert published is not None
    assert published[0] >= 1
