"""Which RabbitMQ the tests run: the machine's own, or one in a root filesystem of its own.

Debian 12 packages RabbitMQ 3.10; RabbitMQ 4 needs Erlang 26+, which it has not.
`.ci/rabbitmq4-root` builds a Debian trixie root filesystem holding RabbitMQ 4.0, and
TEST_RABBITMQ_ROOT names it:
every private node then runs inside it (`chroot`, as the `rabbitmq` user of that root), and so
does the suite's shared broker (tests/support/broker.py). Unset, the installed RabbitMQ runs.

A node in a root filesystem needs root (chroot, mount), a /proc of its own (its memory monitor
reads /proc/meminfo; it is mounted in a private mount namespace, so nothing is left mounted on
the host) and an epmd of its own, so that a node of one version never registers with the epmd of
the other's; the caller runs that epmd (`epmd_command`).
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT_VARIABLE: Final = "TEST_RABBITMQ_ROOT"
HOST_ROOT: Final = Path("/")
# Inside a root filesystem built by .ci/rabbitmq4-root: Debian's layout.
_ROOT_BIN: Final = Path("/usr/lib/rabbitmq/bin")
_ROOT_PATH: Final = "/usr/sbin:/usr/bin:/sbin:/bin"
_NODE_USER: Final = "rabbitmq"
# $1 the root, $2 uid:gid, then the command: /proc is mounted in this process's own mount
# namespace (unshare --mount makes it private), so it disappears with the node.
_ENTER_ROOT: Final = (
    'root=$1 spec=$2; shift 2; mount -t proc proc "$root/proc" '
    '&& exec chroot --userspec="$spec" "$root" "$@"'
)


class RabbitInstallError(RuntimeError):
    """The RabbitMQ installation the tests were told to use cannot be used."""


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class RabbitInstall:
    """A RabbitMQ installation: the host's (root `/`) or one in a root filesystem."""

    root: Path
    bin_dir: Path

    @property
    def in_own_root(self) -> bool:
        return self.root != HOST_ROOT

    @property
    def version(self) -> str:
        """The server version, from the folder name of its Erlang application (no node needed)."""
        library = self.root / self.bin_dir.relative_to("/").parent / "lib"
        for path in sorted(library.glob("rabbitmq_server-*")):
            return path.name.removeprefix("rabbitmq_server-")
        return "unknown"

    def account(self) -> Account | None:
        """Who runs the node: the root filesystem's `rabbitmq` user, the host's when the tests
        run as root (RabbitMQ's own scripts would switch to it too), else None: stay as we are."""
        if self.in_own_root:
            return _account_in(self.root / "etc" / "passwd")
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(_NODE_USER)
        except KeyError:
            raise RabbitInstallError("running as root but there is no `rabbitmq` user") from None
        return Account(_NODE_USER, entry.pw_uid, entry.pw_gid)

    def inside(self, path: Path) -> str:
        """`path` (on the host) as the node sees it."""
        return "/" + str(path.relative_to(self.root)) if self.in_own_root else str(path)

    def scratch_parent(self) -> Path | None:
        """Where a node's folder must be made so that the node can see it (None: anywhere)."""
        return self.root / "tmp" if self.in_own_root else None

    def command(self, tool: str, environment: Mapping[str, str], *args: str) -> list[str]:
        """argv running RabbitMQ's `tool` as the node's account, with exactly `environment`
        (plus PATH), self-contained: no `env=` or `user=` needed from the caller."""
        path = _ROOT_PATH if self.in_own_root else os.environ.get("PATH", _ROOT_PATH)
        inner = [
            "/usr/bin/env",
            "-i",
            f"PATH={path}",
            *(f"{key}={value}" for key, value in environment.items()),
            str(self.bin_dir / tool),
            *args,
        ]
        return self._as_node_account(inner)

    def epmd_command(self, port: int) -> list[str] | None:
        """argv of a foreground epmd on 127.0.0.1:`port` for a node in a root filesystem."""
        if not self.in_own_root:
            return None
        return self._as_node_account(["/usr/bin/epmd", "-port", str(port), "-address", "127.0.0.1"])

    def _as_node_account(self, argv: list[str]) -> list[str]:
        account = self.account()
        if account is None:
            return argv
        spec = f"{account.uid}:{account.gid}"
        if not self.in_own_root:
            # chroot to / changes nothing but the user: the argv stays self-contained.
            return ["chroot", f"--userspec={spec}", "/", *argv]
        if os.geteuid() != 0:
            raise RabbitInstallError(
                f"{ROOT_VARIABLE}={self.root}: running RabbitMQ from a root filesystem needs root"
            )
        return [
            "unshare",
            "--mount",
            "--",
            "sh",
            "-c",
            _ENTER_ROOT,
            "sh",
            str(self.root),
            spec,
            *argv,
        ]


def _account_in(passwd: Path) -> Account:
    try:
        lines = passwd.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise RabbitInstallError(f"cannot read {passwd}: {error.strerror}") from None
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == _NODE_USER:
            return Account(_NODE_USER, int(fields[2]), int(fields[3]))
    raise RabbitInstallError(
        f"{passwd} has no `{_NODE_USER}` user; rebuild with .ci/rabbitmq4-root"
    )


def host_install() -> RabbitInstall:
    return RabbitInstall(
        HOST_ROOT, Path(os.environ.get("RABBITMQ_BIN_DIR", "/usr/lib/rabbitmq/bin"))
    )


def configured_install() -> RabbitInstall:
    """The installation TEST_RABBITMQ_ROOT names, else the host's."""
    named = os.environ.get(ROOT_VARIABLE, "")
    if not named:
        return host_install()
    return root_install(Path(named), named_by=ROOT_VARIABLE)


def root_install(root: Path, *, named_by: str) -> RabbitInstall:
    """The RabbitMQ in root filesystem `root`, which the variable `named_by` gave."""
    install = RabbitInstall(root.resolve(), _ROOT_BIN)
    if not (install.root / _ROOT_BIN.relative_to("/") / "rabbitmq-server").is_file():
        raise RabbitInstallError(
            f"{named_by}={root} holds no RabbitMQ ({_ROOT_BIN}/rabbitmq-server is missing); "
            "build it with .ci/rabbitmq4-root"
        )
    return install
