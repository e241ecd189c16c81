"""The benchmark behind ``pghub bench``: the same workload through raw psycopg and through
pghub, in one run (docs/performance.md says what each figure means, and the targets).

Each measurement runs its listening side in a child process of its own, so that the CPU time
and peak RSS it reports belong to the listener alone; the sending side runs in the
benchmark's process. One module a job:

- :mod:`.scenarios`: the workloads, their payloads, what a measurement gives (no harness: the
  command's ``--help`` reads it);
- :mod:`.listeners`: the listening side, baseline and pghub, in the child process;
- :mod:`.senders`: the sending side, baseline and pghub;
- :mod:`.runner`: one measurement, the runs, the memory check;
- :mod:`.report`: medians, ratios, targets, the printed table;
- :mod:`.progress`: the status line on stderr.

This package imports nothing at import time: ``pghub bench --help`` loads only scenarios.
"""
