"""The command line under odd input, odd values and a frozen server (issue 9, section 4).

Run as subprocesses against the real server, like test_cli.py. Every wait is bounded: a
command that hangs fails its test through the subprocess timeout.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

import psycopg
import pytest
from psycopg import sql
from test_cli import RUN_TIMEOUT, _env, closed_port

from pghub.testing import FaultProxy
from pghub.tools.private_server import NoServer, PrivateServer, find_bindir

# Exit codes, as docs/cli.md documents them.
OK, FAILED, USAGE, UNREACHABLE, NOT_INSTALLED, NO_PRIVILEGE, UNAVAILABLE = 0, 1, 2, 3, 4, 5, 6
INTERRUPTED = 130
DOCUMENTED = {OK, FAILED, USAGE, UNREACHABLE, NOT_INSTALLED, NO_PRIVILEGE, UNAVAILABLE, INTERRUPTED}
LONGEST_LINE = 1000  # characters: an error line quotes input shortened, never whole

Arg = str | bytes


def run(
    *args: Arg, stdin: bytes = b"", timeout: float = RUN_TIMEOUT, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m pghub ARGS``; arguments may be bytes (not UTF-8 on purpose)."""
    result = subprocess.run(
        [sys.executable, "-m", "pghub", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        env=_env(**env),
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode("utf-8", "backslashreplace"),
        result.stderr.decode("utf-8", "backslashreplace"),
    )


def assert_clean(result: subprocess.CompletedProcess[str], command: str) -> list[str]:
    """No traceback, no masked bug, short lines, the command named once: the stderr lines."""
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text[-3000:]
    assert "unexpected error" not in text, text[-3000:]
    assert result.returncode in DOCUMENTED, (result.returncode, text[-3000:])
    lines = result.stderr.splitlines()
    for line in lines + result.stdout.splitlines():
        assert len(line) <= LONGEST_LINE, line[:200]
        assert f"pghub {command}: pghub" not in line, line
        assert not line.startswith("pghub: pghub"), line
    return lines


def error_line(result: subprocess.CompletedProcess[str], command: str) -> str:
    """The one error line (after argparse's usage line, if any)."""
    lines = assert_clean(result, command)
    if lines and lines[0].startswith("usage: "):
        lines = [line for line in lines if not line.startswith(" ")][1:]
    # notify reading stdin counts what it sent before a bad line (docs/cli.md)
    lines = [line for line in lines if re.match(r"pghub notify: \d+ read, ", line) is None]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"pghub {command}: "), lines[0]
    return lines[0]


def in_parallel(jobs: list[Callable[[], Any]], workers: int = 6) -> list[Any]:
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda job: job(), jobs))


# --- listen prints every event it decodes ------------------------------------------------------


def nested(depth: int, inner: str, *, kind: str) -> str:
    """JSON text nested ``depth`` levels: objects {"a": ...} or lists [...]."""
    if kind == "object":
        return '{"a": ' * depth + inner + "}" * depth
    return "[" * depth + inner + "]" * depth


class ListenProcess:
    """``pghub listen`` in the background, its output read line by line with deadlines."""

    def __init__(self, dsn: str, *args: str, **env: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pghub", "listen", "--dsn", dsn, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(**env),
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[bytes], lines: list[str]) -> None:
        for raw in stream:
            with self._changed:
                lines.append(raw.decode("utf-8", "backslashreplace").rstrip("\n"))
                self._changed.notify_all()

    def wait_line(self, wanted: str, timeout: float = 15) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: wanted in self.stderr, timeout):
                self.kill()
                pytest.fail(f"no {wanted!r} on stderr within {timeout} s: {self.stderr}")

    def finish(self, timeout: float = RUN_TIMEOUT) -> tuple[int, list[str]]:
        """Wait for the exit: the exit code and the stdout lines."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"pghub listen did not end within {timeout} s; stderr: {self.stderr}")
        for reader in self._readers:
            reader.join(timeout=10)
        return self.proc.returncode, self.stdout

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def listening() -> Iterator[Callable[..., ListenProcess]]:
    started: list[ListenProcess] = []

    def start(dsn: str, *args: str, **env: str) -> ListenProcess:
        one = ListenProcess(dsn, *args, **env)
        started.append(one)
        return one

    yield start
    for one in started:
        one.kill()


def sql_payload(conn: psycopg.Connection[Any], key: list[int] | None, value: str) -> str:
    """What SQL pghub.encode makes of a JSON text: the canonical payload."""
    row = conn.execute("SELECT pghub.encode(%s::bigint[], %s::jsonb)", [key, value]).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize(
    ("kind", "depth"),
    [("object", 600), ("list", 900)],
)
def test_listen_prints_values_nested_hundreds_deep(
    dsn: str,
    conn: psycopg.Connection[Any],
    listening: Callable[..., ListenProcess],
    kind: str,
    depth: int,
) -> None:
    """Small floats send the library's writer its recursive way, which gave up (exit 1)."""
    value = nested(depth, '[1e-5, 0.000123, {"n": -2.5e-7}]', kind=kind)
    listener = listening(dsn, "deep", "--count", "2", "--format", "json")
    listener.wait_line("pghub listen: subscribe deep")
    conn.execute("SELECT pghub.notify('deep', ARRAY[1]::bigint[], %s::jsonb)", [value])
    conn.execute("SELECT pghub.notify('deep', ARRAY[2]::bigint[], '\"after\"'::jsonb)")
    code, lines = listener.finish()
    assert code == OK, listener.stderr
    expected = sql_payload(conn, [1], value).partition(":")[2]
    assert lines == [
        f'{{"topic":"deep","key":[1],"value":{expected}}}',
        '{"topic":"deep","key":[2],"value":"after"}',
    ]


def test_listen_reports_what_it_cannot_print_and_goes_on(
    dsn: str, conn: psycopg.Connection[Any], listening: Callable[..., ListenProcess]
) -> None:
    """An ASCII-only stdout cannot take 'é'; a payload that is not pghub's cannot be decoded.
    Each is one line on stderr, counted at the end (exit 1); the events after them print."""
    listener = listening(dsn, "odd", "--count", "2", "--format", "json", PYTHONIOENCODING="ascii")
    listener.wait_line("pghub listen: subscribe odd")
    conn.execute("SELECT pghub.notify('odd', ARRAY[1]::bigint[], '\"caf\u00e9\"'::jsonb)")
    conn.execute("SELECT pg_notify('odd', 'not a pghub payload')")
    conn.execute("SELECT pghub.notify('odd', ARRAY[3]::bigint[], '3'::jsonb)")
    code, lines = listener.finish()
    assert lines == ['{"topic":"odd","key":[3],"value":3}']
    assert code == FAILED
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    reached = (
        f"pghub listen: connected to server {info['host']} port {info['port']}, "
        f"database {info['dbname']}, user {info['user']}"
    )
    advisories = [reached, "pghub listen: connect", "pghub listen: subscribe odd"]
    assert listener.stderr[:3] == advisories
    # The hub's warning (its thread) and the printer's line (the main thread) in either order.
    unprintable, undecodable = sorted(listener.stderr[3:5], key=lambda line: "invalid" in line)
    assert unprintable.startswith("pghub listen: cannot print an event on odd key [1]: ")
    assert "UnicodeEncodeError" in unprintable
    assert undecodable.startswith("pghub listen: invalid payload on 'odd': ")
    assert listener.stderr[5:] == [
        "pghub listen: 1 events could not be printed and 1 payloads could not be decoded"
    ]


# --- notify sends numbers as they were written -------------------------------------------------

EXACT_NUMBERS = [
    "12345678901234567890.5",
    "19.999999999999999999",
    "1e400",
    "-1.50E-7",
    "0.1",
    "1e16",
    "100e-2",
    "-0.0",
    "123456789012345678901234567890",
    "9" * 4400,  # past Python's 4300-digit limit for int()
    '[1.10, 2E+3, {"b": 0.30000000000000004, "a": 1e-400}]',
]


def raw_payloads(listener: psycopg.Connection[Any], count: int, timeout: float = 15) -> list[str]:
    """The next ``count`` notification payloads, as PostgreSQL delivered them."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        for note in listener.notifies(timeout=0.5, stop_after=count - len(got)):
            got.append(note.payload)
    assert len(got) == count, f"got {len(got)} of {count} notifications: {got}"
    return got


def test_notify_sends_numbers_exactly_as_jsonb_keeps_them(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN exact")
        expected = [sql_payload(conn, None, text) for text in EXACT_NUMBERS]
        for text in EXACT_NUMBERS[:4]:
            result = run("notify", "exact", f"--value={text}", "--dsn", dsn)
            assert result.returncode == OK, result.stderr
        lines = "".join(f'{{"topic": "exact", "value": {text}}}\n' for text in EXACT_NUMBERS)
        result = run("notify", "--dsn", dsn, stdin=lines.encode())
        assert result.returncode == OK, result.stderr
        got = raw_payloads(listener, 4 + len(EXACT_NUMBERS))
    assert got[:4] == expected[:4]
    assert got[4:] == expected


# --- odd arguments: one line, a documented exit code, never a traceback ------------------------

DEEP = "[" * 5000 + "]" * 5000


def odd_arguments(dsn: str) -> list[tuple[list[Arg], bytes, int, str]]:
    """(arguments, stdin, exit code, a part of the error line)."""
    too_long = "x" * 100_000
    return [
        (["notify", "t", "--connect-timeout", "nan"], b"", USAGE, "finite"),
        (["notify", "t", "--connect-timeout", "inf"], b"", USAGE, "finite"),
        (["--connect-timeout=-inf", "doctor"], b"", USAGE, "finite"),
        (["listen", "t", "--connect-timeout", "-1"], b"", USAGE, "must be positive"),
        (["install", "--connect-timeout", "0"], b"", USAGE, "must be positive"),
        (["install", "--check", "--connect-timeout", "1e300"], b"", USAGE, "at most"),
        (["notify", "t", "--connect-timeout", "soon"], b"", USAGE, "invalid float value"),
        (["notify", "t", "--timeout", "nan"], b"", USAGE, "--timeout must be a finite"),
        (["notify", "t", "--timeout", "1e300"], b"", USAGE, "--timeout must be at most"),
        (["doctor", "--timeout", "inf"], b"", USAGE, "--timeout must be a finite"),
        (["demo", "--pace", "nan"], b"", USAGE, "--pace must be a finite"),
        (["demo", "--pace=-1"], b"", USAGE, "--pace must be 0 or more"),
        (["notify", "t", "--value", DEEP], b"", USAGE, "--value is nested too deeply"),
        (["notify", "t", "--value", "1e99999999999"], b"", USAGE, "--value is not JSON that"),
        (["notify", "t", "--value=-Infinity"], b"", USAGE, "-Infinity is not a JSON number"),
        (["notify", "t", "--value", "9" * 8000], b"", USAGE, "7999"),
        (["notify", "t", "--key", "9" * 5000], b"", USAGE, "outside the signed 64-bit range"),
        (["notify", "t", "--key", "1_000"], b"", USAGE, "--key '1_000'"),
        (["notify", "t", "--key", "\u0661\u0662"], b"", USAGE, "a key is integers"),
        (["notify", "t", "--key", "1,,2"], b"", USAGE, "a key is integers"),
        (["notify", b"t\xff"], b"", USAGE, "topic"),
        (["notify", "t", "--value", b'"\xed\xa0\x80"'], b"", USAGE, "surrogate"),
        (["notify", "t", "--dsn", b"host=\xff"], b"", USAGE, "invalid connection string"),
        (["notify", "t", "--dsn", "port=abc"], b"", USAGE, "invalid connection settings"),
        (["notify", "t", "--dsn", "postgresql://["], b"", USAGE, "invalid connection string"),
        (["notify", too_long], b"", USAGE, "characters"),
        (["listen", too_long], b"", USAGE, "characters"),
        (["listen", "t", "--count=-5"], b"", USAGE, "--count must be at least 1"),
        (["notify"], DEEP.encode() + b"\n", USAGE, "stdin line 1: nested too deeply"),
        (["notify"], b'{"topic": "t", "value": NaN}\n', USAGE, "NaN is not a JSON number"),
        (["notify"], b'{"topic": "t", "value": 1e-99999}\n', USAGE, "stdin line 1: "),
        (["notify"], b'{"topic": "t", "key": [' + b"9" * 5000 + b"]}\n", USAGE, "64-bit"),
        (["notify"], b"[" * 1_000_000 + b"\n", USAGE, "stdin line 1: "),
        (["sql", "--pghub-version", b"\xff"], b"", USAGE, "no install script"),
        # Valid, however odd: sent.
        (["notify", "t", "--value", "9" * 5000, "--dsn", dsn], b"", OK, ""),
        (["notify", "t", "--key", "", "--dsn", dsn], b"", OK, ""),
    ]


def test_odd_arguments_get_one_line_and_a_documented_exit_code(dsn: str) -> None:
    cases = odd_arguments(dsn)

    def check(case: tuple[list[Arg], bytes, int, str]) -> None:
        args, stdin, code, part = case
        with_dsn = args if "--dsn" in args else [*args, "--dsn", dsn]
        result = run(*with_dsn, stdin=stdin)
        command = next(a for a in args if isinstance(a, str) and not a.startswith("-"))
        shown = [a[:40] for a in args]
        assert result.returncode == code, (shown, result.stderr[-2000:])
        if code == OK:
            assert_clean(result, command)
            return
        line = error_line(result, command)
        assert part in line, (shown, line)

    in_parallel([lambda case=case: check(case) for case in cases])


ODD_VALUES: list[Arg] = [
    "", "-", "--", "nan", "-inf", "1e309", "-0", "0x10", "1_0", "\u0661", " 7 ", "1,", ",",
    "9" * 30, "x" * 70, "t\u00e9", b"\xff\xfe", b"\xed\xa0\x80", "{", "[]", "null", "\"s\"",
    '{"a": 1e99999}', "1e-400", "host=", "'", "postgresql://", "port=-1", "--help=x", "\t",
]  # fmt: skip


def random_arguments(rng: random.Random, dsn: str) -> list[Arg]:
    """A command with some of its options, each given an odd value."""
    command = rng.choice(["listen", "notify", "install", "doctor", "demo", "sql"])
    options = {
        "listen": ["--count", "--format"],
        "notify": ["--key", "--value", "--timeout"],
        "install": ["--check"],
        "doctor": ["--timeout"],
        "demo": ["--pace", "--format"],
        "sql": ["--pghub-version"],
    }[command]
    args: list[Arg] = [command]
    if command in ("listen", "notify"):
        args.append(rng.choice(ODD_VALUES + ["t"] * 5))
    for option in rng.sample([*options, "--connect-timeout"], rng.randint(1, len(options) + 1)):
        args += [option] if option == "--check" else [option, rng.choice(ODD_VALUES)]
    # A good server only where the command ends by itself soon (listen runs until stopped,
    # the demo takes --pace seconds a step).
    dsns = [*ODD_VALUES[-5:], f"host=127.0.0.1 port={closed_port()}"]
    if command in ("notify", "install", "doctor"):
        dsns.append(dsn)
    args += ["--dsn", rng.choice(dsns)]
    return args


def test_fuzzed_arguments_never_give_a_traceback(dsn: str) -> None:
    """Commands with odd option values: whatever happens, a documented exit code and lines a
    person can read. The demo with a good DSN runs for real (exit 0) unless an option is bad."""
    rng = random.Random(9)
    cases = [random_arguments(rng, dsn) for _ in range(40)]

    def check(args: list[Arg]) -> None:
        result = run(*args, stdin=b'{"topic": "t"}\n', timeout=90)
        assert_clean(result, str(args[0]))

    in_parallel([lambda args=args: check(args) for args in cases], workers=4)


# --- a frozen server: every statement is bounded, Ctrl-C ends at once --------------------------


class FreezingProxy:
    """A TCP proxy to PostgreSQL that freezes the whole server at one moment.

    Once the server has sent its ``freeze_after``-th ReadyForQuery (counted over every
    connection), or once a client sends bytes that ``freeze_after`` (a pattern) matches (kept
    from the server: that statement is in flight), nothing more passes on any connection, in
    either direction, and new connections are accepted and never answered: what a SIGSTOPped
    server looks like from the client (its kernel still acknowledges). ``freeze_after=None``
    never freezes; ``ready`` counts the ReadyForQuery messages either way. Messages are framed
    (type byte, length), so the DSN turns SSL and GSS encryption off.
    """

    def __init__(self, dsn: str, freeze_after: int | re.Pattern[bytes] | None) -> None:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
        self.server = (str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
        self.freeze_after = freeze_after
        self.ready = 0
        self.frozen = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closing = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.dsn = psycopg.conninfo.make_conninfo(
            dsn,
            host="127.0.0.1",
            port=self.listener.getsockname()[1],
            sslmode="disable",
            gssencmode="disable",
        )
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        deadline = time.monotonic() + 2 * RUN_TIMEOUT  # never outlives its test for long
        while not self._closing.is_set() and time.monotonic() < deadline:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._sockets.append(client)
            if self.frozen.is_set():
                continue  # accepted by the kernel, never answered
            server = socket.create_connection(self.server, timeout=5)
            server.settimeout(None)
            with self._lock:
                self._sockets.append(server)
            threading.Thread(target=self._upstream, args=(client, server), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client), daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                pattern = self.freeze_after
                if isinstance(pattern, re.Pattern) and pattern.search(data):
                    self.frozen.set()  # a client's statement is one send: one recv here
                if self.frozen.is_set():
                    return  # the server reads nothing more
                server.sendall(data)
            server.shutdown(socket.SHUT_WR)

    def _downstream(self, server: socket.socket, client: socket.socket) -> None:
        buffer = b""
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                buffer += data
                out: list[bytes] = []
                while len(buffer) >= 5 and not self.frozen.is_set():
                    size = 1 + int.from_bytes(buffer[1:5], "big")
                    if len(buffer) < size:
                        break
                    message, buffer = buffer[:size], buffer[size:]
                    out.append(message)
                    if message[:1] == b"Z":
                        with self._lock:
                            self.ready += 1
                            if self.ready == self.freeze_after:
                                self.frozen.set()
                client.sendall(b"".join(out))
                if self.frozen.is_set():
                    return
            client.close()

    def close(self) -> None:
        self._closing.set()
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()


@contextlib.contextmanager
def freezing(dsn: str, freeze_after: int | re.Pattern[bytes] | None) -> Iterator[FreezingProxy]:
    proxy = FreezingProxy(dsn, freeze_after)
    try:
        yield proxy
    finally:
        proxy.close()


CONNECT_TIMEOUT = 2  # seconds: the bound every wait of a command gets in these tests


def frozen_runs(
    target: Callable[[], str], args: list[str], *, extra_bound: float = 0.0
) -> list[tuple[int, subprocess.CompletedProcess[str], float, bool]]:
    """Run the command once unfrozen to count its answers, then once per answer with the
    server frozen right after it: (freeze point, result, seconds taken, whether it froze)."""
    with freezing(target(), None) as counting:
        baseline = run(*args, "--dsn", counting.dsn, "--connect-timeout", str(CONNECT_TIMEOUT))
    assert baseline.returncode == OK, baseline.stdout + baseline.stderr
    answers = counting.ready
    assert answers >= 2, answers

    def one(point: int) -> tuple[int, subprocess.CompletedProcess[str], float, bool]:
        dsn = target()
        with freezing(dsn, point) as proxy:
            began = time.monotonic()
            result = run(*args, "--dsn", proxy.dsn, "--connect-timeout", str(CONNECT_TIMEOUT))
            return point, result, time.monotonic() - began, proxy.frozen.is_set()

    return in_parallel([lambda p=p: one(p) for p in range(1, answers)], workers=answers)


# A frozen server costs a command at most: the connect (CONNECT_TIMEOUT), one statement
# (CONNECT_TIMEOUT + 1 s of grace), the hub's bounds, the interpreter's start on a busy machine.
FROZEN_BOUND = 4 * CONNECT_TIMEOUT + 10


@pytest.mark.parametrize("args", [["install"], ["install", "--check"]])
def test_every_statement_of_install_is_bounded(
    dsn: str, empty_database: Callable[[], str], args: list[str]
) -> None:
    """A fresh database for each install (the script runs); the check looks at this one."""
    target = empty_database if args == ["install"] else lambda: dsn
    for point, result, took, froze in frozen_runs(target, args):
        assert froze, point
        assert result.returncode == UNREACHABLE, (point, result.stdout, result.stderr)
        line = error_line(result, "install")
        assert "no answer from the server within" in line or "cannot connect" in line, line
        assert took < FROZEN_BOUND, (point, took)


def test_every_statement_of_doctor_is_bounded(dsn: str) -> None:
    for point, result, took, froze in frozen_runs(lambda: dsn, ["doctor", "--timeout", "2"]):
        assert froze, point
        assert result.returncode == UNREACHABLE, (point, result.stdout, result.stderr)
        assert result.stderr == ""
        last = result.stdout.splitlines()[-1]
        assert last.startswith("FAIL "), (point, result.stdout)
        assert "no answer" in last or "timeout" in last, (point, last)
        assert took < FROZEN_BOUND + 2, (point, took)  # the round trip waits its --timeout


def test_notify_on_a_frozen_server_ends_within_its_bounds(dsn: str) -> None:
    for point, result, took, froze in frozen_runs(lambda: dsn, ["notify", "t", "--timeout", "3"]):
        assert froze, point
        # Not connected, or connected and the event not confirmed (docs/cli.md).
        assert result.returncode in (UNREACHABLE, FAILED), (point, result.stderr)
        error_line(result, "notify")
        assert took < FROZEN_BOUND + 3, (point, took)


def test_install_waiting_for_a_lock_gives_up_within_the_timeout(
    empty_database: Callable[[], str],
) -> None:
    """A real server, not frozen but busy: a concurrent install holds the install lock.
    The statement timeout ends the wait; the server stays fine."""
    target = empty_database()
    from pghub.install import _INSTALL_LOCK_KEY

    with psycopg.connect(target) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", [_INSTALL_LOCK_KEY])
        began = time.monotonic()
        result = run("install", "--dsn", target, "--connect-timeout", "2", timeout=30)
        took = time.monotonic() - began
    assert result.returncode == UNREACHABLE, result.stderr
    assert "canceling statement due to statement timeout" in error_line(result, "install")
    assert took < 10
    assert run("install", "--dsn", target).returncode == OK  # nothing half-done


def interrupt_when_frozen(
    proxy: FreezingProxy, proc: subprocess.Popen[bytes]
) -> tuple[int, str, float]:
    """SIGINT once the server froze; (exit code, stderr, seconds from SIGINT to exit)."""
    if not proxy.frozen.wait(20):
        proc.kill()
        pytest.fail("the proxy never froze")
    time.sleep(0.5)  # the command is waiting for its answer by now
    proc.send_signal(signal.SIGINT)
    began = time.monotonic()
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("no exit within 30 s of SIGINT")
    return proc.returncode, err.decode("utf-8", "backslashreplace"), time.monotonic() - began


# A Bind message ('B', length, portal "") of one of the hub's prepared notify statements.
_BIND_NOTIFY = re.compile(rb"B.{4}\x00pghub_(?:notify|journal)_(?:one|many)\x00", re.S)


@pytest.mark.parametrize(
    ("args", "freeze_after", "code"),
    [
        # Answers: connect, SET statement_timeout, then the command's statements. A hub's
        # session is frozen at the statement itself (its set-up's round trips vary with the
        # server: whether it has pghub), the statement kept from the server.
        (["doctor"], 2, INTERRUPTED),
        (["install"], 2, INTERRUPTED),
        (["install", "--check"], 2, INTERRUPTED),
        # The hub's NOTIFY in flight: the Bind of a prepared notify statement.
        (["notify", "t", "--timeout", "60"], _BIND_NOTIFY, INTERRUPTED),
        # The hub's set-up in flight: still starting.
        (["listen", "t"], re.compile(rb"SET idle_session_timeout"), INTERRUPTED),
        # The LISTEN in flight: listening, ends as usual.
        (["listen", "t"], re.compile(rb'LISTEN "t"'), OK),
    ],
)
def test_sigint_ends_a_command_waiting_for_a_frozen_server_at_once(
    dsn: str, args: list[str], freeze_after: int | re.Pattern[bytes], code: int
) -> None:
    with freezing(dsn, freeze_after) as proxy:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pghub", *args, "--dsn", proxy.dsn, "--connect-timeout", "30"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(),
        )
        exit_code, err, took = interrupt_when_frozen(proxy, proc)
    assert exit_code == code, err
    assert took < 3, err
    assert "Traceback" not in err
    if code == INTERRUPTED:
        assert err.splitlines()[-1].startswith(f"pghub {args[0]}: interrupted"), err


@pytest.fixture
def private_server() -> Iterator[PrivateServer]:
    try:
        bindir, _ = find_bindir()
    except NoServer as error:
        pytest.skip(str(error))
    with PrivateServer.start(bindir) as server:
        yield server


@contextlib.contextmanager
def stopped(pids: list[int]) -> Iterator[None]:
    """The processes stopped with SIGSTOP, and continued on the way out."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@pytest.mark.slow
def test_listen_ends_at_once_on_sigint_while_its_probe_waits_on_a_frozen_server(
    dsn: str, private_server: PrivateServer, listening: Callable[..., ListenProcess]
) -> None:
    """The hub probes a quiet server after half its liveness timeout (15 s) and waits up to 15 s
    more for the answer; SIGINT in that time must not wait for it. Two frozen servers side
    by side: a black-holing proxy before the shared server, and a private server whose
    listening backend is stopped with SIGSTOP (never the shared server's processes)."""
    server = psycopg.conninfo.conninfo_to_dict(dsn)
    with FaultProxy(str(server["host"]), int(str(server["port"]))) as proxy:
        through_proxy = listening(proxy.dsn(dsn), "probed")
        on_private = listening(private_server.conninfo(), "probed")
        for listener in (through_proxy, on_private):
            listener.wait_line("pghub listen: subscribe probed")
        with psycopg.connect(private_server.conninfo(), autocommit=True) as admin:
            rows = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'pghub:pghub-listen'"
            ).fetchall()
        assert len(rows) == 1, rows
        proxy.blackhole()
        with stopped([int(rows[0][0])]):
            time.sleep(17)  # the probe went out at 15 s and is waiting for its answer
            for listener in (through_proxy, on_private):
                listener.proc.send_signal(signal.SIGINT)
            began = time.monotonic()
            results = [listener.finish(timeout=30) for listener in (through_proxy, on_private)]
            took = time.monotonic() - began
    assert [code for code, _ in results] == [OK, OK]
    assert took < 3


# --- passwords are never printed ---------------------------------------------------------------

PASSWORD = "pw-s3cr3t"


def password_dsns() -> list[str]:
    port = closed_port()
    return [
        f"postgresql://u:{PASSWORD}@[::1/db",  # libpq quotes the whole URI in its error
        f"postgresql://u:{PASSWORD}@127.0.0.1:{port}/db",
        f"postgresql://u:{PASSWORD}@127.0.0.1:{port}/db?sslmode=bogus",
        f"postgresql://u@127.0.0.1:{port}/db?password={PASSWORD}&bogus=1",
        f"host=127.0.0.1 port={port} user=u password={PASSWORD}",
        f"password={PASSWORD} host",
        f"host=127.0.0.1 password='{PASSWORD}",
        f"host=127.0.0.1 port={port} password={PASSWORD} bogus=1",
    ]


PASSWORD_COMMANDS = [
    ["listen", "t"],
    ["notify", "t"],
    ["install"],
    ["install", "--check"],
    ["doctor"],
    ["demo"],
]


def test_no_command_prints_a_password() -> None:
    jobs: list[Callable[[], tuple[list[str], subprocess.CompletedProcess[str]]]] = []
    for number, target in enumerate(password_dsns()):
        for command in PASSWORD_COMMANDS:
            jobs.append(lambda c=command, t=target: (c, run(*c, "--dsn", t)))
        if number < 3:  # the environment and the benchmark: the first few forms suffice
            for command in PASSWORD_COMMANDS:
                jobs.append(lambda c=command, t=target: (c, run(*c, PGHUB_DSN=t)))
            for bench in (["--dsn", target, "bench"], ["bench", "--dsn", target]):
                jobs.append(lambda b=bench: (["bench"], run(*b, "--quick")))
    for command, result in in_parallel(jobs):
        text = result.stdout + result.stderr
        assert PASSWORD not in text, (command, text)
        assert "s3cr3t" not in text, (command, text)
        assert result.returncode in (USAGE, UNREACHABLE), (command, text)
        assert "Traceback" not in text, (command, text)


# --- one prefix a line -------------------------------------------------------------------------


@pytest.fixture
def no_create_role(server_dsn: str) -> Iterator[str]:
    """A login role with no privilege on any new database."""
    name = f"pghub_cli_hardening_{os.getpid()}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_errors_name_the_command_once(
    empty_database: Callable[[], str], no_create_role: str
) -> None:
    target = psycopg.conninfo.make_conninfo(empty_database(), user=no_create_role)
    install = run("install", "--dsn", target)
    assert install.returncode == NO_PRIVILEGE
    assert error_line(install, "install").startswith("pghub install: permission denied: ")
    demo = run("demo", "--dsn", target, "--pace", "0")
    assert demo.returncode == NO_PRIVILEGE
    assert error_line(demo, "demo").startswith("pghub demo: installing pghub: permission denied")


def test_say_writes_whole_lines_beside_another_threads_log() -> None:
    """say() and the hub's log share stderr from two threads: every line stays whole (print()
    wrote a line and its newline apart, so another thread's line could land between)."""
    script = textwrap.dedent(
        """
        import logging, sys, threading
        from pghub.cli._common import say

        handler = logging.StreamHandler(sys.stderr)
        log = logging.getLogger("race")
        log.addHandler(handler)
        log.propagate = False

        def logs():
            for _ in range(20000):
                log.warning("B" * 40)

        thread = threading.Thread(target=logs)
        thread.start()
        for _ in range(20000):
            say("A" * 40)
        thread.join()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    lines = done.stderr.splitlines()
    torn = [line for line in lines if line not in ("A" * 40, "B" * 40)]
    assert not torn, f"{len(torn)} torn lines, e.g. {torn[:3]}"
    assert len(lines) == 40000
