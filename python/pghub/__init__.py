"""pghub: PostgreSQL LISTEN/NOTIFY as an event hub.

Every event is a topic (a notification channel), a key (a tuple of 64-bit integers) and a
JSON value. See README.md and docs/ for the wire format, the hub and the SQL extension.
"""

from __future__ import annotations

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
from .events import Action, Advisory, Event
from .hub import Hub
from .stats import HubStats, Stats
from .wire import MAX_PAYLOAD_BYTES, channel, decode_event, decode_payload, encode_payload

__version__ = "0.3.0"

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "Action",
    "Advisory",
    "AsyncConsumer",
    "AsyncHub",
    "ConnectFailed",
    "Consumer",
    "ConsumerClosed",
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
    "__version__",
    "async_sql_notify",
    "channel",
    "decode_event",
    "decode_payload",
    "encode_payload",
    "sql_notify",
    "stats",
]
