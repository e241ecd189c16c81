"""Python and SQL agree on the wire, on realistic random events (hypothesis, real server).

Directions, each its own test of ``PGHUB_CROSS_EXAMPLES`` examples (500 by default):
- Python to SQL: SQL decodes the Python payload to the same key and jsonb, and SQL's own
  payload for the event is the same text, byte for byte;
- SQL to Python: Python decodes SQL's payload to the same key and value;
- end to end, SQL ``pghub.notify`` to a psycopg LISTEN connection, decoded in Python;
- end to end, Python ``pg_notify(channel, encode_payload(...))``, decoded in SQL.
Values reach SQL as ``json.dumps`` text cast to jsonb: floats as their repr, which numeric
reads exactly, so both sides see the same numbers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from psycopg import sql
from wire_support import database_from_template, drain, event_keys, json_values, same_json

from pghub import (
    InvalidPayload,
    PayloadTooLarge,
    channel,
    decode_event,
    decode_payload,
    encode_payload,
)

settings.register_profile(
    "pghub-cross",
    max_examples=int(os.environ.get("PGHUB_CROSS_EXAMPLES", "500")),
    deadline=None,  # a shared, noisy machine: time is checked by the whole file's run time
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CROSS = settings.get_profile("pghub-cross")

topics = st.from_regex(r"[A-Za-z0-9_]{1,63}", fullmatch=True)
WAIT = 5.0  # seconds an event may take to arrive before the test fails


@pytest.fixture(scope="module")
def wire_dsn(pg_server: Any) -> Iterator[str]:
    """One database for the module: hypothesis reuses it across examples."""
    with database_from_template(pg_server) as conninfo:
        yield conninfo


@pytest.fixture(scope="module")
def sender(wire_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(wire_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def listener(wire_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(wire_dsn, autocommit=True) as conn:
        yield conn


def as_jsonb_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def python_payload(key: list[int] | None, value: Any) -> str | None:
    """Python's payload, or None where Python finds it too large."""
    try:
        payload = encode_payload(key, value)
    except PayloadTooLarge:
        event("payload too large")
        return None
    event("payload of 4000 bytes or more" if len(payload.encode()) >= 4000 else "payload")
    return payload


def expect_too_large_in_sql(conn: psycopg.Connection[Any], key: Any, value: Any) -> None:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("SELECT pghub.encode(%s::bigint[], %s::jsonb)", (key, as_jsonb_text(value)))
    assert caught.value.sqlstate == "54000"


@CROSS
@given(key=event_keys, value=json_values)
def test_python_payload_is_sql_payload_and_decodes_in_sql(
    sender: psycopg.Connection[Any], key: list[int] | None, value: Any
) -> None:
    payload = python_payload(key, value)
    if payload is None:
        expect_too_large_in_sql(sender, key, value)
        return
    row = sender.execute(
        "SELECT pghub.encode(%(key)s::bigint[], %(value)s::jsonb),"
        " d.key, d.value IS NOT DISTINCT FROM %(value)s::jsonb"
        " FROM pghub.decode(%(payload)s) AS d",
        {"key": key, "value": as_jsonb_text(value), "payload": payload},
    ).fetchone()
    assert row == (payload, key or [], True)


@CROSS
@given(key=event_keys, value=json_values)
def test_sql_payload_decodes_in_python(
    sender: psycopg.Connection[Any], key: list[int] | None, value: Any
) -> None:
    if python_payload(key, value) is None:
        expect_too_large_in_sql(sender, key, value)
        return
    row = sender.execute(
        "SELECT pghub.encode(%s::bigint[], %s::jsonb)", (key, as_jsonb_text(value))
    ).fetchone()
    assert row is not None
    got_key, got_value = decode_payload(row[0])
    assert got_key == tuple(key or ())
    assert (got_value is None) if value is None else same_json(got_value, value)


@CROSS
@given(topic=topics, key=event_keys, value=json_values)
def test_sql_notify_arrives_and_decodes_in_python(
    sender: psycopg.Connection[Any],
    listener: psycopg.Connection[Any],
    topic: str,
    key: list[int] | None,
    value: Any,
) -> None:
    name = channel(topic)
    listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(name)))
    try:
        if python_payload(key, value) is None:
            with pytest.raises(psycopg.Error) as caught:
                sender.execute(
                    "SELECT pghub.notify(%s, %s::bigint[], %s::jsonb)",
                    (topic, key, as_jsonb_text(value)),
                )
            assert caught.value.sqlstate == "54000"
            assert drain(listener) == []  # nothing was sent
            return
        sender.execute(
            "SELECT pghub.notify(%s, %s::bigint[], %s::jsonb)", (topic, key, as_jsonb_text(value))
        )
        notes = list(listener.notifies(timeout=WAIT, stop_after=1))
        assert len(notes) == 1, f"no event on {name!r} within {WAIT} s"
        event = decode_event(notes[0].channel, notes[0].payload)
        assert event.topic == name
        assert event.key == tuple(key or ())
        assert (event.value is None) if value is None else same_json(event.value, value)
    finally:
        listener.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(name)))


@CROSS
@given(topic=topics, key=event_keys, value=json_values)
def test_python_notify_arrives_and_decodes_in_sql(
    sender: psycopg.Connection[Any],
    listener: psycopg.Connection[Any],
    topic: str,
    key: list[int] | None,
    value: Any,
) -> None:
    name = channel(topic)
    listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(name)))
    try:
        payload = python_payload(key, value)
        if payload is None:
            with pytest.raises(PayloadTooLarge):
                sender.execute(
                    "SELECT pg_notify(%s, %s)", (channel(topic), encode_payload(key, value))
                )
            assert drain(listener) == []  # nothing was sent
            return
        sender.execute("SELECT pg_notify(%s, %s)", (channel(topic), payload))
        notes = list(listener.notifies(timeout=WAIT, stop_after=1))
        assert len(notes) == 1, f"no event on {name!r} within {WAIT} s"
        assert notes[0].channel == name
        row = listener.execute(
            "SELECT d.key, d.value IS NOT DISTINCT FROM %s::jsonb FROM pghub.decode(%s) AS d",
            (as_jsonb_text(value), notes[0].payload),
        ).fetchone()
        assert row == (key or [], True)
    finally:
        listener.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(name)))


@settings(CROSS, max_examples=200)
@given(
    number=st.decimals(allow_nan=False, allow_infinity=False).filter(
        lambda d: -400 < int(d.as_tuple().exponent) < 400 and len(d.as_tuple().digits) < 400
    )
)
def test_decimal_prints_as_sql_numeric(sender: psycopg.Connection[Any], number: Decimal) -> None:
    row = sender.execute(
        "SELECT pghub.encode(NULL, jsonb_build_array(%s::numeric))", (str(number),)
    ).fetchone()
    assert row == (encode_payload(None, [number]),)


# Characters that matter to the grammar, and a few longer pieces, to mutate valid payloads.
_GRAMMAR_CHARACTERS = 'e0123456789,:-+ ."\\u{}[]tfnNaI\t\n$é'
_PIECES = ["\\u0000", "\\ud800", "null", "1e400", "1e200000", "1e-20000"]
_MUTATIONS = st.sampled_from([*_GRAMMAR_CHARACTERS, *_PIECES])


@st.composite
def mutated_payloads(draw: st.DrawFn) -> str:
    """A valid payload with a few characters inserted, deleted or replaced."""
    payload = python_payload(draw(event_keys), draw(json_values)) or "e"
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(payload)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        cut = at + 1 if action != "insert" else at
        middle = "" if action == "delete" else draw(_MUTATIONS)
        payload = payload[:at] + middle + payload[cut:]
    return payload


@settings(CROSS, max_examples=300)
@given(payload=mutated_payloads())
def test_python_and_sql_accept_and_reject_alike(
    sender: psycopg.Connection[Any], payload: str
) -> None:
    """Strictness is the same on both sides: same verdict, same key and value, same offset."""
    python_error: InvalidPayload | None = None
    try:
        key, value = decode_payload(payload)
    except InvalidPayload as exc:
        python_error = exc
    if python_error is not None:
        with pytest.raises(psycopg.Error) as caught:
            sender.execute("SELECT * FROM pghub.decode(%s)", (payload,))
        assert caught.value.sqlstate == "22P02"
        message = caught.value.diag.message_primary or ""
        assert f"at byte {python_error.offset}:" in message, (python_error, message)
        event("both reject")
        return
    event("both accept")
    row = sender.execute(
        "SELECT d.key, d.value::text FROM pghub.decode(%s) AS d", (payload,)
    ).fetchone()
    assert row is not None
    assert row[0] == list(key)
    if value is None:
        assert row[1] is None
    else:  # jsonb's text, read by Python: floats round alike on both sides
        assert row[1] is not None
        assert same_json(value, decode_payload("e:" + row[1])[1])
