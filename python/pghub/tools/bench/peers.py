"""The peers of the benchmark: which of them this machine has, and node-postgres's listener.

A peer is measured only when its dependency is there; otherwise the run says why it was
skipped and how to get it:

- ``asyncpg``: the Python package (``pip install 'pghub[bench]'``);
- ``node``: ``node`` on PATH, and the ``pg`` npm package (node-postgres) found in
  ``$PGHUB_BENCH_NODE_MODULES`` when it is set, else in ``~/.cache/pghub/node/node_modules``
  (``$XDG_CACHE_HOME`` respected; ``npm install --prefix ~/.cache/pghub/node pg`` puts it
  there), else in ``$NODE_PATH``. Node runs in ``/``, so that no working directory's
  ``node_modules`` is picked instead. An installed wheel's ``pghub bench`` finds it the same
  way as a clone's.

The node listener is a script run with ``node -e``: a raw ``pg.Client`` that LISTENs and parses
each payload's JSON in its ``notification`` handler, as a careful user writes it. It speaks
JSON lines on stdout (``ready``, ``progress``, ``done``, ``error``) and measures its own CPU
(``process.cpuUsage``) from the moment it listens, as the Python listeners do.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from .progress import Progress
from .scenarios import Workload

NODE_MODULES_ENV = "PGHUB_BENCH_NODE_MODULES"
_CHECK_TIMEOUT = 30.0  # seconds for `node` to say whether it has pg (a loaded machine)
_NODE_CWD = "/"  # node looks in the working directory's node_modules before NODE_PATH


@dataclass(frozen=True)
class Peer:
    """A peer and whether it can run here: ``note`` says why not, or which version runs."""

    name: str
    available: bool
    note: str
    node: str | None = None  # the node binary (node only)
    node_path: str | None = None  # NODE_PATH to give it (node only)


def find(names: tuple[str, ...]) -> dict[str, Peer]:
    """The named peers, each available or with the reason it is not."""
    found = {"asyncpg": asyncpg_peer, "node": node_peer}
    return {name: found[name]() for name in names}


def asyncpg_peer() -> Peer:
    try:
        import asyncpg
    except ImportError:
        return Peer("asyncpg", False, "asyncpg is not installed (pip install 'pghub[bench]')")
    return Peer("asyncpg", True, f"asyncpg {asyncpg.__version__}")


def node_cache() -> Path:
    """Where ``pghub bench`` looks for node-postgres by default: the prefix for npm."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pghub" / "node"


def node_peer() -> Peer:
    node = shutil.which("node")
    if node is None:
        return Peer("node", False, "node is not on PATH")
    explicit = os.environ.get(NODE_MODULES_ENV)
    if explicit:
        paths = [explicit]  # told where: only there
        hint = f"no pg in ${NODE_MODULES_ENV} ({explicit}): npm install --prefix DIR pg"
    else:
        paths = [str(node_cache() / "node_modules"), os.environ.get("NODE_PATH", "")]
        hint = (
            f"node-postgres not found: npm install --prefix {node_cache()} pg "
            f"(or set ${NODE_MODULES_ENV} to a node_modules that has pg)"
        )
    node_path = os.pathsep.join(p for p in paths if p)
    check = (
        "const p = require.resolve('pg');"
        "process.stdout.write(require('pg/package.json').version + ' ' + p)"
    )
    try:
        answer = subprocess.run(
            [node, "-e", check],
            env={**os.environ, "NODE_PATH": node_path},
            capture_output=True,
            text=True,
            timeout=_CHECK_TIMEOUT,
            cwd=_NODE_CWD,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return Peer("node", False, f"node did not run: {error}")
    if answer.returncode != 0:
        return Peer("node", False, hint)
    version, _, where = answer.stdout.partition(" ")
    node_version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=_CHECK_TIMEOUT
    ).stdout.strip()
    note = f"node {node_version}, pg {version} ({Path(where).parents[1]})"
    return Peer("node", True, note, node=node, node_path=node_path)


def connection_config(dsn: str) -> dict[str, Any]:
    """node-postgres's Client config for a libpq conninfo (it reads URIs, not conninfos)."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    config: dict[str, Any] = {
        k: str(params[k]) for k in ("host", "user", "password") if params.get(k) is not None
    }
    if params.get("port"):
        config["port"] = int(str(params["port"]))
    if params.get("dbname"):
        config["database"] = str(params["dbname"])
    return config


_SCRIPT = r"""
'use strict';
const { Client } = require('pg');
const cfg = JSON.parse(process.env.PGHUB_BENCH_LISTENER);
const say = (kind, body) => process.stdout.write(JSON.stringify({ kind, body }) + '\n');
const now = () => Number(process.hrtime.bigint()) / 1e9;  // CLOCK_MONOTONIC, as Python's
const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
const rssMb = () => process.memoryUsage().rss / 1e6;
const expected = cfg.events;
const counts = new Array(cfg.consumers).fill(0);
let received = 0, finishedAt = 0, started = null, done = false;
const client = new Client(cfg.connection);
client.on('error', (e) => { say('error', String(e)); process.exit(1); });

function finish(timedOut) {
  if (done) return;
  done = true;
  const result = {
    received, lost: 0, finished_at: finishedAt, cpu_s: cpu() - started.cpu,
    rss_mb: process.resourceUsage().maxRSS * 1024 / 1e6, rss_ready_mb: started.rss,
    rss_end_mb: rssMb(), rss_samples: null, p50_ms: null, p99_ms: null, timed_out: timedOut,
  };
  say('done', result);
  client.end().finally(() => process.exit(0));
}

(async () => {
  await client.connect();
  for (const channel of cfg.channels) await client.query(`LISTEN "${channel}"`);
  const takers = counts.map((_, i) => (value) => {
    counts[i] += 1;
    received += 1;
    if (i === 0 && (counts[0] & 16383) === 0) say('progress', counts[0]);
    if (counts[i] >= expected && i === counts.length - 1) { finishedAt = now(); finish(false); }
  });
  client.on('notification', (msg) => {
    const p = msg.payload;
    const value = JSON.parse(p.slice(p.indexOf(':') + 1));
    for (const take of takers) take(value);
  });
  started = { cpu: cpu(), rss: rssMb() };
  say('ready', null);
  // Give up once no event has come for 15 s (a gap over 1 s between checks: stopped, drain).
  let seen = -1, since = now(), checked = now();
  setInterval(() => {
    const t = now();
    if (received !== seen || t - checked > 1.0) { seen = received; since = t; }
    checked = t;
    if (t - since > 15.0) { finishedAt = finishedAt || t; finish(true); }
  }, 200);
})().catch((e) => { say('error', String(e && e.stack || e)); process.exit(1); });
"""


class NodeListener:
    """The node-postgres listener as a child process, with the interface the runner uses for
    its Python listeners: ``pid``, ``expect(what, timeout, progress)``, ``close()``."""

    def __init__(
        self, peer: Peer, dsn: str, channels: list[str], work: Workload, shared: Any
    ) -> None:
        assert peer.node is not None
        config = {
            "connection": connection_config(dsn),
            "channels": channels,
            "events": work.events,
            "consumers": work.consumers,
        }
        env = {
            **os.environ,
            "NODE_PATH": peer.node_path or "",
            "PGHUB_BENCH_LISTENER": json.dumps(config),
        }
        self._proc = subprocess.Popen(
            [peer.node, "-e", _SCRIPT],
            env=env,
            cwd=_NODE_CWD,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self._proc.pid
        self._messages: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._stderr: list[str] = []
        self._shared = shared
        threading.Thread(target=self._read, daemon=True, name="bench-node-stdout").start()
        threading.Thread(target=self._read_stderr, daemon=True, name="bench-node-stderr").start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                message = json.loads(line)
                kind, body = message["kind"], message["body"]
            except (ValueError, KeyError, TypeError):
                self._messages.put(("error", f"node said: {line.strip()[:200]}"))
                continue
            if kind == "progress":
                if self._shared is not None:
                    self._shared.value = int(body)
            else:
                self._messages.put((kind, body))

    def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line.rstrip("\n"))

    def expect(self, what: str, timeout: float | None, progress: Progress | None) -> dict[str, Any]:
        """The listener's next message, which must be ``what`` (see runner.expect)."""
        waited = 0.0
        while True:
            try:
                kind, body = self._messages.get(timeout=0.2)
                break
            except queue.Empty:
                waited += 0.2
            if progress is not None:
                progress.tick()
            if self._proc.poll() is not None and self._messages.empty():
                last = self._stderr[-1] if self._stderr else "nothing on stderr"
                raise RuntimeError(
                    f"the node listener died (exit code {self._proc.returncode}): {last}"
                )
            if timeout is not None and waited > timeout:
                raise RuntimeError(f"the node listener did not say {what!r} within {timeout} s")
        if kind == "error":
            raise RuntimeError(f"the node listener failed: {body}")
        if kind != what:
            raise RuntimeError(f"the node listener said {kind!r}, expected {what!r}")
        return body if isinstance(body, dict) else {}

    def close(self) -> None:
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
