"""The quick start's stack, brought up once for the module's tests and removed afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.compose.stack import ComposeStack, docker_problem


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    problem = docker_problem()
    if problem is not None:
        # Not a skip: a green run must mean the quick start really ran.
        pytest.fail(problem, pytrace=False)
    system = ComposeStack.new(tmp_path_factory.mktemp("compose"))
    try:
        # As the README says, with -d so the test goes on; --wait: until every healthcheck passes.
        system.must("up", "--build", "--detach", "--wait", timeout_s=900)
        yield system
    finally:
        system.down()
