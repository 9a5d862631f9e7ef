"""Process-wide tuning for the long-running services."""

from __future__ import annotations

import gc


def freeze_start_up_objects() -> None:
    """Collect once, then take everything alive now out of the cyclic collector's sight.

    Imports and set-up leave a few hundred thousand long-lived objects (SQLAlchemy, pika, the
    email validator's tables) that every full collection walked while the service stood still.
    Frozen (`gc.freeze`), they are never walked again; garbage made before is collected first.
    """
    gc.collect()
    gc.freeze()
