"""pghub's pytest plugin (pghub.testing.plugin), run the way users run it: inner pytest sessions
(``pytester``) against the real server, the DSN given each way the plugin takes one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "testing.md"

# The fixtures of tests/conftest.py: the plugin autoloads here and must shadow none of them.
PROJECT_FIXTURES = {"pg", "pg_server", "dsn", "conn", "server_dsn", "empty_database"}
PLUGIN_FIXTURES = {"pghub_dsn", "pghub_hub", "pghub_hub_options", "pghub_fault_proxy"}

# An inner test that uses the hub fixture end to end: subscribe, an event committed by another
# session, waited for by predicate.
ROUND_TRIP = """
    import psycopg
    import pghub
    from pghub.testing import listen

    def test_round_trip(pghub_hub, pghub_dsn):
        assert pghub_hub.state == "connected"
        with listen(pghub_hub, "orders") as orders:
            with psycopg.connect(pghub_dsn, autocommit=True) as conn:
                pghub.sql_notify(conn, "orders", [7], {"status": "new"})
                pghub.sql_notify(conn, "orders", [42], {"status": "paid"})
            event = orders.wait_for(lambda e: e.key == (42,), timeout=5)
            assert event.value == {"status": "paid"}
            assert [e.key for e in orders.events] == [(7,), (42,)]
"""


def doc_blocks() -> list[str]:
    """The Python blocks of docs/testing.md, as written."""
    return re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)


def run_inner(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # -p no:cacheprovider: nothing written next to the inner tests; -p no:randomly if present.
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def test_hub_fixture_with_the_dsn_on_the_command_line(pytester: pytest.Pytester, dsn: str) -> None:
    pytester.makepyfile(test_inner=ROUND_TRIP)
    run_inner(pytester, f"--pghub-dsn={dsn}").assert_outcomes(passed=1)


def test_hub_fixture_with_the_dsn_in_the_ini_file(pytester: pytest.Pytester, dsn: str) -> None:
    pytester.makeini(f"[pytest]\npghub_dsn = {dsn}\n")
    pytester.makepyfile(test_inner=ROUND_TRIP)
    run_inner(pytester).assert_outcomes(passed=1)


def test_the_command_line_wins_over_the_ini_file(pytester: pytest.Pytester, dsn: str) -> None:
    pytester.makeini("[pytest]\npghub_dsn = host=127.0.0.1 port=1 dbname=nowhere\n")
    pytester.makepyfile(
        test_inner=f"""
        def test_dsn(pghub_dsn):
            assert pghub_dsn == {dsn!r}
        """
    )
    run_inner(pytester, f"--pghub-dsn={dsn}").assert_outcomes(passed=1)


def test_a_conftest_fixture_overrides_pghub_dsn(pytester: pytest.Pytester, dsn: str) -> None:
    pytester.makeconftest(
        f"""
        import pytest

        @pytest.fixture
        def pghub_dsn():
            return {dsn!r}
        """
    )
    pytester.makepyfile(test_inner=ROUND_TRIP)
    run_inner(pytester).assert_outcomes(passed=1)


def test_pytest_postgresql_fixture_is_picked_up_and_loads_pghub(
    pytester: pytest.Pytester, pg_server: Any
) -> None:
    """With pytest-postgresql's ``postgresql`` fixture (here over the running server), every
    test gets its own database, pghub installed by ``install_pghub``."""
    template = f"pghub_plugin_{os.getpid()}"
    pytester.makeini(
        textwrap.dedent(
            f"""
            [pytest]
            postgresql_host = {pg_server.host}
            postgresql_port = {pg_server.port}
            postgresql_user = {pg_server.user}
            postgresql_dbname = {template}
            """
        )
    )
    # The conftest.py of docs/testing.md, as written.
    (conftest,) = [b for b in doc_blocks() if "factories.postgresql_noproc" in b]
    pytester.makeconftest(conftest)
    pytester.makepyfile(
        test_inner=ROUND_TRIP
        + """
    def test_each_test_has_its_database_with_pghub(pghub_dsn, postgresql):
        assert psycopg.conninfo.conninfo_to_dict(pghub_dsn)["dbname"] == postgresql.info.dbname
        with psycopg.connect(pghub_dsn) as conn:
            assert conn.execute("SELECT pghub.version()").fetchone() == ("0.3",)
    """
    )
    try:
        run_inner(pytester).assert_outcomes(passed=2)
    finally:
        # pytest-postgresql drops its template at the end; a crashed inner run must not leave it.
        with psycopg.connect(
            host=pg_server.host, port=pg_server.port, user=pg_server.user, dbname="postgres"
        ) as admin:
            admin.autocommit = True
            for name in (template, f"{template}_tmpl"):
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def test_no_database_configured_is_an_error_that_says_what_to_do(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_inner="""
        def test_needs_a_hub(pghub_hub):
            raise AssertionError("never reached")
        """
    )
    # Without pytest-postgresql there is no postgresql fixture to fall back on.
    result = run_inner(pytester, "-p", "no:pytest_postgresql")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*pghub_dsn: no database to test against*--pghub-dsn*"])
    result.stdout.no_fnmatch_line("*never reached*")


def test_a_callback_that_raises_fails_the_test(pytester: pytest.Pytester, dsn: str) -> None:
    pytester.makepyfile(
        test_inner="""
        import pytest
        from pghub.testing import EventRecorder

        def boom(event):
            if event.advisory is None:
                raise RuntimeError("callback bug")

        def start(hub):
            recorder = EventRecorder()
            hub.consumer(boom, "orders")
            hub.consumer(recorder, "orders")
            hub.notify("orders", [1], None)
            recorder.wait_for(timeout=5)

        def test_unmarked(pghub_hub):
            start(pghub_hub)

        @pytest.mark.pghub_allow_callback_errors
        def test_marked(pghub_hub):
            start(pghub_hub)
        """
    )
    result = run_inner(pytester, f"--pghub-dsn={dsn}", "--strict-markers")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_unmarked*", "*1 consumer callback call(s) raised*"]
    )


def test_options_fixture_reaches_the_hub(pytester: pytest.Pytester, dsn: str) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def pghub_hub_options():
            return {"name": "orders-app", "queue_size": 7}
        """
    )
    pytester.makepyfile(
        test_inner="""
        def test_options(pghub_hub):
            assert pghub_hub.name == "orders-app"
            assert pghub_hub.options.queue_size == 7
        """
    )
    run_inner(pytester, f"--pghub-dsn={dsn}").assert_outcomes(passed=1)


def test_hub_is_stopped_after_the_test(pytester: pytest.Pytester, dsn: str) -> None:
    pytester.makepyfile(
        test_inner="""
        kept = []

        def test_keep(pghub_hub):
            kept.append(pghub_hub)

        def test_stopped_after():
            assert kept[0].state == "stopped"
        """
    )
    run_inner(pytester, f"--pghub-dsn={dsn}", "-p", "no:randomly").assert_outcomes(passed=2)


def test_fault_proxy_fixture_makes_the_hub_reconnect(pytester: pytest.Pytester, dsn: str) -> None:
    pytester.makepyfile(
        test_inner="""
        import pghub
        from pghub import Action
        from pghub.testing import listen

        def test_reset(pghub_fault_proxy, pghub_dsn):
            fast = {"reconnect_delay": 0.05, "reconnect_max_delay": 0.2}
            with pghub.Hub(pghub_fault_proxy.dsn(pghub_dsn), **fast) as hub:
                orders = listen(hub, "orders")
                assert pghub_fault_proxy.reset() == 1
                orders.wait_advisory(Action.DISCONNECT, timeout=5)
                orders.wait_advisory(Action.RECONNECT, timeout=10)
                hub.notify("orders", [3], "after")
                assert orders.wait_for(timeout=5).value == "after"
            assert hub.stats().reconnects == 1
        """
    )
    run_inner(pytester, f"--pghub-dsn={dsn}").assert_outcomes(passed=1)


def test_fault_proxy_fixture_refuses_a_unix_socket_dsn(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_inner="""
        def test_proxy(pghub_fault_proxy):
            raise AssertionError("never reached")
        """
    )
    result = run_inner(pytester, "--pghub-dsn=host=/var/run/postgresql dbname=x")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*pghub_fault_proxy: FaultProxy forwards TCP*Unix socket*"])


def test_plugin_fixtures_are_all_pghub_prefixed_and_clash_with_nothing(
    pytester: pytest.Pytester,
) -> None:
    result = run_inner(pytester, "--fixtures")
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "from pghub.testing.plugin" in line)
    section = []
    for line in lines[start + 1 :]:
        if line.startswith("-"):
            break
        if line and not line.startswith(" "):
            section.append(line.split()[0])
    assert set(section) == PLUGIN_FIXTURES
    assert not PLUGIN_FIXTURES & PROJECT_FIXTURES


def test_entry_point_autoloads_and_can_be_disabled(pytester: pytest.Pytester) -> None:
    """In a fresh interpreter, as users run pytest: the pytest11 entry point loads the plugin;
    ``-p no:pghub`` leaves it out."""
    pytester.makepyfile(
        test_inner="""
        def test_loaded(request):
            assert request.config.pluginmanager.has_plugin("pghub")
        """
    )
    loaded = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    loaded.assert_outcomes(passed=1)
    disabled = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:pghub", timeout=120
    )
    disabled.assert_outcomes(failed=1)


def test_loading_the_plugin_starts_nothing_and_imports_no_extra() -> None:
    probe = (
        "import sys, threading\n"
        "import pghub.testing.plugin\n"
        "extra = {'pytest_postgresql', 'prometheus_client', 'opentelemetry'} & set(sys.modules)\n"
        "assert not extra, extra\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", probe], env=env, check=True, timeout=60)


def test_docs_examples_run_as_written(pytester: pytest.Pytester, dsn: str) -> None:
    """Every test module in docs/testing.md, with the conftest.py that sets hub options."""
    blocks = doc_blocks()
    tests = [b for b in blocks if "def test_" in b]
    (options,) = [b for b in blocks if b.startswith("# conftest.py") and "hub_options" in b]
    assert len(tests) == 3
    pytester.makeconftest(options)
    for number, block in enumerate(tests):
        pytester.makepyfile(**{f"test_doc_{number}": block})
    run_inner(pytester, f"--pghub-dsn={dsn}").assert_outcomes(passed=3)


def test_readme_example_runs_as_written(pytester: pytest.Pytester, dsn: str) -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Testing your code.*?(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert section is not None
    (block,) = re.findall(r"```python\n(.*?)```", section.group(0), re.DOTALL)
    pytester.makepyfile(test_readme_plugin_example=block)  # not test_readme: that module exists
    run_inner(pytester, f"--pghub-dsn={dsn}").assert_outcomes(passed=1)
