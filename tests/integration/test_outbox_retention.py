"""Published rows leave the outbox after the retention period; pending rows never do."""

from __future__ import annotations

import pytest

from tests.support.producer import (
    closed_port_url,
    outbox_rows,
    producer_env,
    run_producer,
    user_count,
)

pytestmark = [pytest.mark.broker, pytest.mark.postgres]


def _register_offline(database_url: str, username: str) -> str:
    env = producer_env(closed_port_url(), database_url)
    result = run_producer("register", username, f"{username}@example.com", env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_published_rows_older_than_the_retention_are_deleted(
    amqp_url: str, database_url: str
) -> None:
    _register_offline(database_url, "alice")

    kept = run_producer("relay", "--once", env=producer_env(amqp_url, database_url))
    assert kept.returncode == 0, kept.stderr
    [row] = outbox_rows(database_url)
    assert row.published_at is not None  # the default retention (a week) keeps it

    pending = _register_offline(database_url, "bob")
    swept = run_producer(
        "relay", "--once", env=producer_env(closed_port_url(), database_url, RELAY_RETENTION_S="0")
    )

    # The broker is away, so bob's event cannot be published: it must survive the sweep,
    # while alice's published row goes. The users themselves are never touched.
    assert swept.returncode == 1
    assert "cannot connect" in swept.stderr
    assert [row.event_id for row in outbox_rows(database_url)] == [pending]
    assert user_count(database_url) == 2
