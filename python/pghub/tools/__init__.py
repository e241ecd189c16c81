"""Programs around the library, not the library: what ``pghub demo`` and ``pghub bench`` run.

- :mod:`pghub.tools.private_server`: a throwaway PostgreSQL server in a directory of its own
  (the demo's, and the tests').
- :mod:`pghub.tools.bench`: the benchmark harness, pghub against raw psycopg.

The library never imports this package; this package imports the library and nothing of
:mod:`pghub.cli` (the commands import it, never the other way round).
"""
