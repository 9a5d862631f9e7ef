"""The AMQP headers that travel with an event through retry queues, the DLQ and replays.

Pure functions over header dictionaries, so the worker and the DLQ tools agree on one format;
the headers and their meaning are listed in docs/CONTRACT.md (and docs/asyncapi.yaml).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

RETRY_COUNT: Final = "retry-count"
ATTEMPTS: Final = "attempts"
FIRST_FAILURE_AT: Final = "first-failure-at"
LAST_FAILURE_AT: Final = "last-failure-at"
ERROR_TYPE: Final = "error-type"
ERROR_MESSAGE: Final = "error-message"
SMTP_CODE: Final = "smtp-code"
DEAD_LETTER_REASON: Final = "dead-letter-reason"
WORKER_HOST: Final = "worker-host"
ORIGINAL_ROUTING_KEY: Final = "original-routing-key"
REPLAY_COUNT: Final = "replay-count"

# Enough for any SMTP reply or parse error; a bounded size keeps a hostile or huge error text
# from bloating every copy of the message.
ERROR_MESSAGE_BUDGET_BYTES: Final = 1024

# Counters arrive from the wire and go back onto it: a crafted 2**63-1 plus one would no longer
# fit AMQP's signed 64-bit field, and pika would fail to encode the copy. A 32-bit bound is far
# above any real count.
MAX_COUNTER: Final = 2**31 - 1

# Set on a failure, removed again by a replay (which starts the event's history afresh apart
# from its replay count). `x-death` and friends are the broker's own dead-lettering records.
_FAILURE_STATE: Final = (
    RETRY_COUNT,
    ATTEMPTS,
    FIRST_FAILURE_AT,
    LAST_FAILURE_AT,
    ERROR_TYPE,
    ERROR_MESSAGE,
    SMTP_CODE,
    DEAD_LETTER_REASON,
    WORKER_HOST,
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
)


def cut_to_bytes(text: str, budget: int = ERROR_MESSAGE_BUDGET_BYTES) -> str:
    """`text` cut to at most `budget` bytes of UTF-8, never inside a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= budget:
        return text
    return encoded[: budget - 3].decode("utf-8", "ignore") + "..."


def as_int(headers: Mapping[str, Any], name: str) -> int:
    """A counter header as 0..`MAX_COUNTER`; absent, negative or not a number reads as 0."""
    value = headers.get(name)
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore")
    if isinstance(value, bool) or not isinstance(value, int | str):
        return 0
    try:
        return clamp_counter(int(value))
    except ValueError:
        return 0


def clamp_counter(value: int) -> int:
    """`value` within 0..`MAX_COUNTER`."""
    return min(max(value, 0), MAX_COUNTER)


def as_text(headers: Mapping[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


def after_failure(
    headers: Mapping[str, Any] | None,
    *,
    error: BaseException,
    attempts: int,
    now: datetime,
    host: str,
    routing_key: str,
    dead_letter_reason: str | None = None,
    delayed_retry: bool = False,
) -> dict[str, Any]:
    """The headers of the copy sent to a retry queue or the DLQ after a failed delivery."""
    previous = dict(headers or {})
    updated = dict(previous)
    stamp = now.isoformat()
    updated[ATTEMPTS] = clamp_counter(as_int(previous, ATTEMPTS) + attempts)
    updated[RETRY_COUNT] = clamp_counter(as_int(previous, RETRY_COUNT) + int(delayed_retry))
    updated[FIRST_FAILURE_AT] = as_text(previous, FIRST_FAILURE_AT) or stamp
    updated[LAST_FAILURE_AT] = stamp
    updated[ERROR_TYPE] = type(error).__name__
    updated[ERROR_MESSAGE] = cut_to_bytes(str(error) or type(error).__name__)
    code = getattr(error, "code", None)
    if isinstance(code, int):
        updated[SMTP_CODE] = code
    else:
        updated.pop(SMTP_CODE, None)
    updated[WORKER_HOST] = host
    # After a delayed retry the event arrives with the retry queue's routing key; the first one
    # recorded is the one it was published with.
    updated[ORIGINAL_ROUTING_KEY] = as_text(previous, ORIGINAL_ROUTING_KEY) or routing_key
    if dead_letter_reason is not None:
        updated[DEAD_LETTER_REASON] = dead_letter_reason
    return updated


def for_replay(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The headers of an event sent back by `dlq replay`: history cleared, replay counted."""
    replayed = {k: v for k, v in (headers or {}).items() if k not in _FAILURE_STATE}
    replayed[REPLAY_COUNT] = clamp_counter(as_int(headers or {}, REPLAY_COUNT) + 1)
    return replayed
