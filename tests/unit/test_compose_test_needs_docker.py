"""tests/compose fails, with the reason, where no Docker engine answers: it never skips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.compose import REPO_ROOT


def test_the_compose_test_fails_and_says_why_without_a_docker_engine(tmp_path: Path) -> None:
    # A socket nobody listens on: `docker info` fails at once, as on a machine without dockerd.
    environment = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path / 'no-dockerd.sock'}"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/compose", "-p", "no:cacheprovider", "-q", "-rA"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "no Docker engine answers" in output
    assert "skipped" not in output
