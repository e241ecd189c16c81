"""The benchmark's progress: one status line on stderr, live on a terminal."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """One status line on stderr: run, scenario, side, phase, events sent and received."""

    def __init__(self, enabled: bool, stream: Any = None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.live = enabled and self.stream.isatty()
        self.run = ""
        self.label = ""
        self.what = ""
        self.expected = 0
        self.sent_count = 0
        self.shared: Any = None
        self._shown_at = 0.0

    def start(self, scenario: str, side: str, expected: int, shared: Any) -> None:
        self.label = f"{scenario} {side}".rstrip()
        self.expected, self.sent_count, self.shared = expected, 0, shared

    def phase(self, what: str) -> None:
        self.what = what
        self._show(force=True)

    def sent(self, count: int) -> None:
        self.sent_count = count
        now = time.monotonic()
        if now - self._shown_at > 0.25:
            self._show(force=False)

    def tick(self) -> None:
        self._show(force=False)

    def end(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def note(self, text: str) -> None:
        if self.enabled:
            self.end()
            self.stream.write(text + "\n")
            self.stream.flush()

    def _show(self, force: bool) -> None:
        if not self.enabled or not (self.live or force):
            return
        self._shown_at = time.monotonic()
        received = self.shared.value if self.shared is not None else 0
        line = f"{self.run}{self.label}: {self.what}"
        if self.expected:  # not the durable scenarios, which name their phases only
            line += f", sent {self.sent_count:,}, received {received:,} of {self.expected:,}"
        if self.live:
            self.stream.write("\r\x1b[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
