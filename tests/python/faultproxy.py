"""The fault proxy moved into the package: :mod:`pghub.testing.faultproxy` (docs/testing.md).

Kept so that a test still importing ``faultproxy`` keeps working; import it from
``pghub.testing`` instead.
"""

from __future__ import annotations

from pghub.testing.faultproxy import FaultProxy

__all__ = ["FaultProxy"]
