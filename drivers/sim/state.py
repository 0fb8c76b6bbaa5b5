"""`SimStateFile`: the physical state of one simulated EVSE (meter register, EV plugged) kept on disk.

Real hardware outlives the station process: a meter's register does not return to its initial value
and a plugged EV does not leave because the station lost power. The simulation keeps the same facts in
a small JSON file per EVSE in the data dir, written (atomically, fsync'ed) before a value is reported,
so no reading the station ever saw is lost by a SIGKILL. Editing the file while the station is stopped
stands for a change of the physical world during the outage (the EV left).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

ENERGY_KEY: Final = "energy_import_wh"
EV_PLUGGED_KEY: Final = "ev_plugged"


class SimStateFile:
    """A JSON object on disk; `get` reads the loaded copy, `set` rewrites the file durably."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._values: dict[str, float | bool] = {}
        try:
            loaded = json.loads(path.read_text())
        except FileNotFoundError:
            loaded = {}
        except (OSError, ValueError) as exc:
            # A broken file must not keep the simulated station from starting; say what was lost.
            log.warning("%s: unreadable simulation state (%s); starting from the configuration", path, exc)
            loaded = {}
        if isinstance(loaded, dict):
            self._values = {k: v for k, v in loaded.items() if isinstance(v, int | float | bool)}

    def get_float(self, key: str) -> float | None:
        value = self._values.get(key)
        return None if value is None or isinstance(value, bool) else float(value)

    def get_bool(self, key: str) -> bool | None:
        value = self._values.get(key)
        return value if isinstance(value, bool) else None

    def set(self, key: str, value: float | bool) -> None:
        if self._values.get(key) == value and type(self._values.get(key)) is type(value):
            return
        self._values[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as handle:
            json.dump(self._values, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
