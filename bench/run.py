"""Run the benchmark from a clone without installing the ``pghub`` command.

    python bench/run.py --quick                 # the same as: pghub bench --quick
    python bench/run.py --json bench/results.json

The harness is :mod:`pghub.tools.bench`, its command line :mod:`pghub.cli.bench`; see
docs/performance.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))

from pghub.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
