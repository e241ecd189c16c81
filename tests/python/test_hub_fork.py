"""A hub and ``fork()``: the child of a started hub gets a clear error, never silence.

``os.fork()`` copies only the calling thread: in the child, the hub's engine thread is gone
while its session's socket is still shared with the parent. Before, ``notify()`` in the child
queued its event and nothing ever answered it, and ``stop()`` waited for ever. Each check
runs in a forked child that reports through a pipe and ends with ``os._exit``; the parent
bounds the wait and kills a child that hangs. Every call in the child is bounded too (run in
a helper thread), so a hang is reported as one, not as a stuck test.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from hubkit import HubPool, Recorder, send_raw, within

import pghub
from pghub import Action

CALL_BOUND = 3.0  # seconds a call in the child may take before it counts as a hang
CHILD_BOUND = 30.0  # seconds the whole child may take


def outcome(call: Callable[[], Any]) -> str:
    """What a call did, within CALL_BOUND: 'returned', 'hung' or the exception's type name
    and message (in a helper thread: threads can be made in a forked child)."""
    result: list[str] = []

    def run() -> None:
        try:
            call()
            result.append("returned")
        except BaseException as exc:
            result.append(f"{type(exc).__name__}: {exc}")

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(CALL_BOUND)
    return result[0] if result else "hung"


def in_child(body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Fork; run ``body`` in the child and return what it reported (JSON through a pipe)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave at once (no atexit, no pytest teardown)
        code = 0
        try:
            os.close(read_end)
            report = body()
        except BaseException as exc:
            report = {"child failed": f"{type(exc).__name__}: {exc}"}
            code = 1
        try:
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        deadline = time.monotonic() + CHILD_BOUND
        while True:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError(f"the forked child did not finish within {CHILD_BOUND} s")
            time.sleep(0.01)
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
    finally:
        os.close(read_end)
    report: dict[str, Any] = json.loads(b"".join(chunks) or b"{}")
    assert "child failed" not in report, report
    return report


def test_every_call_in_a_forked_child_raises_hub_forked_at_once(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn, name="forked")
    rec = Recorder()
    consumer = hub.consumer(rec, "forkt")
    rec.wait_advisory(Action.SUBSCRIBE, "forkt")

    def child() -> dict[str, Any]:
        answered = threading.Event()
        report = {
            "state": hub.state,
            "notify": outcome(lambda: hub.notify("forkt", [1], confirm=lambda ok: answered.set())),
        }
        report["answered"] = answered.wait(CALL_BOUND)  # silence, if notify() did not raise
        report["notify_many"] = outcome(lambda: hub.notify_many([("forkt", [2], None)]))
        report["consumer"] = outcome(lambda: hub.consumer(lambda e: None, "forkt"))
        report["subscribe"] = outcome(lambda: consumer.subscribe("other"))
        report["close"] = outcome(consumer.close)
        report["start"] = outcome(hub.start)
        report["stop"] = outcome(hub.stop)
        return report

    started = time.monotonic()
    report = in_child(child)
    assert time.monotonic() - started < CHILD_BOUND
    for call in ("notify", "notify_many", "consumer", "subscribe", "close", "start", "stop"):
        said = report[call]
        assert said.startswith("HubForked: "), f"{call}() in the child: {said}; {report}"
        assert f"belongs to process {os.getpid()}" in said, said
    assert report["answered"] is False
    assert report["state"] == "forked"

    # The parent's hub never noticed: its session still hears and sends.
    hub.notify("forkt", [3])
    assert [e.key for e in rec.wait_events(1)] == [(3,)]
    assert hub.state == "connected"
    assert isinstance(pghub.HubForked("x"), pghub.HubStopped)


def test_a_stopped_hub_in_a_forked_child_is_just_stopped(dsn: str) -> None:
    hub = pghub.Hub(dsn)
    within(10, hub.start)
    within(10, hub.stop)

    def child() -> dict[str, Any]:
        return {
            "state": hub.state,
            "notify": outcome(lambda: hub.notify("t")),
            "stop": outcome(hub.stop),
        }

    report = in_child(child)
    assert report["state"] == "stopped"
    assert report["notify"].startswith("HubStopped: ")
    assert report["stop"] == "returned"


def test_a_hub_made_but_not_started_before_fork_works_in_the_child(
    dsn: str, conn: Any, hubs: HubPool
) -> None:
    """A preforking server may make the hub at import and start it in each worker."""
    hub = hubs.make(dsn, name="preforked")

    def child() -> dict[str, Any]:
        got = threading.Event()
        ready = threading.Event()

        def on_event(event: pghub.Event) -> None:
            advisory = event.advisory
            if advisory is not None and advisory.action is Action.SUBSCRIBE:
                ready.set()
            elif event.key == (7,):
                got.set()

        report = {"start": outcome(hub.start)}
        hub.consumer(on_event, "prefork")
        report["subscribed"] = ready.wait(10)
        hub.notify("prefork", [7])
        report["heard"] = got.wait(10)
        report["stop"] = outcome(hub.stop)
        return report

    report = in_child(child)
    assert report == {"start": "returned", "subscribed": True, "heard": True, "stop": "returned"}
    # The parent's copy starts and works too, on a session of its own.
    within(10, hub.start)
    rec = Recorder()
    hub.consumer(rec, "prefork")
    rec.wait_advisory(Action.SUBSCRIBE, "prefork")
    send_raw(conn, "prefork", "e8")
    assert [e.key for e in rec.wait_events(1)] == [(8,)]
