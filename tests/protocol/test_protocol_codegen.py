"""The committed message models are exactly what the generator makes from the official schemas."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from evstation.protocol._codegen import generate
from evstation.protocol.messages import actions
from evstation.protocol.versions import OcppVersion


@pytest.mark.parametrize("version", ["v16", "v201"])
def test_committed_models_match_a_fresh_generation_byte_for_byte(version: str) -> None:
    committed = generate.target(version).read_bytes()
    assert generate.render(version).encode("utf-8") == committed
    for name, text in generate.render_files(version).items():
        assert (generate.PROTOCOL_DIR / version / name).read_bytes() == text.encode("utf-8"), name
    assert generate.stale_files(version) == {}


def test_a_file_the_generator_no_longer_makes_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "v201").mkdir()
    for name, text in generate.render_files("v201").items():
        (tmp_path / "v201" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "v201" / name).write_text(text, encoding="utf-8")
    leftover = tmp_path / "v201" / "_actions" / "renamed_action.py"
    leftover.write_text("", encoding="utf-8")
    monkeypatch.setattr(generate, "PROTOCOL_DIR", tmp_path)
    assert generate.stale_files("v201") == {leftover: None}


@pytest.mark.parametrize("version", ["v16", "v201"])
def test_every_class_is_defined_once_and_reachable_by_its_name(version: str) -> None:
    module = importlib.import_module(f"evstation.protocol.{version}.messages")
    homes: dict[str, str] = module._HOMES
    for name, home in homes.items():
        cls = getattr(module, name)
        assert cls.__name__ == name
        assert cls.__module__ == f"evstation.protocol.{version}.{home}"
    for action, (request, response) in module.ACTIONS.items():
        assert (request.__name__, response.__name__) == (f"{action}Request", f"{action}Response")


def test_generation_is_deterministic() -> None:
    assert generate.render("v201") == generate.render("v201")


def test_check_flag_passes_on_the_committed_tree() -> None:
    assert generate.main(["--check"]) == 0


@pytest.mark.parametrize(
    ("version", "ocpp_version", "schemas", "action_count"),
    [("v16", OcppVersion.V16, 78, 39), ("v201", OcppVersion.V201, 128, 64)],
)
def test_every_schema_has_a_model(
    version: str, ocpp_version: OcppVersion, schemas: int, action_count: int
) -> None:
    files = generate.load_schemas(version)
    assert len(files) == schemas
    names = {file.action for file in files}
    assert len(names) == action_count
    assert actions(ocpp_version) == names
    for file in files:
        assert (file.action, file.kind) in {(name, kind) for name in names for kind in generate.KINDS}


def test_security_whitepaper_messages_are_in_16() -> None:
    assert {"SignCertificate", "CertificateSigned", "SecurityEventNotification", "GetLog"} <= actions(
        OcppVersion.V16
    )


_PROBE = textwrap.dedent(
    """
    import sys
    from evstation.protocol import messages
    from evstation.protocol.versions import OcppVersion
    versions = ("evstation.protocol.v16", "evstation.protocol.v201")
    assert not any(name.startswith(versions) for name in sys.modules), "messages imported a version"
    messages.parse_request(OcppVersion.{use}, "Heartbeat", {{}})
    messages.actions(OcppVersion.{use})
    loaded = sorted(name for name in sys.modules if name.startswith(versions))
    foreign = [name for name in sys.modules
               if name.startswith(("ocpp", "hypothesis", "jsonschema", "evstation.protocol._codegen"))]
    print(loaded, foreign)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("use", "expected"),
    [
        (
            "V16",
            [
                "evstation.protocol.v16",
                "evstation.protocol.v16._actions",
                "evstation.protocol.v16._actions.heartbeat",
                "evstation.protocol.v16.messages",
            ],
        ),
        (
            "V201",
            [
                "evstation.protocol.v201",
                "evstation.protocol.v201._actions",
                "evstation.protocol.v201._actions.heartbeat",
                "evstation.protocol.v201._types",
                "evstation.protocol.v201._types.custom_data_type",
                "evstation.protocol.v201.messages",
            ],
        ),
    ],
)
def test_a_version_is_imported_only_when_used_and_alone(use: str, expected: list[str]) -> None:
    """A version's models load when first used, and then only the used action's classes (listing the
    actions loads none)."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(use=use)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == f"{expected} []"
