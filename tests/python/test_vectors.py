"""The golden vectors (tests/vectors.json) through the Python codec and the SQL functions.

Each vector is a test of its own, named after it, on both sides: Python (pure) and SQL on the
real server (one database for the module, cloned from the test template).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from wire_support import VECTORS, database_from_template, drain, json_value, same_json

import pghub
from pghub import (
    InvalidKey,
    InvalidPayload,
    InvalidTopic,
    InvalidValue,
    PayloadTooLarge,
    PghubError,
    channel,
    decode_event,
    decode_payload,
    encode_payload,
)

ERRORS: dict[str, type[PghubError]] = {
    cls.__name__: cls for cls in (InvalidTopic, InvalidKey, InvalidValue, PayloadTooLarge)
}
TOPIC = "t"  # the topic of every valid vector sent through NOTIFY


def vectors(section: str, where: str | None = None) -> pytest.MarkDecorator:
    """pytest params of a section, each with its vector's name as id."""
    items = VECTORS[section]
    if where is not None:
        items = [v for v in items if v.get(where) is not None]
    return pytest.mark.parametrize(
        "vector", [pytest.param(v, id=v.get("name", v.get("topic"))) for v in items]
    )


@pytest.fixture(scope="module")
def module_conn(pg_server: Any) -> Iterator[psycopg.Connection[Any]]:
    with (
        database_from_template(pg_server) as dsn,
        psycopg.connect(dsn, autocommit=True) as conn,
    ):
        yield conn


@pytest.fixture
def db(module_conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The module's connection, listening to nothing, with no notification pending."""
    module_conn.execute("UNLISTEN *")
    drain(module_conn)
    return module_conn


def listen(conn: psycopg.Connection[Any], *channels: str) -> None:
    for name in channels:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(name)))


def says_offset(message: str, offset: int) -> bool:
    return re.search(rf"\bbyte {offset}\b", message) is not None


# --- valid events: exact payload both ways ------------------------------------------------


@vectors("valid")
def test_valid_python_encodes_exactly(vector: dict[str, Any]) -> None:
    assert encode_payload(vector["key"], json_value(vector["value"])) == vector["payload"]


@vectors("valid")
def test_valid_python_decodes(vector: dict[str, Any]) -> None:
    key, value = decode_payload(vector["payload"])
    assert key == tuple(vector["key"] or ())
    assert all(type(k) is int for k in key)
    want = json_value(vector["value"])
    assert (value is None) if want is None else same_json(value, want)
    assert encode_payload(key, value) == vector["payload"]  # the decoded event is the same
    assert decode_event(TOPIC, vector["payload"]) == (TOPIC, key, value)


@vectors("valid")
def test_valid_sql_encodes_and_decodes(db: psycopg.Connection[Any], vector: dict[str, Any]) -> None:
    row = db.execute(
        "SELECT pghub.encode(%(key)s::bigint[], %(value)s::jsonb),"
        " d.key, d.value IS NULL, d.value = %(value)s::jsonb"
        " FROM pghub.decode(%(payload)s) AS d",
        {"key": vector["key"], "value": vector["value"], "payload": vector["payload"]},
    ).fetchone()
    assert row is not None
    payload, key, value_is_null, value_equal = row
    assert payload == vector["payload"]
    assert key == (vector["key"] or [])
    if json_value(vector["value"]) is None:
        assert value_is_null
    else:
        assert value_equal is True


@vectors("valid")
def test_valid_travels_through_notify(db: psycopg.Connection[Any], vector: dict[str, Any]) -> None:
    """SQL pghub.notify arrives as the exact payload; a Python-sent one decodes in SQL."""
    listen(db, channel(TOPIC))
    db.execute(
        "SELECT pghub.notify(%s, %s::bigint[], %s::jsonb)",
        (TOPIC, vector["key"], vector["value"]),
    )
    sent = encode_payload(vector["key"], json_value(vector["value"]))
    db.execute("SELECT pg_notify(%s, %s)", (channel(TOPIC), sent))
    notes = drain(db)
    assert [(n.channel, n.payload) for n in notes] == [(TOPIC, vector["payload"])] * 2
    row = db.execute(
        "SELECT d.key, d.value IS NOT DISTINCT FROM %s::jsonb FROM pghub.decode(%s) AS d",
        (vector["value"] if json_value(vector["value"]) is not None else None, notes[1].payload),
    ).fetchone()
    assert row == ((vector["key"] or []), True)


# --- decode-only payloads --------------------------------------------------------------


@vectors("decode_only")
def test_decode_only_python(vector: dict[str, Any]) -> None:
    key, value = decode_payload(vector["payload"])
    assert key == tuple(vector["key"])
    want = json_value(vector["value"])
    assert (value is None) if want is None else same_json(value, want)


@vectors("decode_only")
def test_decode_only_sql(db: psycopg.Connection[Any], vector: dict[str, Any]) -> None:
    row = db.execute(
        "SELECT d.key, d.value IS NULL, d.value = %s::jsonb FROM pghub.decode(%s) AS d",
        (vector["value"], vector["payload"]),
    ).fetchone()
    assert row is not None
    assert row[0] == vector["key"]
    if vector["value"] is None or json_value(vector["value"]) is None:
        assert row[1] is True
    else:
        assert row[2] is True


# --- rejected payloads -------------------------------------------------------------------


@vectors("invalid_payloads")
def test_invalid_payload_python(vector: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload) as caught:
        decode_payload(vector["payload"])
    assert caught.value.offset == vector["offset"]
    assert says_offset(str(caught.value), vector["offset"]), str(caught.value)
    with pytest.raises(InvalidPayload):
        decode_event(TOPIC, vector["payload"])


@vectors("invalid_payloads")
def test_invalid_payload_sql(db: psycopg.Connection[Any], vector: dict[str, Any]) -> None:
    with pytest.raises(psycopg.Error) as caught:
        db.execute("SELECT * FROM pghub.decode(%s)", (vector["payload"],))
    assert caught.value.sqlstate == "22P02"
    message = caught.value.diag.message_primary or ""
    assert says_offset(message, vector["offset"]), message


# --- topics ------------------------------------------------------------------------------


@vectors("topics")
def test_topic_python(vector: dict[str, Any]) -> None:
    assert channel(vector["topic"]) == vector["channel"]


@vectors("topics")
def test_topic_sql_and_notify(db: psycopg.Connection[Any], vector: dict[str, Any]) -> None:
    row = db.execute("SELECT pghub.channel(%s)", (vector["topic"],)).fetchone()
    assert row == (vector["channel"],)
    listen(db, vector["channel"])
    db.execute("SELECT pghub.notify(%s, ARRAY[1]::bigint[])", (vector["topic"],))
    db.execute("SELECT pg_notify(%s, %s)", (channel(vector["topic"]), encode_payload([2])))
    notes = drain(db)
    assert [(n.channel, n.payload) for n in notes] == [
        (vector["channel"], "e1"),
        (vector["channel"], "e2"),
    ]
    assert decode_event(notes[0].channel, notes[0].payload) == (vector["channel"], (1,), None)


# --- invalid events: refused before anything is sent -------------------------------------


def could_listen(topic: str) -> list[str]:
    """Channels a wrongly sent event would reach, where LISTEN can name them."""
    names = {topic, topic.lower(), TOPIC}
    return [n for n in names if 0 < len(n.encode()) <= 63]


@vectors("invalid_events")
def test_invalid_event_python(db: psycopg.Connection[Any], vector: dict[str, Any]) -> None:
    listen(db, *could_listen(vector["topic"]))
    expected = ERRORS[vector["python_error"]]
    with pytest.raises(PghubError) as caught:
        db.execute(
            "SELECT pg_notify(%s, %s)",
            (channel(vector["topic"]), encode_payload(vector["key"], json_value(vector["value"]))),
        )
    assert type(caught.value) is expected
    assert isinstance(caught.value, ValueError)
    if expected is InvalidTopic:
        assert repr(vector["topic"]) in str(caught.value)
    if expected is PayloadTooLarge:
        assert isinstance(caught.value, PayloadTooLarge)
        assert caught.value.limit == pghub.MAX_PAYLOAD_BYTES == 7999
        assert caught.value.size > 7999
        assert f"{caught.value.size} bytes" in str(caught.value)
        if "8000 bytes" in vector["name"]:
            assert caught.value.size == 8000
    assert drain(db) == []


@vectors("invalid_events", where="sqlstate")
def test_invalid_event_sql(db: psycopg.Connection[Any], vector: dict[str, Any]) -> None:
    listen(db, *could_listen(vector["topic"]))
    with pytest.raises(psycopg.Error) as caught:
        db.execute(
            "SELECT pghub.notify(%s, %s::bigint[], %s::jsonb)",
            (vector["topic"], vector["key"], vector["value"]),
        )
    assert caught.value.sqlstate == vector["sqlstate"]
    message = caught.value.diag.message_primary or ""
    if vector["python_error"] == "InvalidTopic":
        assert vector["topic"] in message
        with pytest.raises(psycopg.Error) as again:
            db.execute("SELECT pghub.channel(%s)", (vector["topic"],))
        assert again.value.sqlstate == vector["sqlstate"]
    else:  # pghub.encode refuses the same key or size
        with pytest.raises(psycopg.Error) as again:
            db.execute(
                "SELECT pghub.encode(%s::bigint[], %s::jsonb)", (vector["key"], vector["value"])
            )
        assert again.value.sqlstate == vector["sqlstate"]
    if vector["python_error"] == "PayloadTooLarge":
        with pytest.raises(PayloadTooLarge) as python_side:
            encode_payload(vector["key"], json_value(vector["value"]))
        assert str(python_side.value.size) in message
        assert "7999" in message
    assert drain(db) == []
