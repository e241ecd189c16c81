"""Every Python example of README.md and docs/hub.md runs as written.

Each ```python block is run on its own, in a fresh interpreter (``python -c``), with one
substitution: the DSN string literals the examples use, ``"host=127.0.0.1 dbname=app"`` and
``"dbname=app"``, become this test's database, which has what the examples assume: pghub, and
an ``orders`` table (id, status) with three rows, published per row. Nothing else in a block
is changed. Blocks that are pytest tests (README's plugin example, docs/testing.md's) are run
by tests/python/test_testing_plugin.py, under pytest, as written.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]
DSN_LITERALS = ('"host=127.0.0.1 dbname=app"', '"dbname=app"')
RUN_TIMEOUT = 60


def python_blocks(doc: str) -> list[tuple[int, str]]:
    """(line number, code) of each ```python block of a document."""
    text = (REPO / doc).read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.M | re.S):
        blocks.append((text.count("\n", 0, match.start()) + 1, match.group(1)))
    return blocks


def examples() -> list[Any]:
    found = []
    for doc in ("README.md", "docs/hub.md"):
        for line, code in python_blocks(doc):
            if "def test_" in code:
                continue  # a pytest test: test_testing_plugin.py runs it under pytest
            found.append(pytest.param(code, id=f"{doc}:{line}"))
    return found


EXAMPLES = examples()


@pytest.fixture
def app(dsn: str, conn: psycopg.Connection[Any]) -> str:
    """The database the examples call "dbname=app"."""
    conn.execute("CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL)")
    conn.execute("INSERT INTO orders VALUES (7, 'new'), (41, 'new'), (42, 'new')")
    conn.execute("SELECT pghub.publish_table('orders', level => 'row')")
    return dsn


# .ci/check_dist.py sets this to the python of a fresh virtual environment where only the built
# wheel is installed: the examples then run against pghub as a user installs it.
EXAMPLES_PYTHON = os.environ.get("PGHUB_EXAMPLES_PYTHON", sys.executable)


def run_example(code: str, dsn: str) -> subprocess.CompletedProcess[str]:
    for literal in DSN_LITERALS:
        code = code.replace(literal, repr(dsn))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if sys.executable != EXAMPLES_PYTHON:
        env.pop("PYTHONPATH", None)  # that interpreter's own pghub, nothing of this checkout
    return subprocess.run(
        [EXAMPLES_PYTHON, "-c", code],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=env,
        cwd=REPO,
    )


def test_the_examples_are_found() -> None:
    """So that the test below cannot pass by finding nothing."""
    assert len(EXAMPLES) >= 10
    hub_examples = [p for p in EXAMPLES if p.id.startswith("docs/hub.md")]
    assert any("hub.subscription(" in p.values[0] for p in hub_examples)
    assert any("on_resync=" in p.values[0] for p in hub_examples)
    assert any("parse_float=" in p.values[0] for p in hub_examples)
    assert any("keys=" in p.values[0] for p in hub_examples)


@pytest.mark.parametrize("code", EXAMPLES)
def test_the_example_runs_as_written(code: str, app: str) -> None:
    result = run_example(code, app)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    # What some examples say they print.
    if "print(len(cache.status)" in code:
        assert "3 orders" in result.stdout
    if "keys=[[42], [7, 1]]" in code:
        assert result.stdout == "Event(topic='orders', key=(42,), value='paid')\n"
    if "parse_float=decimal.Decimal" in code:
        assert result.stdout == "{'at': '2026-12-01', 'total': Decimal('9.50')}\n"
    if "sent.result(timeout=5)" in code:
        assert "committed" in result.stdout


def test_the_sql_notify_example_updates_and_sends_together(
    app: str, conn: psycopg.Connection[Any]
) -> None:
    (code,) = [c for c in (p.values[0] for p in EXAMPLES) if "pghub.sql_notify(conn" in c]
    conn.execute("LISTEN orders")
    assert run_example(code, app).returncode == 0
    row = conn.execute("SELECT status FROM orders WHERE id = 42").fetchone()
    assert row == ("paid",)
    payloads = [n.payload for n in conn.notifies(timeout=5, stop_after=2)]
    assert 'e42:{"status":"paid"}' in payloads  # sql_notify's (the trigger sends its own)
