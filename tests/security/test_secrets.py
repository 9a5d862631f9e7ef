"""No secret reaches a log line or an error message, on the happy path or on the failing ones.

A full run (register, relay, worker, DLQ tools) with an AMQP password and an SMTP password set,
plus the runs where those passwords are wrong or the broker is away, with every line of output
captured and searched for each password in every form it could leak in.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from shared import topology
from tests.faults.harness import Stack, queue_depth
from tests.support.ports import free_port
from tests.support.rabbit_node import RabbitNode
from tests.support.smtp import SmtpTestServer

pytestmark = [
    pytest.mark.private_node,
    pytest.mark.slow,
    # AUTH over plain TCP is what this test server does on purpose: it is not a mail relay.
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

AMQP_USER = "svc"
# Characters that must be URL-encoded in AMQP_URL, so the encoded form is worth searching too.
AMQP_SECRET = "amqp-S3cret/p@ss:w0rd%ü"
SMTP_USER = "mailer"
SMTP_SECRET = "smtp-Sup3r$ecret!pw"


def _leak_forms(secret: str, user: str) -> set[str]:
    plain_auth = base64.b64encode(f"\0{user}\0{secret}".encode()).decode()
    return {
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        quote(secret),
        base64.b64encode(secret.encode()).decode(),
        plain_auth,  # SMTP AUTH PLAIN, should a protocol trace be logged
    }


class _AuthenticatingSmtp:
    """An aiosmtpd server that demands AUTH with SMTP_USER / SMTP_SECRET (plain TCP: a test)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.accepted: list[str] = []
        self._lock = threading.Lock()
        self._controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=self._authenticate,
            auth_required=True,
            auth_require_tls=False,
            ready_timeout=10,
        )

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == SMTP_USER.encode()
            and auth_data.password == SMTP_SECRET.encode()
        )
        return AuthResult(success=ok, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        content = bytes(envelope.original_content or envelope.content)
        with self._lock:
            self.accepted.append(content.decode("utf-8", "replace"))
        return "250 2.0.0 OK"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


@pytest.fixture
def mail_server() -> Iterator[_AuthenticatingSmtp]:
    server = _AuthenticatingSmtp()
    server.start()
    yield server
    server.stop()


def _environment(node: RabbitNode, mail: _AuthenticatingSmtp, **overrides: str) -> dict[str, str]:
    return {
        "AMQP_URL": node.url_for(AMQP_USER, AMQP_SECRET),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(mail.port),
        "SMTP_USERNAME": SMTP_USER,
        "SMTP_PASSWORD": SMTP_SECRET,
        # As much output as the services can produce.
        "LOG_LEVEL": "DEBUG",
        **overrides,
    }


def test_no_password_appears_in_any_output(
    private_rabbit: RabbitNode,
    smtp_server: SmtpTestServer,
    mail_server: _AuthenticatingSmtp,
    tmp_path: Path,
) -> None:
    node = private_rabbit
    node.rabbitmqctl("add_user", AMQP_USER, AMQP_SECRET)
    node.rabbitmqctl("set_permissions", AMQP_USER, ".*", ".*", ".*")
    stack = Stack(node=node, smtp=smtp_server, folder=tmp_path)
    stack.extra_env.update(_environment(node, mail_server))
    outputs: list[str] = []

    def run(*argv: str, **env: str) -> int:
        completed = stack.run(*argv, **env)
        outputs.extend([completed.stdout, completed.stderr])
        return completed.returncode

    try:
        # The happy path: a registration becomes an email, through SMTP AUTH.
        assert run("producer-service", "register", "alice", "alice@example.com", "--json") == 0
        assert run("producer-service", "relay", "--once") == 0
        worker = stack.start_worker()
        stack.wait_for(lambda: len(mail_server.accepted) == 1, 60, "the welcome email")
        assert worker.terminate() == 0

        # The SMTP password is wrong: a refusal of the login is the server's, not bob's, so the
        # worker opens its breaker and parks the event (nothing is dead-lettered) and says why.
        assert run("producer-service", "register", "bob", "bob@example.com") == 0
        wrong_smtp = stack.start_worker(SMTP_PASSWORD="wrong-" + SMTP_SECRET)
        stack.wait_for(
            lambda: "mail server refuses every message" in wrong_smtp.output(),
            120,
            "the worker's breaker to open on the refused login",
        )
        assert wrong_smtp.terminate() == 0
        # The log says what went wrong (the server refused the login), not with what.
        assert "535" in wrong_smtp.output()
        assert queue_depth(node.amqp_url, topology.DEAD_LETTER_QUEUE) == 0
        listing = stack.run("email-consumer", "dlq", "list", "--json")
        outputs.extend([listing.stdout, listing.stderr])
        assert listing.returncode == 0

        # The AMQP password is wrong: every command reports the failure.
        wrong_amqp = {"AMQP_URL": node.url_for(AMQP_USER, "x" + AMQP_SECRET)}
        assert run("producer-service", "register", "carol", "carol@example.com", **wrong_amqp) == 0
        run("producer-service", "relay", "--once", **wrong_amqp)
        assert run("email-consumer", "dlq", "list", **wrong_amqp) != 0
        refused = stack.start_worker(**wrong_amqp)
        stack.wait_for(lambda: "error" in refused.output().lower(), 60, "the worker's error")
        refused.terminate()

        # The broker is away: the password is in the URL of a connection that cannot be made.
        away = {"AMQP_URL": f"amqp://{AMQP_USER}:{quote(AMQP_SECRET, safe='')}@127.0.0.1:1/%2F"}
        assert run("producer-service", "register", "dave", "dave@example.com", **away) == 0
        assert run("email-consumer", "dlq", "list", **away) != 0
        # A malformed URL must not be echoed back either.
        broken = {"AMQP_URL": f"amqp://{AMQP_USER}:{AMQP_SECRET}@127.0.0.1:notaport/%2F"}
        assert run("email-consumer", "dlq", "list", **broken) != 0
    finally:
        stack.stop_all()

    everything = "\n".join(outputs) + "\n" + stack.all_output()
    # The output was captured, and the URLs in it were masked rather than left out.
    assert f"{AMQP_USER}:***@" in everything
    leaks = {
        form
        for secret, user in ((AMQP_SECRET, AMQP_USER), (SMTP_SECRET, SMTP_USER))
        for form in _leak_forms(secret, user)
        if form in everything
    }
    assert not leaks, f"secrets leaked in the output: {sorted(leaks)}"
