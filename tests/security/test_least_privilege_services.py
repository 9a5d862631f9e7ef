"""The services do their whole job as the least-privileged users of definitions.json.

The broker is configured like docker-compose's: the topology pre-declared, no `guest`, and the
producer and the worker with no right to create or delete anything. A registration must still
become an email, and a dead-lettered event must still be replayable.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import topology
from tests.faults.harness import Stack, queue_depth
from tests.support.broker import REPO_ROOT
from tests.support.compose import DEMO_BROKER_PASSWORDS
from tests.support.rabbit_node import RabbitNode
from tests.support.smtp import SmtpTestServer

pytestmark = [pytest.mark.private_node, pytest.mark.slow]

DEFINITIONS = REPO_ROOT / "docker" / "rabbitmq" / "definitions.json"


@pytest.fixture
def compose_like_broker() -> Iterator[RabbitNode]:
    node = RabbitNode(definitions=DEFINITIONS)
    try:
        node.start()
        yield node
    finally:
        node.destroy()


def test_register_relay_worker_and_replay_work_with_least_privilege(
    compose_like_broker: RabbitNode, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    node = compose_like_broker
    producer = {"AMQP_URL": node.url_for("producer", DEMO_BROKER_PASSWORDS["producer"])}
    worker_env = {
        "AMQP_URL": node.url_for("email_worker", DEMO_BROKER_PASSWORDS["email_worker"]),
        # The delays pre-declared in definitions.json (the defaults).
        "RETRY_DELAYS_S": ",".join(str(d) for d in topology.DEFAULT_RETRY_DELAYS_S),
    }
    admin_url = node.url_for("admin", DEMO_BROKER_PASSWORDS["admin"])
    stack = Stack(node=node, smtp=smtp_server, folder=tmp_path)
    try:
        registered = stack.run("producer-service", "register", "alice", "a@example.com", **producer)
        assert registered.returncode == 0, registered.stderr
        assert "queued" not in registered.stderr, registered.stderr
        worker = stack.start_worker(**worker_env)
        stack.wait_for(lambda: len(smtp_server.messages) == 1, 60, "alice's email")

        # A permanent SMTP refusal dead-letters the next event; the worker's replay returns it.
        smtp_server.refuse_permanently()
        assert (
            stack.run("producer-service", "register", "bob", "b@example.com", **producer).returncode
            == 0
        )
        stack.wait_for(
            lambda: queue_depth(admin_url, topology.DEAD_LETTER_QUEUE) == 1, 60, "bob in the DLQ"
        )
        smtp_server.refuse_permanently(None)
        replay = stack.run("email-consumer", "dlq", "replay", **worker_env)
        assert replay.returncode == 0, replay.stderr
        stack.wait_for(lambda: len(smtp_server.messages) == 2, 60, "bob's email after replay")
        assert worker.terminate() == 0
    finally:
        stack.stop_all()
