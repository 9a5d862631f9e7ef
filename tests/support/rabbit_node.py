"""A private RabbitMQ node for tests that stop, kill or reconfigure the broker.

The shared test broker (rabbit@localhost, port 5672) must never be restarted, so a test that
needs a broker it can SIGKILL, restart, fill up or put behind TLS starts its own node over the
installed `rabbitmq-server`: its own node name, free AMQP and distribution ports, its own data
folder and its own Erlang cookie. Start-up takes about five seconds.

    def test_something(private_rabbit: RabbitNode) -> None:
        url = private_rabbit.amqp_url          # amqp://guest:guest@127.0.0.1:<port>/%2F
        private_rabbit.kill()                  # SIGKILL, as a power cut would
        private_rabbit.start()                 # same node, same data
        private_rabbit.rabbitmqctl("list_queues")

The node runs as the `rabbitmq` user when the tests run as root (RabbitMQ's own scripts would
switch to that user too), otherwise as the current user. Whatever happens in the test, teardown
kills the node and removes its folder.

Which RabbitMQ runs is tests/support/rabbit_install.py's business: the installed one, or RabbitMQ
4 from the root filesystem TEST_RABBITMQ_ROOT names (`make test-rabbitmq4`); `install=` picks one
for a single node.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final
from urllib.parse import quote

import pika
import pika.exceptions
import pytest
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from tests.support.ports import free_port, free_port_block
from tests.support.rabbit_install import RabbitInstall, RabbitInstallError, configured_install

# The nodes run the scripts behind /usr/sbin's wrappers: the wrappers `su` to rabbitmq, which
# resets HOME and with it the cookie this node uses. The environment below replaces what they set.
START_TIMEOUT_S: Final = 90.0
STOP_TIMEOUT_S: Final = 60.0
_CLI_PORTS: Final = 10
# What a node that lost the race for one of its ports writes before it exits: the distribution
# port (RabbitMQ's prelaunch check) or a listener's (Ranch's eaddrinuse).
_PORT_CLASH_MARKERS: Final = ("dist_port_already_used", "eaddrinuse")
_PORT_CLASH_ATTEMPTS: Final = 3


class RabbitNodeError(RuntimeError):
    """The private node could not be started, stopped or administered."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for an amqps:// listener; they are copied into the node's folder."""

    ca_file: Path
    cert_file: Path
    key_file: Path


class PrivateEpmd:
    """A foreground epmd on 127.0.0.1 for nodes in a root filesystem (whose Erlang is not the
    host's). Nodes that are to cluster must share one: a node looks its peers up in its own."""

    def __init__(self, install: RabbitInstall) -> None:
        self.port = free_port()
        self._argv = install.epmd_command(self.port)
        self._process: subprocess.Popen[bytes] | None = None

    def ensure_running(self) -> None:
        if self._argv is None or (self._process is not None and self._process.poll() is None):
            return
        self._process = subprocess.Popen(
            self._argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=30)
            self._process = None


class RabbitNode:
    """One private RabbitMQ node: start, stop, kill, restart keeping its data, rabbitmqctl."""

    def __init__(
        self,
        *,
        tls: TlsFiles | None = None,
        definitions: Path | None = None,
        extra_config: str = "",
        advanced_config: str = "",
        install: RabbitInstall | None = None,
        epmd: PrivateEpmd | None = None,
    ) -> None:
        """`definitions`: a definitions file loaded at boot, as docker-compose's broker does
        (then there is no `guest` user and `amqp_url` does not apply; use `url_for`).
        `advanced_config`: the Erlang terms of advanced.config, for settings rabbitmq.conf lacks.
        `install`: which RabbitMQ to run (default: TEST_RABBITMQ_ROOT's, else the installed one).
        `epmd`: for a root filesystem's node, an epmd shared with other nodes (a cluster's);
        by default the node runs one of its own, ended by `destroy`."""
        try:
            self.install = install or configured_install()
            self._account = self.install.account()
        except RabbitInstallError as error:
            raise RabbitNodeError(str(error)) from None
        self.name = f"test-{secrets.token_hex(6)}@localhost"
        self._tls = tls
        self._choose_ports()
        self._has_started = False
        # A root filesystem's node needs an epmd of that root's; the host's nodes share the host's.
        self._epmd = (epmd or PrivateEpmd(self.install)) if self.install.in_own_root else None
        self._owns_epmd = epmd is None
        self.folder = Path(
            tempfile.mkdtemp(prefix="rabbit-node-", dir=self.install.scratch_parent())
        )
        self._definitions = definitions
        self._extra_config = extra_config
        self._advanced_config = advanced_config
        self._process: subprocess.Popen[bytes] | None = None
        self._prepare_folder()

    # --- addresses ----------------------------------------------------------------------
    @property
    def amqp_url(self) -> str:
        """The default vhost as guest (allowed: the tests connect over loopback)."""
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    def amqps_url(self, host: str = "localhost") -> str:
        if self.amqps_port is None:
            raise RabbitNodeError("this node has no TLS listener; pass tls=TlsFiles(...)")
        return f"amqps://guest:guest@{host}:{self.amqps_port}/%2F"

    def url_for(self, user: str, password: str, vhost: str = "/") -> str:
        return (
            f"amqp://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@127.0.0.1:{self.amqp_port}/{quote(vhost, safe='')}"
        )

    # --- life cycle ---------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the node (again, with the same data) and wait until AMQP answers.

        A free port is only free until somebody binds it: another test's node, started at the
        same moment, may take one of this node's. On the first start only (later ones must keep
        the addresses clients know) such a clash means new ports and another try.
        """
        if self.running:
            return
        for attempt in range(1, _PORT_CLASH_ATTEMPTS + 1):
            try:
                self._launch(timeout_s)
            except RabbitNodeError:
                if self._has_started or attempt == _PORT_CLASH_ATTEMPTS:
                    raise
                if not self._port_clash_logged():
                    raise
                self._forget_logs()
                self._choose_ports()
                self._write_config()
                continue
            self._has_started = True
            return

    def _launch(self, timeout_s: float) -> None:
        if self._epmd is not None:
            self._epmd.ensure_running()
        output = (self.folder / "server.out").open("ab")
        try:
            self._process = subprocess.Popen(
                self.install.command("rabbitmq-server", self._environment()),
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                # Its own process group, so kill() reaches the shell, beam and its helpers.
                start_new_session=True,
            )
        finally:
            output.close()
        self._wait_until_answering(timeout_s)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop gracefully (`rabbitmqctl stop`), killing the node if it does not go in time."""
        if not self.running:
            return
        self.rabbitmqctl("stop", check=False, timeout_s=timeout_s)
        assert self._process is not None
        try:
            self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        self._process = None

    def kill(self) -> None:
        """SIGKILL the whole node at once (beam and its helper processes), as a crash would."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout=30)
        self._process = None

    def restart(self, *, graceful: bool = True) -> None:
        """Stop (or kill) and start again; queues and persistent messages survive."""
        if graceful:
            self.stop()
        else:
            self.kill()
        self.start()

    def destroy(self) -> None:
        """Kill the node (and an epmd of its own) and remove its folder; safe to call again."""
        self.kill()
        if self._epmd is not None and self._owns_epmd:
            self._epmd.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> RabbitNode:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.destroy()

    # --- administration -----------------------------------------------------------------
    def rabbitmqctl(self, *args: str, check: bool = True, timeout_s: float = 120.0) -> str:
        """Run `rabbitmqctl -n <this node> ARGS`; returns stdout, raises on failure if `check`."""
        return self._cli("rabbitmqctl", *args, check=check, timeout_s=timeout_s)

    def cli_command(self, tool: str = "rabbitmqctl") -> list[str]:
        """argv of `tool -n <this node>`, to run with further arguments and nothing else."""
        return self.install.command(tool, self._environment(), "-n", self.name)

    def sync_metadata(self) -> None:
        """Flush the node's Ra directories to disk now instead of within their 0.5-5 s timers.

        RabbitMQ 3.10 records a new quorum queue's Ra server in DETS tables saved on a timer; a
        node SIGKILLed before that comes back with the queue but without a leader. A test that
        kills the node right after declaring its topology calls this first, so it tests message
        durability and not that window (which docs/RELIABILITY.md describes).
        """
        self.rabbitmqctl("eval", "[ok = dets:sync(T) || T <- dets:all()], ok.")

    def rabbitmq_diagnostics(self, *args: str, check: bool = True) -> str:
        return self._cli("rabbitmq-diagnostics", *args, check=check, timeout_s=120.0)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's own output and log, for failure messages."""
        texts = []
        for path in [self.folder / "server.out", *sorted((self.folder / "log").glob("*.log"))]:
            if path.exists():
                texts.append(f"--- {path.name}\n" + "\n".join(_tail(path, lines)))
        return "\n".join(texts)

    # --- internals ----------------------------------------------------------------------
    def _cli(self, tool: str, *args: str, check: bool, timeout_s: float) -> str:
        try:
            result = subprocess.run(
                [*self.cli_command(tool), *args],
                cwd=self.folder,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RabbitNodeError(f"{tool} {' '.join(args)} timed out") from None
        if check and result.returncode != 0:
            raise RabbitNodeError(
                f"{tool} {' '.join(args)} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result.stdout

    def _prepare_folder(self) -> None:
        home = self.folder / "home"
        for sub in ("home", "mnesia", "log", "tls"):
            (self.folder / sub).mkdir()
        # A cookie of its own: a CLI command meant for this node can never reach the shared one.
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20).upper())
        cookie.chmod(0o400)
        (self.folder / "enabled_plugins").write_text("[].\n")
        # Values from the system's rabbitmq-env.conf (its node name above all) must not apply.
        (self.folder / "rabbitmq-env.conf").write_text("")
        if self._tls:
            self._install_tls_files()
        if self._definitions is not None:
            shutil.copyfile(self._definitions, self.folder / "definitions.json")
        if self._advanced_config:
            (self.folder / "advanced.config").write_text(self._advanced_config)
        self._write_config()
        self.folder.chmod(0o755)
        if self._account is not None:
            for path in [self.folder, *self.folder.rglob("*")]:
                os.chown(path, self._account.uid, self._account.gid)

    def _choose_ports(self) -> None:
        self.amqp_port = free_port()
        self.dist_port = free_port()
        self.amqps_port: int | None = free_port() if self._tls else None
        # The CLI tools' own distribution ports (default: dist port + 10000 and up, which may be
        # taken); a block, because vhost deletions run several rabbitmqctl at once.
        self._cli_ports = free_port_block(_CLI_PORTS)

    def _write_config(self) -> None:
        """rabbitmq.conf, which names the TLS listener's port and so follows _choose_ports."""
        definitions_config = ""
        if self._definitions is not None:
            definitions_config = f"load_definitions = {self._inside('definitions.json')}"
        config = self.folder / "rabbitmq.conf"
        config.write_text(
            "\n".join(
                [
                    "log.console = false",
                    "log.file.level = info",
                    # A test node lives in /tmp, often on a nearly full disk: do not let the
                    # default free-disk alarm block publishers for reasons the test did not set.
                    "disk_free_limit.absolute = 1MB",
                    self._tls_config(),
                    definitions_config,
                    self._extra_config,
                    "",
                ]
            )
        )
        if self._account is not None:
            os.chown(config, self._account.uid, self._account.gid)

    def _port_clash_logged(self) -> bool:
        return any(marker in self.log_tail(lines=200) for marker in _PORT_CLASH_MARKERS)

    def _forget_logs(self) -> None:
        """Remove a failed start's logs, so that the next one's are judged on their own."""
        for path in [self.folder / "server.out", *(self.folder / "log").glob("*.log")]:
            path.unlink(missing_ok=True)

    def _install_tls_files(self) -> None:
        assert self._tls is not None
        target = self.folder / "tls"
        for source, name in (
            (self._tls.ca_file, "ca.pem"),
            (self._tls.cert_file, "cert.pem"),
            (self._tls.key_file, "key.pem"),
        ):
            shutil.copyfile(source, target / name)

    def _tls_config(self) -> str:
        if self.amqps_port is None:
            return ""
        return "\n".join(
            [
                f"listeners.ssl.default = 127.0.0.1:{self.amqps_port}",
                f"ssl_options.cacertfile = {self._inside('tls/ca.pem')}",
                f"ssl_options.certfile = {self._inside('tls/cert.pem')}",
                f"ssl_options.keyfile = {self._inside('tls/key.pem')}",
                "ssl_options.verify = verify_none",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        )

    def _inside(self, name: str) -> str:
        """A file of this node's folder, as the node sees it."""
        return self.install.inside(self.folder / name)

    def _environment(self) -> dict[str, str]:
        """Everything RabbitMQ's scripts get (besides PATH): nothing of the caller's own."""
        environment = {
            "HOME": self._inside("home"),
            "LC_ALL": "C.UTF-8",
            "LANG": "C.UTF-8",
            "RABBITMQ_CONF_ENV_FILE": self._inside("rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CTL_DIST_PORT_MIN": str(self._cli_ports),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(self._cli_ports + _CLI_PORTS - 1),
            "RABBITMQ_MNESIA_BASE": self._inside("mnesia"),
            "RABBITMQ_LOG_BASE": self._inside("log"),
            "RABBITMQ_CONFIG_FILE": self._inside("rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": self._inside("advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": self._inside("enabled_plugins"),
            "RABBITMQ_PID_FILE": self._inside("node.pid"),
            # As the system's rabbitmq-env.conf does: epmd and distribution on loopback.
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        if self._epmd is not None:
            environment["ERL_EPMD_PORT"] = str(self._epmd.port)
        return environment

    def _wait_until_answering(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process is not None and self._process.poll() is not None:
                self._process = None
                raise RabbitNodeError(
                    f"RabbitMQ node {self.name} exited during start-up:\n{self.log_tail()}"
                )
            if _amqp_answers(self.amqp_port):
                return
            if time.monotonic() > deadline:
                self.kill()
                raise RabbitNodeError(
                    f"RabbitMQ node {self.name} did not accept AMQP connections within "
                    f"{timeout_s:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.5)


def _amqp_answers(port: int) -> bool:
    parameters = pika.ConnectionParameters(
        host="127.0.0.1",
        port=port,
        credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1,
        socket_timeout=2,
        blocked_connection_timeout=5,
    )
    try:
        pika.BlockingConnection(parameters).close()
    except (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError):
        # Refusing guest is an AMQP answer: a node booted from definitions has no guest.
        return True
    except (pika.exceptions.AMQPError, AMQPConnectorException, OSError):
        # AMQPConnectorException: pika lets a handshake timeout out unwrapped, as when the port
        # is held by something that accepts and never speaks AMQP.
        return False
    return True


def _tail(path: Path, lines: int) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


@pytest.fixture
def private_rabbit() -> Iterator[RabbitNode]:
    """A started private RabbitMQ node, killed and removed after the test whatever happens."""
    node = RabbitNode()
    try:
        node.start()
        yield node
    finally:
        node.destroy()
