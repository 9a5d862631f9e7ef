"""The commands tests/support/rabbit_install.py builds to run RabbitMQ from a root filesystem."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.rabbit_install import RabbitInstallError, configured_install


def _fake_root(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nrabbitmq:x:64990:64990::/var/lib/rabbitmq:/bin/false\n"
    )
    (tmp_path / "usr/lib/rabbitmq/bin").mkdir(parents=True)
    (tmp_path / "usr/lib/rabbitmq/bin/rabbitmq-server").write_text("")
    (tmp_path / "usr/lib/rabbitmq/lib/rabbitmq_server-4.0.5").mkdir(parents=True)
    return tmp_path


def test_a_node_in_a_root_runs_chrooted_as_its_rabbitmq_user_with_only_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_RABBITMQ_ROOT", str(_fake_root(tmp_path)))
    monkeypatch.setattr("os.geteuid", lambda: 0)
    install = configured_install()
    argv = install.command("rabbitmqctl", {"HOME": "/tmp/n/home"}, "status")
    assert argv[:3] == ["unshare", "--mount", "--"]
    assert argv[argv.index("sh", 4) + 1 : argv.index("/usr/bin/env")] == [
        str(tmp_path.resolve()),
        "64990:64990",
    ]
    assert argv[argv.index("/usr/bin/env") :] == [
        "/usr/bin/env",
        "-i",
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/tmp/n/home",
        "/usr/lib/rabbitmq/bin/rabbitmqctl",
        "status",
    ]
    assert install.version == "4.0.5"
    assert install.inside(tmp_path.resolve() / "tmp" / "n") == "/tmp/n"


def test_a_root_needs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_RABBITMQ_ROOT", str(_fake_root(tmp_path)))
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(RabbitInstallError, match="needs root"):
        configured_install().command("rabbitmq-server", {})


def test_a_root_without_rabbitmq_is_refused_with_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_RABBITMQ_ROOT", str(tmp_path))
    with pytest.raises(RabbitInstallError, match=r"\.ci/rabbitmq4-root"):
        configured_install()


def test_without_a_root_the_installed_rabbitmq_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_RABBITMQ_ROOT", raising=False)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    install = configured_install()
    assert not install.in_own_root
    assert install.epmd_command(4369) is None
    assert install.command("rabbitmqctl", {})[0] == "/usr/bin/env"
