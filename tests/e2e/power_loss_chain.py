"""Power loss, end to end: a station process charging is SIGKILLed and restarted, repeatedly.

Each round: plug in and tap a card (a transaction starts), SIGKILL; restart with the EV still plugged
in (the simulated hardware's state file says so) -> the transaction resumes under the same id; SIGKILL
again; the EV leaves while the station is down (the state file is edited); restart -> the transaction
ends with reason PowerLoss. Then the whole CSMS log is checked: every transaction started once and
ended once, 2.0.1 seqNos contiguous, 1.6 messages all under the CSMS's transactionId, the energy
register never backwards, nothing lost.

Used by test_e2e_power_loss.py (5 rounds per version) and as a soak script:
    .venv/bin/python tests/e2e/power_loss_chain.py --rounds 20
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from e2e_station import ControlClient, control_client, short_dir, station_process, terminate, write_config

from evstation.runtime.testcsms import TestCsms, serve_test_csms

STATION = "E2E-POWER-LOSS"
ROUND_TIMEOUT_S = 30.0
TOKEN = "E2E-PL-TOKEN"


@dataclass
class Figures:
    version: str
    rounds: int
    transactions: int = 0
    resumed: int = 0
    ended_power_loss: int = 0
    messages: int = 0
    duplicates: int = 0  # re-sent after a kill (unacknowledged when it died): allowed, counted
    max_energy_wh: float = 0.0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def _own(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The event's meter values taken at its time (an Ended event also carries the earlier ones)."""
    meters: list[dict[str, Any]] = event.get("meterValue", [])
    if event["eventType"] != "Ended":
        return meters
    return [
        {**m, "sampledValue": [v for v in m["sampledValue"] if v.get("context") == "Transaction.End"]}
        for m in meters
    ]


def _energy_values(meter_values: list[dict[str, Any]]) -> list[float]:
    out = []
    for meter in meter_values:
        for value in meter.get("sampledValue", []):
            measurand = value.get("measurand", "Energy.Active.Import.Register")
            if measurand == "Energy.Active.Import.Register" and value.get("format") != "SignedData":
                out.append(float(value["value"]))
    return out


def _tx_id(payload: dict[str, Any]) -> object:
    info = payload.get("transactionInfo")
    return info["transactionId"] if isinstance(info, dict) else payload.get("transactionId")


def _set_ev_plugged(data_dir: Path, plugged: bool) -> None:
    """The physical world while the station is down: the EV stays or leaves."""
    path = data_dir / "sim-evse-1.json"
    state = json.loads(path.read_text()) if path.exists() else {}
    state["ev_plugged"] = plugged
    path.write_text(json.dumps(state))


def _count(csms: TestCsms, action: str, **match: object) -> int:
    """Distinct messages: a message answered just before a kill may be sent again after the restart
    (at-least-once delivery), identical to the byte, and counts once."""
    calls = csms.received(STATION, action)
    return len(
        {
            json.dumps(call.payload, sort_keys=True)
            for call in calls
            if all(call.payload.get(k) == v for k, v in match.items())
        }
    )


def _payloads(csms: TestCsms, action: str) -> set[str]:
    return {json.dumps(call.payload, sort_keys=True) for call in csms.received(STATION, action)}


def _fresh_updates(csms: TestCsms, action: str, known: set[str]) -> list[dict[str, Any]]:
    """Meter-value messages (1.6 MeterValues, 2.0.1 Updated events) not among `known` payloads."""
    return [
        call.payload
        for call in csms.received(STATION, action)
        if call.payload.get("eventType", "Updated") == "Updated"
        and json.dumps(call.payload, sort_keys=True) not in known
    ]


async def _wait_fresh_updates(csms: TestCsms, action: str, known: set[str], count: int) -> None:
    while len(_fresh_updates(csms, action, known)) < count:
        await csms.wait_for(STATION, action, len(csms.received(STATION, action)) + 1)


async def _wait(csms: TestCsms, action: str, count: int, **match: object) -> None:
    while _count(csms, action, **match) < count:
        await csms.wait_for(STATION, action, len(csms.received(STATION, action)) + 1)


async def _start_transaction(ops: ControlClient) -> None:
    await ops.ok("plug_in", evse=1)
    await ops.ok("present_id_token", id_token=TOKEN, evse=1)


async def run_chain(version: str, rounds: int) -> Figures:
    figures = Figures(version, rounds)
    began = time.monotonic()
    v16 = version == "1.6"
    start_action = "StartTransaction" if v16 else "TransactionEvent"
    update_action = "MeterValues" if v16 else "TransactionEvent"
    end_action = "StopTransaction" if v16 else "TransactionEvent"
    start_match: dict[str, object] = {} if v16 else {"eventType": "Started"}
    end_match: dict[str, object] = {} if v16 else {"eventType": "Ended"}
    with short_dir() as folder:
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            config = write_config(
                folder,
                version=version,
                port=csms.port,
                station_id=STATION,
                extra_csms="meter_value_sample_interval_s = 1",
            )
            data_dir = folder / "data"
            for number in range(1, rounds + 1):
                with trio.fail_after(ROUND_TIMEOUT_S):
                    # 1. Charging, then the power goes. Messages answered just before a kill may be sent
                    # again after the restart, identical: only fresh ones tell what the station does now.
                    statuses = len(csms.received(STATION, "StatusNotification"))
                    known = _payloads(csms, update_action)
                    async with station_process(config) as process:
                        async with control_client(folder / "c.sock", process) as ops:
                            # Accepted and online: its statuses follow the boot.
                            await csms.wait_for(STATION, "StatusNotification", statuses + 1)
                            await _start_transaction(ops)
                            await _wait(csms, start_action, number, **start_match)
                            await _wait_fresh_updates(csms, update_action, known, 1)
                        process.kill()
                        await process.wait()
                    # 2. Back with the EV still plugged in: resumed, values continue; the power goes again.
                    running = _tx_id(_fresh_updates(csms, update_action, known)[-1])
                    known = _payloads(csms, update_action)
                    starts = _count(csms, start_action, **start_match)
                    async with station_process(config) as process:
                        await _wait_fresh_updates(csms, update_action, known, 2)
                        process.kill()
                        await process.wait()
                    after = {_tx_id(payload) for payload in _fresh_updates(csms, update_action, known)}
                    if after == {running} and _count(csms, start_action, **start_match) == starts:
                        figures.resumed += 1
                    else:
                        figures.problems.append(f"round {number}: not resumed under {running}: {after}")
                    # 3. The EV left meanwhile: ended with PowerLoss.
                    _set_ev_plugged(data_dir, False)
                    async with station_process(config) as process:
                        await _wait(csms, end_action, number, **end_match)
                        if number == rounds:
                            async with control_client(folder / "c.sock", process) as ops:
                                while (await ops.ok("status"))["outbox_depth"] > 0:  # noqa: ASYNC110
                                    await trio.sleep(0.05)
                            await terminate(process)
                        else:
                            process.kill()
                            await process.wait()
            _check(csms, figures, v16)
            nursery.cancel_scope.cancel()
    figures.seconds = time.monotonic() - began
    return figures


def _check(csms: TestCsms, figures: Figures, v16: bool) -> None:
    calls = csms.received(STATION)
    figures.messages = len(calls)
    if v16:
        _check_v16(calls, figures)
    else:
        _check_v201(calls, figures)


def _check_v201(calls: list[Any], figures: Figures) -> None:
    by_tx: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for call in calls:
        if call.action != "TransactionEvent":
            continue
        payload = call.payload
        events = by_tx[payload["transactionInfo"]["transactionId"]]
        if payload["seqNo"] in events:
            figures.duplicates += 1
            if events[payload["seqNo"]] != payload:
                figures.problems.append(f"seqNo {payload['seqNo']} sent twice with different content")
        events[payload["seqNo"]] = payload
    figures.transactions = len(by_tx)
    for tx_id, events in by_tx.items():
        seq = sorted(events)
        if seq != list(range(len(seq))):
            figures.problems.append(f"{tx_id}: seqNos not contiguous: {seq}")
        kinds = [events[s]["eventType"] for s in seq]
        if kinds.count("Started") != 1 or kinds.count("Ended") != 1 or kinds[-1] != "Ended":
            figures.problems.append(f"{tx_id}: events {kinds}")
            continue
        ended = events[seq[-1]]
        if ended["transactionInfo"].get("stoppedReason") == "PowerLoss":
            figures.ended_power_loss += 1
        # The Ended event repeats the Transaction.Begin (and periodic) end values: its own is End.
        energies = [e for s in seq for e in _energy_values(_own(events[s]))]
        _monotonic(tx_id, energies, figures)


def _check_v16(calls: list[Any], figures: Figures) -> None:
    starts = [c.payload for c in calls if c.action == "StartTransaction"]
    stops = [c.payload for c in calls if c.action == "StopTransaction"]
    # Unacknowledged Starts may be re-sent after a kill: the same timestamp is the same transaction.
    unique_starts = {s["timestamp"] for s in starts}
    figures.duplicates += len(starts) - len(unique_starts)
    figures.transactions = len(unique_starts)
    by_tx: dict[int, list[float]] = defaultdict(list)
    stopped: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for call in calls:
        payload = call.payload
        tx_id = payload.get("transactionId")
        if call.action == "MeterValues" and tx_id is not None:
            if tx_id < 0:
                figures.problems.append(f"MeterValues with the local id {tx_id}")
            by_tx[tx_id].extend(_energy_values(payload["meterValue"]))
        elif call.action == "StopTransaction":
            if tx_id < 0:
                figures.problems.append(f"StopTransaction with the local id {tx_id}")
            stopped[tx_id].append(payload)
    for tx_id, payloads in stopped.items():
        if len({json.dumps(p, sort_keys=True) for p in payloads}) != 1:
            figures.problems.append(f"{tx_id}: different StopTransactions {payloads}")
        stop = payloads[0]
        figures.duplicates += len(payloads) - 1
        if stop["reason"] == "PowerLoss":
            figures.ended_power_loss += 1
        energies = by_tx[tx_id] + [float(stop["meterStop"])]
        _monotonic(str(tx_id), energies, figures)
    if len(stopped) != figures.transactions or len(stops) < figures.transactions:
        figures.problems.append(f"{figures.transactions} transactions, {len(stopped)} stopped")


def _monotonic(tx_id: str, energies: list[float], figures: Figures) -> None:
    if energies:
        figures.max_energy_wh = max(figures.max_energy_wh, max(energies))
    for before, after in itertools.pairwise(energies):
        if after + 0.5 < before:  # 1.6 values are whole Wh
            figures.problems.append(f"{tx_id}: energy went backwards {before} -> {after}")
            return


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--version", choices=["1.6", "2.0.1", "both"], default="both")
    args = parser.parse_args()
    versions = ["1.6", "2.0.1"] if args.version == "both" else [args.version]
    for version in versions:
        figures = trio.run(run_chain, version, args.rounds)
        print(json.dumps(figures.__dict__))


if __name__ == "__main__":
    main()
