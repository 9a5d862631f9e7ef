"""The RabbitMQ the tests run against, and a private virtual host for every test.

Topology names are fixed by the contract, so tests that ran in one virtual host would see each
other's queues. Each test gets its own vhost instead, created with rabbitmqctl (locally, or in
the compose container on a machine that has only Docker) and deleted afterwards.

With TEST_RABBITMQ_ROOT set (`make test-rabbitmq4`) and no TEST_AMQP_URL, the session's broker is
a private node of the RabbitMQ in that root filesystem, started for the run and removed after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pika
import pika.exceptions

from tests.support.compose import DEMO_BROKER_PASSWORDS, published_port
from tests.support.rabbit_install import RabbitInstallError, configured_install
from tests.support.rabbit_node import RabbitNode, RabbitNodeError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEST_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
# The operator account of docker-compose.yml's broker (docker/rabbitmq/definitions.json), used by
# tests on a machine that has only Docker (the compose broker has no guest user).
COMPOSE_ADMIN_USER = "admin"
COMPOSE_ADMIN_PASSWORD = DEMO_BROKER_PASSWORDS[COMPOSE_ADMIN_USER]


def compose_test_amqp_url() -> str:
    """The compose broker's operator URL, on the host port compose publishes AMQP on now
    (RABBITMQ_AMQP_PORT, else the compose file's default)."""
    port = published_port("rabbitmq", 5672)
    return f"amqp://{COMPOSE_ADMIN_USER}:{COMPOSE_ADMIN_PASSWORD}@127.0.0.1:{port}/%2F"


class BrokerUnreachable(RuntimeError):
    pass


def broker_answers(url: str, timeout_s: float = 3.0) -> bool:
    parameters = pika.URLParameters(url)
    parameters.connection_attempts = 1
    parameters.socket_timeout = timeout_s
    try:
        pika.BlockingConnection(parameters).close()
    except (pika.exceptions.AMQPError, OSError):
        return False
    return True


class BrokerAdmin:
    """Administers the test broker: virtual hosts and connections."""

    def __init__(self, base_url: str, rabbitmqctl: list[str], root: Path = Path("/")) -> None:
        """`root`: where the broker's file system starts on this machine (a root filesystem's
        node reports its log files as it sees them)."""
        self.base_url = base_url
        self._rabbitmqctl = rabbitmqctl
        self._root = root
        self.user = urlsplit(base_url).username or "guest"
        self._deleting: list[subprocess.Popen[bytes]] = []

    def ctl(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            [*self._rabbitmqctl, *args], capture_output=True, text=True, timeout=60
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def host_path(self, broker_path: str) -> Path:
        """A path the broker reported (a log file, say), as this machine sees it."""
        return self._root / broker_path.lstrip("/")

    def url_for(self, vhost: str, user: str | None = None, password: str | None = None) -> str:
        """`vhost` on the test broker, as its admin user or as `user`/`password`."""
        parts = urlsplit(self.base_url)
        if user is not None:
            credentials = f"{quote(user, safe='')}:{quote(password or '', safe='')}"
            parts = parts._replace(netloc=f"{credentials}@{parts.hostname}:{parts.port or 5672}")
        return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))

    def add_vhost(self, vhost: str) -> str:
        self.ctl("add_vhost", vhost)
        self.ctl("set_permissions", "-p", vhost, self.user, ".*", ".*", ".*")
        return self.url_for(vhost)

    def delete_vhost(self, vhost: str) -> None:
        self.ctl("delete_vhost", vhost, check=False)

    def delete_vhost_in_background(self, vhost: str) -> None:
        """Start deleting `vhost` and return: each rabbitmqctl call starts an Erlang VM (most of a
        second), and no test waits for the vhost it is done with. `finish_deletions` waits."""
        self._deleting.append(
            subprocess.Popen(
                [*self._rabbitmqctl, "delete_vhost", vhost],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        self._deleting = [process for process in self._deleting if process.poll() is None]

    def finish_deletions(self, timeout_s: float = 60.0) -> None:
        for process in self._deleting:
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
        self._deleting.clear()

    @contextlib.contextmanager
    def refusing_publishes(self, vhost: str, queue: str) -> Iterator[None]:
        """While inside, the broker refuses (basic.nack) every publish routed to `queue`: a
        policy limits it to no message, and `reject-publish` refuses rather than drops."""
        policy = f"refuse-{uuid.uuid4().hex[:8]}"
        limit = json.dumps({"max-length": 0, "overflow": "reject-publish"})
        pattern = f"^{re.escape(queue)}$"
        self.ctl("set_policy", "-p", vhost, "--apply-to", "queues", policy, pattern, limit)
        try:
            yield
        finally:
            self.ctl("clear_policy", "-p", vhost, policy)

    def close_connections(self, vhost: str, reason: str = "closed by test") -> int:
        """Close every connection to `vhost`, as a broker restart would; returns the count."""
        listing = self.ctl("list_connections", "-q", "--no-table-headers", "pid", "vhost")
        closed = 0
        for line in listing.splitlines():
            pid, _, connection_vhost = line.strip().partition("\t")
            if connection_vhost == vhost:
                self.ctl("close_connection", pid, reason, check=False)
                closed += 1
        return closed


def ready_count(amqp_url: str, queue: str) -> int:
    """Messages ready in `queue`, read through AMQP (rabbitmqctl's figures lag by seconds)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        declared = connection.channel().queue_declare(queue, passive=True)
        return int(declared.method.message_count)
    finally:
        connection.close()


@contextlib.contextmanager
def session_broker() -> Iterator[BrokerAdmin]:
    """The test run's broker: TEST_AMQP_URL's or the local one, or (TEST_RABBITMQ_ROOT set) a
    private node of the RabbitMQ in that root, destroyed when the block ends."""
    try:
        own_root = configured_install().in_own_root
    except RabbitInstallError as error:
        raise BrokerUnreachable(str(error)) from None
    if "TEST_AMQP_URL" in os.environ or not own_root:
        yield connect_test_broker()
        return
    try:
        node = RabbitNode()
        node.start()
    except RabbitNodeError as error:
        raise BrokerUnreachable(f"the TEST_RABBITMQ_ROOT broker did not start: {error}") from None
    try:
        yield BrokerAdmin(node.amqp_url, node.cli_command(), root=node.install.root)
    finally:
        node.destroy()


def connect_test_broker() -> BrokerAdmin:
    """The broker named by TEST_AMQP_URL (else local guest), started with Docker if need be."""
    url = os.environ.get("TEST_AMQP_URL", DEFAULT_TEST_AMQP_URL)
    if broker_answers(url):
        return BrokerAdmin(url, _local_rabbitmqctl(url))
    if docker_engine_answers():
        _start_compose_broker()
        return BrokerAdmin(compose_test_amqp_url(), _compose_rabbitmqctl())
    raise BrokerUnreachable(
        f"no RabbitMQ answers at {urlsplit(url).hostname}:{urlsplit(url).port or 5672} and no "
        "Docker engine is available to start the one in docker-compose.yml; start RabbitMQ "
        "(`rabbitmq-server -detached`) or Docker, or set TEST_AMQP_URL"
    )


def _local_rabbitmqctl(url: str) -> list[str]:
    if shutil.which("rabbitmqctl") and urlsplit(url).hostname in {"localhost", "127.0.0.1"}:
        return ["rabbitmqctl"]
    if docker_engine_answers():
        return _compose_rabbitmqctl()
    raise BrokerUnreachable(
        "the test broker answers but rabbitmqctl is not available to create test vhosts; "
        "install rabbitmq-server's CLI or run the broker from docker-compose.yml"
    )


def docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    result = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return result.returncode == 0


def _compose_rabbitmqctl() -> list[str]:
    return [
        "docker",
        "compose",
        "--project-directory",
        str(REPO_ROOT),
        "exec",
        "-T",
        "rabbitmq",
        "rabbitmqctl",
    ]


def start_compose_service(service: str, timeout_s: float = 180.0) -> None:
    """Start one service of docker-compose.yml and wait for its healthcheck."""
    subprocess.run(
        ["docker", "compose", "--project-directory", str(REPO_ROOT), "up", "-d", "--wait", service],
        check=True,
        timeout=timeout_s,
    )


def _start_compose_broker(timeout_s: float = 180.0) -> None:
    start_compose_service("rabbitmq", timeout_s)
    deadline = time.monotonic() + timeout_s
    while not broker_answers(compose_test_amqp_url()):
        if time.monotonic() > deadline:
            raise BrokerUnreachable("the compose RabbitMQ started but does not accept connections")
        time.sleep(2)


def new_vhost_name(prefix: str = "test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
