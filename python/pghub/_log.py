"""pghub's loggers: one per area, under ``pghub``, and the hub's name on every record.

Records say what happened; which hub it happened to travels as ``extra`` (the record
attribute ``pghub_hub``), so that a format or a filter can use it and the message need not
repeat it. docs/hub.md lists the names and the attributes.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, Union

ROOT = "pghub"
HUB = "pghub.hub"  # connections, subscriptions, sending, receiving, callbacks
SQL = "pghub.sql"  # pghub.sql_notify: events sent on the caller's own connection

if TYPE_CHECKING:
    _Adapter = logging.LoggerAdapter[Any]
else:  # LoggerAdapter is subscriptable at run time from Python 3.11 only
    _Adapter = logging.LoggerAdapter

#: What the hub's parts log to: a logger, or an adapter over one.
Log = Union[logging.Logger, "_Adapter"]


class HubLog(_Adapter):
    """A hub's logger: every record gets ``pghub_hub`` (the hub's name), and keeps the
    ``extra`` given at the call (``LoggerAdapter`` alone replaces it, before Python 3.13)."""

    def __init__(self, logger: Log, hub: str) -> None:
        super().__init__(logger, {"pghub_hub": hub})

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        given = kwargs.get("extra")
        mine = dict(self.extra or {})
        kwargs["extra"] = {**mine, **given} if given else mine
        return msg, kwargs
