"""docs/hardware.md's fault-code table is the code's table: every FaultCode, its MREC code, its OCPP 1.6
ChargePointErrorCode and whether it blocks the connector, so the page cannot drift from drivers/api.py."""

from __future__ import annotations

from pathlib import Path

from evstation.drivers.api import NON_BLOCKING_FAULTS, FaultCode, mrec_code, ocpp16_error_code

PAGE = Path(__file__).resolve().parents[2] / "docs" / "hardware.md"


def _fault_rows() -> dict[str, list[str]]:
    text = PAGE.read_text(encoding="utf-8")
    section = text.split("## Fault codes", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 5:
            assert cells[0] not in rows, f"{cells[0]} listed twice"
            rows[cells[0]] = cells[1:]
    return rows


def test_hardware_page_lists_every_fault_code_as_the_code_maps_it() -> None:
    rows = _fault_rows()
    assert set(rows) == {code.name for code in FaultCode}
    for code in FaultCode:
        value, mrec, ocpp16, connector = rows[code.name]
        assert value == code.value, code
        assert mrec == (mrec_code(code) or "-"), code
        assert ocpp16 == ocpp16_error_code(code), code
        assert connector == ("operative" if code in NON_BLOCKING_FAULTS else "Faulted"), code


def test_hardware_page_links_exist() -> None:
    text = PAGE.read_text(encoding="utf-8")
    for target in ("boards.md", "meters.md", "configuration.md", "../hil/README.md"):
        assert f"]({target}" in text
        assert (PAGE.parent / target).exists(), target


def test_hardware_page_lists_the_notify_event_component_of_every_fault_code() -> None:
    """The 2.0.1 NotifyEvent table is runtime/fault_components.py's FAULT_COMPONENTS."""
    from evstation.runtime.fault_components import FAULT_COMPONENTS

    text = PAGE.read_text(encoding="utf-8")
    section = text.split("### OCPP 2.0.1: NotifyEvent", 1)[1].split("\n## ", 1)[0]
    listed: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 3:
            for name in cells[0].split(","):
                listed[name.strip().strip("`")] = cells[1].split(" (", 1)[0]
    assert listed == {code.name: component for code, (component, _) in FAULT_COMPONENTS.items()}
