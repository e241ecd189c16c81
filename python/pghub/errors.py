"""The exceptions pghub raises. Every one derives from :class:`PghubError`."""

from __future__ import annotations


class PghubError(Exception):
    """Base class of every error pghub raises."""


class InvalidTopic(PghubError, ValueError):
    """A topic breaks the wire rules: 1 to 63 characters of ``[A-Za-z0-9_]``."""


class InvalidKey(PghubError, ValueError):
    """A key is not a sequence of integers within the signed 64-bit range."""


class InvalidValue(PghubError, ValueError):
    """A value cannot be written as canonical JSON (the message names the path inside it)."""


class PayloadTooLarge(PghubError, ValueError):
    """An encoded payload is longer than PostgreSQL accepts (``size`` against ``limit`` bytes)."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class InvalidPayload(PghubError, ValueError):
    """A notification payload that no pghub encoder could have written.

    ``offset`` is the byte offset (in UTF-8) where the payload goes wrong.
    """

    def __init__(self, message: str, *, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class HubStopped(PghubError, RuntimeError):
    """The hub has been stopped: it sends and starts no more."""


class HubForked(HubStopped):
    """The hub was started in a parent process and this is a child made by ``fork()``: its
    engine thread and session stayed in the parent. Make and start a new hub in the child."""


class ConsumerClosed(PghubError, RuntimeError):
    """The consumer has been closed (or its hub stopped): it subscribes to nothing more."""


class ConnectFailed(PghubError, ConnectionError):
    """The hub's first connection failed, and ``retry_first_connect`` was False."""


class SendQueueFull(PghubError, RuntimeError):
    """Too many notifies wait to be sent (``send_queue_size``); the server is gone or too slow."""
