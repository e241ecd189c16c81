"""pghub: PostgreSQL LISTEN/NOTIFY as an event hub.

Every event is a topic (a notification channel), a key (a tuple of 64-bit integers) and a
JSON value. See README.md and docs/ for the wire format, the hub and the SQL extension.
"""

from __future__ import annotations

import logging as _logging

from ._consumer import Consumer
from ._registry import stats
from ._sqlnotify import async_sql_notify, sql_notify
from .aio import AsyncConsumer, AsyncHub, Subscription
from .errors import (
    ConnectFailed,
    ConsumerClosed,
    HubForked,
    HubStopped,
    InvalidKey,
    InvalidPayload,
    InvalidTopic,
    InvalidValue,
    PayloadTooLarge,
    PghubError,
    SendQueueFull,
)
from .events import Action, Advisory, DurableEvent, Event
from .hub import Hub, SyncSubscription
from .stats import HubStats, Stats
from .wire import MAX_PAYLOAD_BYTES, channel, decode_event, decode_payload, encode_payload

__version__ = "0.3.0"

# A library leaves logging to the application: nothing is printed unless it configures some.
# Loggers: pghub.hub (the hubs), pghub.sql (sql_notify); docs/hub.md, Logging.
_logging.getLogger("pghub").addHandler(_logging.NullHandler())

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "Action",
    "Advisory",
    "AsyncConsumer",
    "AsyncHub",
    "ConnectFailed",
    "Consumer",
    "ConsumerClosed",
    "DurableEvent",
    "Event",
    "Hub",
    "HubForked",
    "HubStats",
    "HubStopped",
    "InvalidKey",
    "InvalidPayload",
    "InvalidTopic",
    "InvalidValue",
    "PayloadTooLarge",
    "PghubError",
    "SendQueueFull",
    "Stats",
    "Subscription",
    "SyncSubscription",
    "__version__",
    "async_sql_notify",
    "channel",
    "decode_event",
    "decode_payload",
    "encode_payload",
    "sql_notify",
    "stats",
]
