"""The default test run (`make test`) covers every test folder but tests/compose."""

from __future__ import annotations

import tomllib

from tests.support.compose import REPO_ROOT

# Runs docker-compose.yml's whole stack; `make compose-test` runs it, and .ci/run where Docker is.
OWN_TARGET = {"tests/compose"}


def test_testpaths_name_every_test_folder_but_the_compose_one() -> None:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    testpaths = set(config["tool"]["pytest"]["ini_options"]["testpaths"])
    folders = {
        str(path.parent.relative_to(REPO_ROOT)) for path in (REPO_ROOT / "tests").rglob("test_*.py")
    }
    top_level = {"/".join(folder.split("/")[:2]) for folder in folders}
    assert testpaths == top_level - OWN_TARGET
    assert top_level >= OWN_TARGET, "tests/compose has no tests"
