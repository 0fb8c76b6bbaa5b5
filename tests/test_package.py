"""The distribution installs one top-level package and a working console script."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import evstation
from evstation.protocol.versions import OcppVersion


def test_layers_are_subpackages_of_evstation() -> None:
    for layer in ("protocol", "runtime", "drivers"):
        assert importlib.util.find_spec(f"evstation.{layer}") is not None


def test_generic_top_level_names_are_not_installed() -> None:
    # Run from / so the repository checkout is not on sys.path.
    names = "('protocol', 'runtime', 'drivers')"
    code = f"import importlib.util as u; print([n for n in {names} if u.find_spec(n)])"
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "evstation", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"evstation {evstation.__version__}"


def test_license_file_is_the_apache_2_0_text_pyproject_names() -> None:
    repo = Path(__file__).resolve().parents[1]
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    (name,) = project["license-files"]
    words = " ".join((repo / name).read_text().split())
    assert words.startswith("Apache License Version 2.0, January 2004 http://www.apache.org/licenses/")
    assert "END OF TERMS AND CONDITIONS" in words  # the whole licence, not its first lines only


def test_subprotocol_names() -> None:
    assert OcppVersion.V16.subprotocol == "ocpp1.6"
    assert OcppVersion.from_subprotocol("ocpp2.0.1") is OcppVersion.V201


def test_error_codes_are_spelled_per_version() -> None:
    from evstation.protocol.errors import ErrorKind, codes_for, error_code

    assert error_code(ErrorKind.FORMAT, OcppVersion.V16) == "FormationViolation"
    assert error_code(ErrorKind.FORMAT, OcppVersion.V201) == "FormatViolation"
    for version in OcppVersion:
        for kind in ErrorKind:
            assert error_code(kind, version) in codes_for(version)
