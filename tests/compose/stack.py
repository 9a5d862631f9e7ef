"""A copy of docker-compose.yml's stack of its own: its own project name, image tag and host
ports, so it runs beside the developer's stack and the machine's local services, and leaves
nothing behind (`down -v`, then its image is removed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.compose import COMPOSE_FILE, REPO_ROOT, interpolated_variables
from tests.support.ports import free_port

# The variables that move the published ports (docker-compose.yml, .env.example).
PORT_VARIABLES = (
    "RABBITMQ_AMQP_PORT",
    "RABBITMQ_UI_PORT",
    "POSTGRES_PORT",
    "MAILPIT_SMTP_PORT",
    "MAILPIT_UI_PORT",
    "PROMETHEUS_PORT",
)
IMAGE_REPOSITORY = "rabbit-welcome"
# Compose labels what it creates (images too) with the project's name.
PROJECT_LABEL = "com.docker.compose.project"


def docker_problem() -> str | None:
    """Why the stack cannot run here, or None when a Docker engine and Compose answer."""
    if shutil.which("docker") is None:
        return "the compose test needs Docker, and no `docker` command is on PATH"
    for probe, what in (
        (["docker", "info"], "no Docker engine answers"),
        (["docker", "compose", "version"], "Docker Compose v2 (`docker compose`) is missing"),
    ):
        try:
            result = subprocess.run(probe, capture_output=True, text=True, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            return f"{what}: `{' '.join(probe)}` did not answer within 60 s"
        if result.returncode != 0:
            last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
            return f"{what} (`{' '.join(probe)}`: {last_line}); start dockerd and run it again"
    return None


@dataclass
class ComposeStack:
    project: str
    # The whole process environment: kept out of repr, so no failure message shows a secret.
    environment: dict[str, str] = field(repr=False)
    env_file: Path

    @classmethod
    def new(cls, folder: Path) -> ComposeStack:
        """A stack with the compose file's defaults but its own name, image tag and ports."""
        project = f"rwtest-{uuid.uuid4().hex[:8]}"
        # The demo defaults, whatever the shell or a .env file set (the quick start as a new
        # user runs it): drop every variable the compose file reads, then move what must move.
        read = interpolated_variables(COMPOSE_FILE.read_text(encoding="utf-8"))
        environment = {
            name: value
            for name, value in os.environ.items()
            if name not in read and not name.startswith("COMPOSE_")
        }
        ports: set[int] = set()
        while len(ports) < len(PORT_VARIABLES):
            ports.add(free_port())
        environment.update(zip(PORT_VARIABLES, map(str, sorted(ports)), strict=True))
        environment["APP_IMAGE_TAG"] = project
        env_file = folder / "empty.env"  # instead of the repository's .env, if there is one
        env_file.write_text("", encoding="utf-8")
        return cls(project=project, environment=environment, env_file=env_file)

    @property
    def image(self) -> str:
        return f"{IMAGE_REPOSITORY}:{self.environment['APP_IMAGE_TAG']}"

    def port(self, variable: str) -> int:
        return int(self.environment[variable])

    def compose(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        command = [
            "docker",
            "compose",
            "--project-directory",
            str(REPO_ROOT),
            "--project-name",
            self.project,
            "--env-file",
            str(self.env_file),
            *args,
        ]
        return subprocess.run(
            command,
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def must(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        """Run `docker compose ARGS`; fail with its output (and the services' logs) if it fails."""
        result = self.compose(*args, timeout_s=timeout_s)
        if result.returncode != 0:
            logs = self.compose("logs", "--no-color", "--tail", "30").stdout
            raise AssertionError(
                f"docker compose {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stderr[-4000:]}\n--- last log lines ---\n{logs[-6000:]}"
            )
        return result

    def register(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.compose("run", "--rm", "-T", "producer", "register", *args)

    def container_ids(self, service: str) -> set[str]:
        return set(self.must("ps", "--quiet", service).stdout.split())

    def states(self) -> dict[str, tuple[str, str]]:
        """Container name -> (state, health) of the running containers."""
        output = self.must("ps", "--format", "json").stdout.strip()
        # Compose prints a JSON array (older releases) or one object per line (newer ones).
        if output.startswith("["):
            rows: list[dict[str, Any]] = json.loads(output)
        else:
            rows = [json.loads(line) for line in output.splitlines() if line.strip()]
        return {row["Name"]: (row["State"], row.get("Health", "")) for row in rows}

    def built_images(self) -> list[str]:
        """Every image, tagged or dangling, that a build of this project made."""
        return sorted(set(self._labelled("images", "--all")))

    def volumes(self) -> list[str]:
        return self._labelled("volume", "ls")

    def _labelled(self, *command: str) -> list[str]:
        """The ids `docker COMMAND --quiet` lists for this project's label."""
        result = subprocess.run(
            ["docker", *command, "--quiet", "--filter", f"label={PROJECT_LABEL}={self.project}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout.split()

    def emails(self) -> list[dict[str, Any]]:
        """The messages Mailpit caught, from its API."""
        url = f"http://127.0.0.1:{self.port('MAILPIT_UI_PORT')}/api/v1/messages?limit=1000"
        with urllib.request.urlopen(url, timeout=10) as response:
            document: dict[str, Any] = json.load(response)
        messages: list[dict[str, Any]] = document.get("messages") or []
        return messages

    def recipients(self) -> list[str]:
        return sorted(
            recipient["Address"] for message in self.emails() for recipient in message["To"]
        )

    def queue_counts(self) -> dict[str, tuple[int, int]]:
        """Queue name -> (ready, unacknowledged), from rabbitmqctl in the broker's container."""
        listing = self.must(
            "exec",
            "-T",
            "rabbitmq",
            "rabbitmqctl",
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ).stdout
        counts = {}
        for line in listing.splitlines():
            name, ready, unacknowledged = line.split()
            counts[name] = (int(ready), int(unacknowledged))
        return counts

    def down(self) -> None:
        """Remove the containers, the volumes and this stack's image."""
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "30", timeout_s=300)
        subprocess.run(
            ["docker", "image", "rm", "--force", self.image],
            capture_output=True,
            timeout=120,
            check=False,
        )
