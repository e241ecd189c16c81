-- pghub 0.3: events (topic, bigint[] key, jsonb value) over LISTEN/NOTIFY.
-- The wire format is docs/wire-format.md; the Python encoder writes the same bytes.

\echo Use "CREATE EXTENSION pghub" to load this file. \quit

-- ==== Core: channel, encode, decode, notify (the foundation) ====

-- ==== Triggers: row and statement publishing ====
