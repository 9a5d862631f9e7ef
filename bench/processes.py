"""Running the measured programs as subprocesses: start, watch, stop, read their memory."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


class ProcessDied(RuntimeError):
    """A measured process exited while the benchmark still needed it."""


class Service:
    """A long-running subprocess (the worker, the relay, a Dramatiq worker) and its log file."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        """Raise `ProcessDied`, quoting the end of its log, if the process has exited."""
        code = self.process.poll()
        if code is not None:
            raise ProcessDied(f"{self.name} exited with {code}: {self.log_tail()}")

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout_s`; returns the exit code (None if killed)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return None
        return self.process.returncode


def python_command(module: str, *args: str) -> list[str]:
    """`python -m module args...` with this interpreter, so the same environment runs it."""
    return [sys.executable, "-m", module, *args]


@contextmanager
def running(
    name: str, command: list[str], env: Mapping[str, str], log_dir: Path
) -> Iterator[Service]:
    """Start `command` with `env` added to ours; stop it (SIGTERM) when the block ends."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    service = Service(name, process, log_path)
    try:
        yield service
    finally:
        service.stop()


def run_to_end(
    name: str, command: list[str], env: Mapping[str, str], log_dir: Path, timeout_s: float
) -> subprocess.CompletedProcess[bytes]:
    """Run `command` to its end; `ProcessDied` with its output if it fails."""
    result = subprocess.run(
        command,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    (log_dir / f"{name}.log").write_bytes(result.stdout + result.stderr)
    if result.returncode != 0:
        tail = " | ".join(result.stderr.decode(errors="replace").strip().splitlines()[-8:])
        raise ProcessDied(f"{name} exited with {result.returncode}: {tail}")
    return result


def resident_memory_bytes(pid: int) -> int:
    """Resident set size of `pid`: Linux's /proc, else psutil where it is installed."""
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    # Elsewhere (macOS) psutil knows; it is a tool here, not a dependency, hence the lookup.
    psutil = importlib.import_module("psutil")
    return int(psutil.Process(pid).memory_info().rss)


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by `pid` and its live descendants (Linux).

    The Dramatiq command forks its worker processes, so the parent alone would show nothing.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    used: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name may hold spaces; the fields after its closing ")" do not.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        parents[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = int(fields[11]) + int(fields[12])
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    return sum(used.get(member, 0) for member in tree) / ticks
