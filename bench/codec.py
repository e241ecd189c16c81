"""The wire codec in isolation: encode_payload and decode_payload, this tree against a baseline.

The baseline is the pghub package of a git revision (by default the one before the codec
work of this version), unpacked into a temporary directory and imported under another name.
Each round times both codecs back to back on the same events (CPU time of this process, so
that time spent descheduled on a shared machine does not count); the table shows the median
over the rounds of the time per call and of the ratio baseline / this tree (above 1: faster).

    python bench/codec.py                      # every workload, 9 rounds
    python bench/codec.py --rounds 15 small    # some workloads: tiny small medium 4k-order 4k-text
    python bench/codec.py --baseline HEAD~3    # another baseline revision

"decode" reads the JSON part with json's scanner (the pure path); where the pghub[msgspec]
extra is installed, "decode with msgspec" is the same call as pghub makes it by default then.
With ``--json-libraries``, it also times the JSON part alone in json's scanner and in
orjson and msgspec where they are importable (what an optional accelerator could gain).
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

from pghub import _jsonread, wire  # noqa: E402  (this tree's pghub, whatever is installed)

# The last revision before the faster decoder and encoder.
DEFAULT_BASELINE = "0c41265"


def _line_item(n: int) -> dict[str, Any]:
    return {"sku": 100000 + n, "name": f"Café crème n°{n}", "qty": n % 7 + 1, "price": 4.85}


WORKLOADS: dict[str, tuple[tuple[int, ...], Any]] = {
    # pghub bench's event: its number and its send time (about 40 bytes)
    "tiny": ((123456,), {"n": 123456, "t": 81234567890123}),
    # a flat object of five members (about 70 bytes)
    "small": ((42,), {"id": 42, "status": "paid", "total": 99.5, "user": 7, "ok": True}),
    # an order with five line items (about 500 bytes)
    "medium": (
        (42, 7),
        {"id": 42, "customer": "Zoë", "items": [_line_item(n) for n in range(5)], "total": 24.25},
    ),
    # the same with 62 line items (about 4 KB), non-ASCII text and floats
    "4k-order": (
        (42,),
        {"id": 42, "customer": "Zoë", "items": [_line_item(n) for n in range(62)], "total": 1.5},
    ),
    # pghub bench's padded event (about 4 KB of one ASCII string)
    "4k-text": ((123456,), {"n": 123456, "t": 81234567890123, "pad": "x" * 4000}),
}


def baseline_wire(revision: str, into: Path) -> ModuleType:
    """``pghub.wire`` of ``revision``, imported as ``pghub_baseline.wire``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "python/pghub"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into)  # our own repository's files
    (into / "python" / "pghub").rename(into / "pghub_baseline")
    sys.path.insert(0, str(into))
    return importlib.import_module("pghub_baseline.wire")


def per_call(function: Callable[[], object], calls: int) -> float:
    """CPU microseconds per call of ``function``, over ``calls`` calls."""
    started = time.process_time()
    for _ in range(calls):
        function()
    return (time.process_time() - started) / calls * 1e6


def calls_for(function: Callable[[], object]) -> int:
    """Enough calls for about 50 ms of CPU."""
    return max(200, int(0.05e6 / max(per_call(function, 200), 0.01)))


def compare(old: Callable[[], object], new: Callable[[], object], rounds: int) -> list[float]:
    """Median old time, median new time, median ratio old/new, over ``rounds`` rounds."""
    calls = calls_for(new)
    olds, news, ratios = [], [], []
    for _ in range(rounds):
        old_time = per_call(old, calls)
        new_time = per_call(new, calls)
        olds.append(old_time)
        news.append(new_time)
        ratios.append(old_time / new_time)
    return [statistics.median(olds), statistics.median(news), statistics.median(ratios)]


def json_libraries(rounds: int, names: list[str]) -> None:
    """The JSON part alone: json's scanner and msgspec as pghub calls them, and the plain
    loaders of orjson and msgspec (without pghub's float parser), where importable."""
    scan = _jsonread.PLAIN_READER.scan
    loaders: dict[str, Callable[[str], Any]] = {"json scanner": lambda text: scan(text, 0)}
    accelerated = _jsonread.msgspec_decoder()
    if accelerated is not None:
        loaders["pghub's msgspec"] = accelerated
    for module, attribute in (("orjson", "loads"), ("msgspec.json", "decode")):
        try:
            loaders[module] = getattr(importlib.import_module(module), attribute)
        except ImportError:
            print(f"({module} is not importable: skipped)")
    print(f"\n{'JSON part':<10} " + " ".join(f"{name:>15}" for name in loaders))
    for name in names:
        text = wire.encode_payload(*WORKLOADS[name]).partition(":")[2]
        times = []
        for load in loaders.values():
            call = partial(load, text)
            calls = calls_for(call)
            times.append(statistics.median(per_call(call, calls) for _ in range(rounds)))
        print(f"{name:<10} " + " ".join(f"{t:12.2f} us" for t in times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workloads", nargs="*", choices=[[], *WORKLOADS], default=[])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision")
    parser.add_argument("--json-libraries", action="store_true")
    args = parser.parse_args(argv)
    names = args.workloads or list(WORKLOADS)
    with tempfile.TemporaryDirectory() as scratch:
        old = baseline_wire(args.baseline, Path(scratch))
        print(
            f"CPU us per call, median of {args.rounds} rounds; ratio = {args.baseline} / this tree"
        )
        print(f"{'workload':<10} {'bytes':>5}  {'op':<20} {'baseline':>9} {'now':>9} {'ratio':>6}")
        for name in names:
            key, value = WORKLOADS[name]
            payload = wire.encode_payload(key, value)
            if old.encode_payload(key, value) != payload:
                raise SystemExit(f"{name}: the baseline encodes other bytes")
            if old.decode_payload(payload) != wire.decode_payload(payload):
                raise SystemExit(f"{name}: the baseline decodes another event")
            size = len(payload.encode())
            # (operation, baseline call, this tree's call, with the accelerator if installed)
            operations: list[tuple[str, Callable[[], object], Callable[[], object], bool]] = [
                (
                    "encode",
                    partial(old.encode_payload, key, value),
                    partial(wire.encode_payload, key, value),
                    False,
                ),
                (
                    "decode",
                    partial(old.decode_payload, payload),
                    partial(wire.decode_payload, payload),
                    False,
                ),
            ]
            if wire.ACCELERATOR is not None:
                operations.append(
                    (
                        f"decode with {wire.ACCELERATOR}",
                        partial(old.decode_payload, payload),
                        partial(wire.decode_payload, payload),
                        True,
                    )
                )
            accelerator = _jsonread.PLAIN_READER.fast
            for op, old_call, new_call, accelerated in operations:
                _jsonread.PLAIN_READER.fast = accelerator if accelerated else None
                try:
                    before, now, ratio = compare(old_call, new_call, args.rounds)
                finally:
                    _jsonread.PLAIN_READER.fast = accelerator
                print(f"{name:<10} {size:5d}  {op:<20} {before:9.2f} {now:9.2f} {ratio:5.2f}x")
    if args.json_libraries:
        json_libraries(args.rounds, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
