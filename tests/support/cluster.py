"""A local RabbitMQ cluster of private nodes, for tests that kill, stop or move its members.

Each member is a `RabbitNode` (tests/support/rabbit_node.py): its own node name, ports and data
folder. The cluster gives them one Erlang cookie (and, for RabbitMQ 4 from a root filesystem,
one epmd, where they find each other) and joins the others to the first with `join_cluster`.

    cluster = RabbitCluster(3)
    cluster.start()                                 # then cluster.destroy(), whatever happens
    env["AMQP_URL"] = cluster.amqp_urls             # all three, comma-separated
    victim = cluster.leader_of("some.queue")
    victim.kill()                                   # kill -9
    cluster.pause(victim); cluster.resume(victim)   # SIGSTOP / SIGCONT: a silent failure
    victim.start(); cluster.wait_until_member(victim)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import time
from pathlib import Path
from typing import Final

from tests.support.rabbit_install import RabbitInstall, configured_install
from tests.support.rabbit_node import PrivateEpmd, RabbitNode, RabbitNodeError

JOIN_TIMEOUT_S: Final = 120.0
_TCP_ESTABLISHED: Final = "01"


class RabbitCluster:
    """`size` private nodes clustered together; teardown kills them all and removes them."""

    def __init__(self, size: int = 3, install: RabbitInstall | None = None):
        install = install or configured_install()
        # A root filesystem's nodes would each run an epmd of their own, and a node looks its
        # peers up in its own: join_cluster then fails with {erpc, noconnection}.
        self._epmd = PrivateEpmd(install) if install.in_own_root else None
        self.nodes = [RabbitNode(install=install, epmd=self._epmd) for _ in range(size)]
        cookie = secrets.token_hex(20).upper()
        for node in self.nodes:
            _set_cookie(node, cookie)

    # --- addresses ----------------------------------------------------------------------
    @property
    def amqp_urls(self) -> str:
        """Every member's URL, comma-separated: an AMQP_URL for the whole cluster."""
        return ",".join(node.amqp_url for node in self.nodes)

    def node_named(self, name: str) -> RabbitNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise RabbitNodeError(f"{name} is not a member of this cluster")

    # --- life cycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Start every node and join them all to the first one."""
        first, *others = self.nodes
        for node in self.nodes:
            node.start()
        for node in others:
            node.rabbitmqctl("stop_app")
            node.rabbitmqctl("join_cluster", first.name)
            node.rabbitmqctl("start_app")
        for node in self.nodes:
            self.wait_until_member(node)

    def wait_until_member(self, node: RabbitNode, timeout_s: float = JOIN_TIMEOUT_S) -> None:
        """Wait until every running member sees `node` running in the cluster."""
        deadline = time.monotonic() + timeout_s
        while True:
            if all(node.name in self.running_members(seen_by=other) for other in self.up()):
                return
            if time.monotonic() > deadline:
                raise RabbitNodeError(f"{node.name} did not rejoin within {timeout_s:.0f} s")
            time.sleep(0.5)

    def running_members(self, *, seen_by: RabbitNode) -> set[str]:
        output = seen_by.rabbitmqctl("cluster_status", "--formatter", "json", check=False)
        try:
            return set(json.loads(output).get("running_nodes", []))
        except ValueError:
            return set()

    def up(self) -> list[RabbitNode]:
        return [node for node in self.nodes if node.running]

    def pause(self, node: RabbitNode) -> None:
        """SIGSTOP the node's Erlang VM: its sockets stay open and nothing answers on them."""
        os.kill(_vm_pid(node), signal.SIGSTOP)

    def resume(self, node: RabbitNode) -> None:
        os.kill(_vm_pid(node), signal.SIGCONT)

    def destroy(self) -> None:
        # SIGKILL ends a SIGSTOPped node too: no need to continue it first.
        for node in self.nodes:
            node.destroy()
        if self._epmd is not None:
            self._epmd.stop()

    # --- queues -------------------------------------------------------------------------
    def leader_of(self, queue: str, vhost: str = "/") -> RabbitNode:
        """The node holding the leader of quorum queue `queue`, as a running member sees it."""
        for node in self.up():
            output = node.rabbitmqctl(
                "list_queues", "-p", vhost, "name", "leader", "--formatter", "json", check=False
            )
            with contextlib.suppress(ValueError):
                for row in json.loads(output):
                    if row.get("name") == queue and row.get("leader"):
                        return self.node_named(str(row["leader"]))
        raise RabbitNodeError(f"no running member names a leader for {queue}")

    def move_leader(self, queue: str, to: RabbitNode, vhost: str = "/") -> None:
        """Hand the leadership of quorum queue `queue` to `to` (what maintenance mode does)."""
        if self.leader_of(queue, vhost) is to:
            return
        expression = (
            f"{{ok, Q}} = rabbit_amqqueue:lookup(rabbit_misc:r(<<{_erlang_binary(vhost)}>>, "
            f"queue, <<{_erlang_binary(queue)}>>)), "
            f"rabbit_quorum_queue:transfer_leadership(Q, '{to.name}')."
        )
        to.rabbitmqctl("eval", expression)
        deadline = time.monotonic() + 60
        while self.leader_of(queue, vhost) is not to:
            if time.monotonic() > deadline:
                raise RabbitNodeError(f"the leader of {queue} did not move to {to.name}")
            time.sleep(0.2)

    def wait_until_replicas_agree(self, queue: str, timeout_s: float = JOIN_TIMEOUT_S) -> None:
        """Wait until every member's replica of `queue` is online at the same commit index:
        a restarted node has caught up with what it missed."""
        deadline = time.monotonic() + timeout_s
        while True:
            states = self.replica_states(queue)
            indices = {state.get("Commit Index") for state in states}
            healthy = all(state.get("Raft State") in ("leader", "follower") for state in states)
            if len(states) == len(self.nodes) and healthy and len(indices) == 1:
                return
            if time.monotonic() > deadline:
                raise RabbitNodeError(f"the replicas of {queue} did not agree: {states}")
            time.sleep(0.5)

    def replica_states(self, queue: str, vhost: str = "/") -> list[dict[str, object]]:
        """`rabbitmq-queues quorum_status`: each member's Raft state and indices."""
        for node in self.up():
            # rabbit_node.py runs the CLI tools with the node's environment and cookie.
            output = node._cli(
                "rabbitmq-queues",
                "quorum_status",
                "-p",
                vhost,
                queue,
                "--formatter",
                "json",
                check=False,
                timeout_s=60,
            )
            with contextlib.suppress(ValueError):
                rows = json.loads(output)
                if isinstance(rows, list):
                    return [row for row in rows if isinstance(row, dict)]
        return []

    # --- clients ------------------------------------------------------------------------
    def nodes_used_by(self, pid: int) -> set[str]:
        """Names of the members process `pid` holds an established AMQP connection to."""
        by_port = {node.amqp_port: node.name for node in self.nodes}
        return {by_port[port] for port in _remote_ports(pid) if port in by_port}


def _set_cookie(node: RabbitNode, cookie: str) -> None:
    path = node.folder / "home" / ".erlang.cookie"
    owner = path.stat()
    path.chmod(0o600)
    path.write_text(cookie)
    path.chmod(0o400)
    os.chown(path, owner.st_uid, owner.st_gid)


def _vm_pid(node: RabbitNode) -> int:
    """The Erlang VM's OS pid, from the pid file RabbitMQ writes at boot."""
    text = (node.folder / "node.pid").read_text().strip()
    if not text.isdigit():
        raise RabbitNodeError(f"{node.name} wrote no pid file")
    return int(text)


def _erlang_binary(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _remote_ports(pid: int) -> list[int]:
    """Remote ports of the established TCP connections of process `pid` (Linux /proc)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    ports = []
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == _TCP_ESTABLISHED and fields[9] in inodes:
                    ports.append(int(fields[2].rpartition(":")[2], 16))
    return ports
