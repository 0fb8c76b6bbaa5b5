"""Start-up cost: a station loads the driver code its configuration names, and nothing else.

Each case runs in a fresh interpreter, since this process has long imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

_PROBE = """
import json, sys
from collections.abc import Mapping
from pathlib import Path
from evstation.runtime import cli  # noqa: F401 - what `evstation run` imports first
from evstation.runtime.config import parse_config
from evstation.runtime.station import ModbusLines, build_evses
evse = {"id": 1, "connector": [{"id": 1, "type": "cType2", "max_current_a": 32}], **json.loads(sys.argv[1])}
config = parse_config(
    {
        "station": {"id": "S", "vendor": "v", "model": "m", "ocpp_version": "2.0.1", "data_dir": sys.argv[2]},
        "csms": {"endpoints": [{"url": "ws://127.0.0.1:9/ocpp", "security_profile": 0}]},
        "evse": [evse],
    },
    base_dir=Path(sys.argv[2]),
)
lines = ModbusLines()
build_evses(config, lines)
lines.close()
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("pymodbus", "serial", "evstation"))))
"""


def _modules_loaded(evse: Mapping[str, object], tmp_path: Path) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(evse), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(json.loads(done.stdout))


def test_a_simulated_station_loads_no_modbus_and_no_board_driver(tmp_path: Path) -> None:
    loaded = _modules_loaded({"controller": {"driver": "sim"}, "meter": {"driver": "sim"}}, tmp_path)
    assert "evstation.drivers.sim.meter" in loaded
    assert not {m for m in loaded if m.startswith(("pymodbus", "serial"))}
    assert not {
        m for m in loaded if m.startswith(("evstation.drivers.boards", "evstation.drivers.meters.modbus"))
    }
    assert "evstation.drivers.meters.model" not in loaded


def test_a_station_on_a_board_loads_that_board_only_and_no_simulator(tmp_path: Path) -> None:
    board = {"controller": {"driver": "yeti", "device": "/dev/null"}, "meter": {"driver": "board"}}
    loaded = _modules_loaded(board, tmp_path)
    assert "evstation.drivers.boards.yeti" in loaded
    assert "evstation.drivers.boards.rapi" not in loaded
    assert not {m for m in loaded if m.startswith(("evstation.drivers.sim", "pymodbus"))}


def test_a_modbus_meter_loads_pymodbus_and_not_the_other_board(tmp_path: Path) -> None:
    meter = {"driver": "modbus", "model": "sdm630", "transport": "tcp", "host": "127.0.0.1"}
    loaded = _modules_loaded(
        {"controller": {"driver": "rapi", "device": "/dev/null"}, "meter": meter}, tmp_path
    )
    assert {"evstation.drivers.boards.rapi", "evstation.drivers.meters.modbus", "pymodbus"} <= loaded
    assert "evstation.drivers.boards.yeti" not in loaded
    assert not {m for m in loaded if m.startswith("evstation.drivers.sim")}


_SESSION_PROBE = """
import json, sys, tempfile, trio
from pathlib import Path
from evstation.runtime import cli  # noqa: F401
from evstation.runtime.config import parse_config
from evstation.runtime.station import open_station
from evstation.runtime.testcsms import serve_test_csms

async def main(version: str) -> None:
    tmp = Path(tempfile.mkdtemp())
    async with trio.open_nursery() as nursery:
        csms = await nursery.start(serve_test_csms)
        config = parse_config(
            {
                "station": {"id": "S", "vendor": "v", "model": "m", "ocpp_version": version,
                            "data_dir": str(tmp)},
                "csms": {"endpoints": [{"url": f"ws://127.0.0.1:{csms.port}/ocpp", "security_profile": 0}]},
                "evse": [{"id": 1, "connector": [{"id": 1, "type": "cType2", "max_current_a": 32}],
                          "controller": {"driver": "sim"}, "meter": {"driver": "sim"}}],
            },
            base_dir=tmp,
        )
        async with open_station(config) as station:
            await station.session.uplink.wait_online()
            await csms.wait_for("S", "StatusNotification", 1)
        nursery.cancel_scope.cancel()
    packages = ("evstation", "pymodbus", "serial")
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in packages)))

trio.run(main, sys.argv[1])
"""


_BOOT_MODELS = {
    "1.6": [
        "evstation.protocol.v16",
        "evstation.protocol.v16._actions",
        "evstation.protocol.v16._actions.boot_notification",
        "evstation.protocol.v16._actions.status_notification",
        "evstation.protocol.v16.messages",
    ],
    "2.0.1": [
        "evstation.protocol.v201",
        "evstation.protocol.v201._actions",
        "evstation.protocol.v201._actions.boot_notification",
        "evstation.protocol.v201._actions.status_notification",
        "evstation.protocol.v201._types",
        "evstation.protocol.v201._types.custom_data_type",
        "evstation.protocol.v201._types.status_info_type",
        "evstation.protocol.v201.messages",
    ],
}


# Loaded on first use only, never by a start up to the first StatusNotifications (issue 9): the 1.6
# key map (GetConfiguration / ChangeConfiguration) and the control API's request models (a control
# client's first request).
_NOT_AT_START = ("evstation.protocol.device_model.v16", "evstation.runtime.control_requests")
# What a simulated station's configuration does not name.
_OTHER_DRIVERS = ("evstation.drivers.boards", "evstation.drivers.meters.modbus", "pymodbus", "serial")


def _session_modules(version: str, tmp_path: Path) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", _SESSION_PROBE, version],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_station_builds_only_the_message_models_it_exchanges(tmp_path: Path) -> None:
    """DESIGN: a 1.6 station never imports the 2.0.1 models (and the other way round), through a whole
    boot, status and heartbeat-ready session: every block binds the models lazily (VersionModels).
    Within its version it builds only the classes of the actions it has exchanged (BootNotification,
    StatusNotification), not the other 60-odd actions' (start-up time and memory, issue 9). Nor does it
    load what is only needed on a later request (`_NOT_AT_START`)."""
    models = ("evstation.protocol.v16", "evstation.protocol.v201")
    for version, expected in _BOOT_MODELS.items():
        loaded = _session_modules(version, tmp_path)
        assert sorted(m for m in loaded if m.startswith(models)) == expected, version
        assert "evstation.runtime.control" in loaded  # the control socket is served from the start
        assert not loaded & set(_NOT_AT_START), version
        # The whole start (the device model's layout asks the configured drivers which faults they
        # raise: runtime/fault_components.py), not just building the EVSEs, leaves other drivers out.
        assert not {m for m in loaded if m.startswith(_OTHER_DRIVERS)}, version
