"""Private PostgreSQL servers of every supported version, and the runner of make test-matrix."""
