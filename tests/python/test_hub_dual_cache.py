"""Two caches kept in step with a table by trigger events, compared row by row at the end.

A seeded workload inserts, updates (values and keys), deletes, truncates, rolls back and
runs multi-row statements. Each cache lives behind its own hub and learns of the changes
only through events; at the end, once a sentinel sent after the last change has reached
it, each must equal the table exactly.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import psycopg
from hubkit import HubPool, Recorder

from pghub import Action, Event

Row = dict[str, Any]
NAMES = ["plain", "héllo wörld", "日本語", "$$ dollar $$", 'quote " and \\', "", "tab\tnew\nline"]

TABLE = """
CREATE TABLE items (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    qty integer NOT NULL,
    tags jsonb NOT NULL DEFAULT '{}'
)
"""

# Our own trigger, on pghub.notify: one event per row change. PostgreSQL folds identical
# notifications within a transaction, so each payload carries a sequence number: a row that
# returns to an earlier state inside one transaction must still produce its own event.
OWN_TRIGGER = """
CREATE SEQUENCE items_event_seq;
CREATE FUNCTION publish_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pghub.notify('items', NULL, jsonb_build_object(
            'op', 'clear', 'seq', nextval('items_event_seq')));
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.id <> NEW.id) THEN
        PERFORM pghub.notify('items', ARRAY[OLD.id], jsonb_build_object(
            'op', 'del', 'seq', nextval('items_event_seq')));
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pghub.notify('items', ARRAY[NEW.id], jsonb_build_object(
            'op', 'put', 'row', to_jsonb(NEW), 'seq', nextval('items_event_seq')));
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER items_publish AFTER INSERT OR UPDATE OR DELETE ON items
    FOR EACH ROW EXECUTE FUNCTION publish_items();
CREATE TRIGGER items_publish_truncate AFTER TRUNCATE ON items
    FOR EACH STATEMENT EXECUTE FUNCTION publish_items();
"""


def table_rows(conn: psycopg.Connection[Any]) -> dict[int, Row]:
    rows = conn.execute("SELECT id, to_jsonb(i) FROM items AS i").fetchall()
    return {int(r[0]): r[1] for r in rows}


# --- the caches: each is a consumer callback holding a dict id -> row ---


class Cache:
    """What every cache shares: the dict, a lock, and the sentinel count it has seen."""

    def __init__(self, name: str) -> None:
        self.rows: dict[int, Row] = {}
        self.lock = threading.Lock()
        self.recorder = Recorder(name, then=self.apply)

    def apply(self, event: Event) -> None:
        raise NotImplementedError

    def snapshot(self) -> dict[int, Row]:
        with self.lock:
            return dict(self.rows)

    def wait_sentinel(self, number: int, timeout: float = 30.0) -> None:
        self.recorder.wait_for(
            lambda evs: any(
                e.topic is not None
                and isinstance(e.value, dict)
                and e.value.get("sentinel") == number
                for e in evs[-50:]
            ),
            timeout,
            f"sentinel {number}",
        )


class OwnEventCache(Cache):
    """Fed by the test's own trigger: put (with the row), del, clear."""

    def apply(self, event: Event) -> None:
        if event.topic is None or "op" not in event.value:
            return
        op = event.value["op"]
        with self.lock:
            if op == "put":
                self.rows[event.key[0]] = event.value["row"]
            elif op == "del":
                self.rows.pop(event.key[0], None)
            elif op == "clear":
                self.rows.clear()


class RowDataCache(Cache):
    """Fed by pghub.row_trigger with '+data': ins/upd carry the row, del the key, tru clears."""

    def apply(self, event: Event) -> None:
        if event.topic is None or "op" not in event.value:
            return
        value = event.value
        with self.lock:
            if value["op"] == "tru":
                self.rows.clear()
            elif value["op"] == "del":
                self.rows.pop(event.key[0], None)
            else:
                assert "data" in value, value  # no row here is near 7999 bytes
                if "old_key" in value:
                    self.rows.pop(value["old_key"][0], None)
                self.rows[event.key[0]] = value["data"]


class ReloadCache(Cache):
    """Fed by pghub.statement_trigger (keys only): reloads the keys it is told of."""

    def __init__(self, name: str, dsn: str) -> None:
        super().__init__(name)
        self.reader = psycopg.connect(dsn, autocommit=True)
        self.events = 0

    def apply(self, event: Event) -> None:
        if event.topic is None or "op" not in event.value:
            return
        value = event.value
        self.events += 1
        if value["op"] == "tru":
            with self.lock:
                self.rows.clear()
            return
        assert value["arity"] == 1
        ids = list(event.key)
        assert len(ids) == value["count"]
        found: dict[int, Row] = dict(
            self.reader.execute(
                "SELECT id, to_jsonb(i) FROM items AS i WHERE id = ANY(%s)", (ids,)
            ).fetchall()
        )
        with self.lock:
            for id_ in ids:
                if id_ in found:
                    self.rows[id_] = found[id_]
                else:
                    self.rows.pop(id_, None)

    def close(self) -> None:
        self.reader.close()


# --- the workload ---


class Workload:
    """A seeded mix of changes to ``items``, in transactions, some rolled back."""

    def __init__(self, conn: psycopg.Connection[Any], seed: int) -> None:
        self.conn = conn
        self.rng = random.Random(seed)
        self.next_id = 1
        self.alive: set[int] = set()
        self.committed = 0
        self.rolled_back = 0

    def fresh_id(self) -> int:
        self.next_id += 1
        # Spread over the int64 range now and then: keys are bigint end to end.
        return self.next_id if self.rng.random() < 0.9 else self.next_id * 10**12

    def run(self, transactions: int) -> None:
        for number in range(transactions):
            before = set(self.alive)
            rollback = self.rng.random() < 0.1
            try:
                with self.conn.transaction():
                    for _ in range(self.rng.randint(1, 4)):
                        self.step()
                    if number == transactions // 2:
                        self.conn.execute("TRUNCATE items")
                        self.alive.clear()
                    if rollback:
                        raise psycopg.Rollback()
                self.committed += 1
            finally:
                if rollback:
                    self.alive = before
                    self.rolled_back += 1

    def step(self) -> None:
        rng, conn = self.rng, self.conn
        choice = rng.random()
        alive = sorted(self.alive)
        if choice < 0.35 or len(alive) < 5:
            id_ = self.fresh_id()
            conn.execute(
                "INSERT INTO items (id, name, qty, tags) VALUES (%s, %s, %s, %s::jsonb)",
                (id_, rng.choice(NAMES), rng.randint(0, 10**6), f'{{"t": [{rng.randint(0, 9)}]}}'),
            )
            self.alive.add(id_)
        elif choice < 0.6:
            conn.execute(
                "UPDATE items SET qty = %s, name = %s WHERE id = %s",
                (rng.randint(0, 10**6), rng.choice(NAMES), rng.choice(alive)),
            )
        elif choice < 0.7:
            old, new = rng.choice(alive), self.fresh_id()
            conn.execute("UPDATE items SET id = %s WHERE id = %s", (new, old))
            self.alive.discard(old)
            self.alive.add(new)
        elif choice < 0.8:
            id_ = rng.choice(alive)
            conn.execute("DELETE FROM items WHERE id = %s", (id_,))
            self.alive.discard(id_)
        elif choice < 0.9:
            conn.execute(
                "UPDATE items SET qty = qty + 1, tags = tags || '{\"bumped\": true}'"
                " WHERE id %% 5 = %s",
                (rng.randint(0, 4),),
            )
        elif choice < 0.97:
            gone = conn.execute(
                "DELETE FROM items WHERE qty %% 7 = %s RETURNING id", (rng.randint(0, 6),)
            ).fetchall()
            self.alive.difference_update(int(r[0]) for r in gone)
        else:
            # A statement of 1500 rows: many events (row level) or several parts (statement).
            first = self.next_id + 1
            self.next_id += 1500
            conn.execute(
                "INSERT INTO items (id, name, qty) SELECT g, 'bulk ' || g, g %% 1000"
                " FROM generate_series(%s::bigint, %s::bigint) AS g",
                (first, self.next_id),
            )
            self.alive.update(range(first, self.next_id + 1))


def assert_same_rows(truth: dict[int, Row], **caches: dict[int, Row]) -> None:
    """Row by row: every cache holds exactly the table's rows, with equal contents."""
    for name, cache in caches.items():
        missing = sorted(truth.keys() - cache.keys())
        extra = sorted(cache.keys() - truth.keys())
        assert not missing, f"{name} misses {len(missing)} rows, e.g. {missing[:5]}"
        assert not extra, f"{name} holds {len(extra)} deleted rows, e.g. {extra[:5]}"
        for id_ in sorted(truth):
            assert cache[id_] == truth[id_], f"{name}, row {id_}: {cache[id_]} != {truth[id_]}"


def send_sentinel(conn: psycopg.Connection[Any], topics: list[str], number: int) -> None:
    for topic in topics:
        conn.execute(
            "SELECT pghub.notify(%s, NULL, jsonb_build_object('sentinel', %s::int))",
            (topic, number),
        )


def test_two_caches_follow_our_own_trigger_events(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    conn.execute(TABLE)
    conn.execute(OWN_TRIGGER)
    caches = [OwnEventCache("cache_a"), OwnEventCache("cache_b")]
    for cache in caches:
        hub = hubs.started(dsn)  # one hub each: two sessions, two independent views
        hub.consumer(cache.recorder, "items")
        cache.recorder.wait_advisory(Action.SUBSCRIBE, "items")
    work = Workload(conn, seed=3)
    work.run(150)
    send_sentinel(conn, ["items"], 1)
    for cache in caches:
        cache.wait_sentinel(1)
    truth = table_rows(conn)
    assert len(truth) > 100  # the workload left a real table behind
    assert work.rolled_back > 0
    assert_same_rows(truth, cache_a=caches[0].snapshot(), cache_b=caches[1].snapshot())
    assert [c.recorder.actions() for c in caches] == [[Action.CONNECT, Action.SUBSCRIBE]] * 2


def test_two_caches_follow_the_extension_row_and_statement_triggers(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    conn.execute(TABLE)
    # Statement level through publish_table: keys only, few events; the cache reloads.
    assert conn.execute("SELECT pghub.publish_table('items', 'items_keys')").fetchone() == (
        "items_keys",
    )
    # Row level with the row's data, on another topic (publish_table keeps one publication
    # per table, so this one is declared by hand with the extension's trigger function).
    conn.execute(
        "CREATE TRIGGER items_rows AFTER INSERT OR UPDATE OR DELETE ON items"
        " FOR EACH ROW EXECUTE FUNCTION pghub.row_trigger('+data', 'items_rows')"
    )
    conn.execute(
        "CREATE TRIGGER items_rows_truncate AFTER TRUNCATE ON items"
        " FOR EACH STATEMENT EXECUTE FUNCTION pghub.row_trigger('items_rows')"
    )
    by_row = RowDataCache("by_row")
    by_key = ReloadCache("by_key", dsn)
    try:
        row_hub = hubs.started(dsn)
        row_hub.consumer(by_row.recorder, "items_rows")
        by_row.recorder.wait_advisory(Action.SUBSCRIBE, "items_rows")
        key_hub = hubs.started(dsn)
        key_hub.consumer(by_key.recorder, "items_keys")
        by_key.recorder.wait_advisory(Action.SUBSCRIBE, "items_keys")
        work = Workload(conn, seed=11)
        work.run(150)
        send_sentinel(conn, ["items_rows", "items_keys"], 1)
        by_row.wait_sentinel(1)
        by_key.wait_sentinel(1)
        truth = table_rows(conn)
        assert len(truth) > 100
        assert_same_rows(truth, by_row=by_row.snapshot(), by_key=by_key.snapshot())
        # Statement-level events are far fewer than row events for the same changes.
        assert 0 < by_key.events < len(by_row.recorder.events())
        for hub in (row_hub, key_hub):
            assert hub.stats().invalid_payloads == 0
            assert hub.stats().overflow_drops == 0
    finally:
        by_key.close()


def test_a_row_that_returns_to_an_earlier_state_in_one_transaction(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    # PostgreSQL delivers identical (channel, payload) pairs of one transaction once. A row
    # updated 1 -> 2 -> 3 -> 2 inside one transaction must still leave a row-data cache at 2.
    conn.execute(TABLE)
    conn.execute(
        "CREATE TRIGGER items_rows AFTER INSERT OR UPDATE OR DELETE ON items"
        " FOR EACH ROW EXECUTE FUNCTION pghub.row_trigger('+data', 'items_rows')"
    )
    conn.execute(OWN_TRIGGER)
    row_data, own = RowDataCache("row_data"), OwnEventCache("own")
    hub = hubs.started(dsn)
    hub.consumer(row_data.recorder, "items_rows")
    hub.consumer(own.recorder, "items")
    row_data.recorder.wait_advisory(Action.SUBSCRIBE, "items_rows")
    own.recorder.wait_advisory(Action.SUBSCRIBE, "items")
    conn.execute("INSERT INTO items (id, name, qty) VALUES (1, 'x', 1)")
    with conn.transaction():
        for qty in (2, 3, 2):
            conn.execute("UPDATE items SET qty = %s WHERE id = 1", (qty,))
    send_sentinel(conn, ["items_rows", "items"], 1)
    row_data.wait_sentinel(1)
    own.wait_sentinel(1)
    truth = table_rows(conn)
    assert truth[1]["qty"] == 2
    assert_same_rows(truth, own=own.snapshot())  # our trigger numbers its events
    assert_same_rows(truth, row_data=row_data.snapshot())
