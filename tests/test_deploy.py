"""deploy/: the systemd unit and the station.toml it runs agree with each other, with what the station
does (Type=notify, a watchdog, the folders it writes) and with systemd itself (systemd-analyze verify)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from evstation.runtime.config import load_config

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "evstation.service"


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> every value given (systemd allows a key more than once)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"a setting outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


@pytest.fixture
def service() -> dict[str, list[str]]:
    return unit_settings(UNIT.read_text())["Service"]


def test_unit_is_notify_with_watchdog_and_restart(service: dict[str, list[str]]) -> None:
    assert service["Type"] == ["notify"]
    assert float(service["WatchdogSec"][0]) > 0
    assert service["Restart"] == ["always"]
    assert service["RestartPreventExitStatus"] == ["2"]  # a configuration error (cli.EXIT_USAGE)


def test_unit_runs_a_dedicated_user_who_may_open_serial_ports(service: dict[str, list[str]]) -> None:
    assert service["User"] == ["evstation"]
    assert "dialout" in service["SupplementaryGroups"][0].split()


def test_unit_folders_are_the_ones_the_station_toml_uses(service: dict[str, list[str]]) -> None:
    (state,) = service["StateDirectory"]
    (runtime,) = service["RuntimeDirectory"]
    exec_start = service["ExecStart"][0].split()
    assert exec_start[1:3] == ["run", "--config"]
    assert Path(exec_start[3]) == Path("/etc/evstation") / "station.toml"
    config = load_config(DEPLOY / "station.toml")
    assert config.station.data_dir == Path("/var/lib") / state
    assert config.control_socket_path.parent == Path("/run") / runtime


def test_shipped_configs_do_not_call_the_supported_board_a_family() -> None:
    # docs/boards.md: PhyVerso and other EVerest boards share the Yeti's framing, not its protocol; a
    # sample config saying "Yeti-family" would invite an installer to wire one of them to driver "yeti".
    for path in [
        *DEPLOY.glob("*.toml"),
        *(REPO / "hil").glob("*.toml"),
        *(REPO / "examples").rglob("*.toml"),
    ]:
        assert "yeti-family" not in path.read_text().lower(), path


def test_deployment_doc_states_the_setuptools_minimum_pyproject_requires() -> None:
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    (setuptools,) = [r for r in requires if r.startswith("setuptools")]
    minimum = re.fullmatch(r"setuptools>=(\d+)", setuptools)
    assert minimum is not None, setuptools
    assert f"setuptools {minimum[1]}" in (REPO / "docs" / "deployment.md").read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # The unit names the installed command; point it at this checkout's so systemd can check it exists.
    evstation = Path(sys.executable).parent / "evstation"
    text = UNIT.read_text().replace("/opt/evstation/venv/bin/evstation", str(evstation))
    (tmp_path / "evstation.service").write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "evstation.service")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""  # an unknown or misspelt key is a warning there
