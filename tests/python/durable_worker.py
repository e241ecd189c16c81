"""A named durable consumer in a process of its own, for tests that kill it.

    python durable_worker.py DSN TOPIC NAME OUTFILE

Appends one line ``writer seq`` to OUTFILE for each event (key ``[writer, seq]``) its callback
receives, flushed at once: what the file holds is what the callback saw, even after SIGKILL.
Prints ``ready`` once the hub is connected and stops on SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading

import pghub


def main() -> None:
    dsn, topic, name, outfile = sys.argv[1:5]
    out = open(outfile, "a", buffering=1, encoding="ascii")  # noqa: SIM115 (closed at exit)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def record(event: pghub.Event) -> None:
        if event.advisory is None:
            writer, seq = event.key
            out.write(f"{writer} {seq}\n")

    hub = pghub.Hub(dsn, reconnect_delay=0.05, reconnect_max_delay=0.5, connect_timeout=5)
    hub.consumer(record, topic, durable=name, since="earliest")
    hub.start()
    print("ready", flush=True)
    stop.wait()
    hub.stop()
    out.close()


if __name__ == "__main__":
    main()
