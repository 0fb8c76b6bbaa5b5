"""Codec benchmark: decode + validate + encode of one realistic CALL, evstation vs the `ocpp` package.

A script, not a test (timings never gate CI). Run from the repo root:
    .venv/bin/python -m benchmarks.bench_codec      or      .venv/bin/python benchmarks/bench_codec.py
"""

from __future__ import annotations

import json
import timeit
from collections.abc import Callable
from functools import partial

from evstation.protocol.messages import parse_request, to_payload
from evstation.protocol.rpc import Call, decode, encode
from evstation.protocol.versions import OcppVersion

TIMESTAMP = "2024-05-01T12:00:00Z"
# (measurand, phase, unit, value, location): the ten sampled values a three-phase AC meter reports.
SAMPLES: tuple[tuple[str, str | None, str, float, str], ...] = (
    ("Energy.Active.Import.Register", None, "Wh", 15234.5, "Outlet"),
    ("Power.Active.Import", None, "W", 11040.0, "Outlet"),
    ("Current.Import", "L1", "A", 16.02, "Outlet"),
    ("Current.Import", "L2", "A", 15.97, "Outlet"),
    ("Current.Import", "L3", "A", 16.05, "Outlet"),
    ("Voltage", "L1-N", "V", 230.1, "Outlet"),
    ("Voltage", "L2-N", "V", 229.8, "Outlet"),
    ("Voltage", "L3-N", "V", 231.0, "Outlet"),
    ("Frequency", None, "Hertz", 50.01, "Outlet"),
    ("SoC", None, "Percent", 64.0, "EV"),
)


def transaction_event_request() -> dict[str, object]:
    """A 2.0.1 TransactionEventRequest, eventType Updated, with one meterValue of ten sampledValues."""
    sampled: list[dict[str, object]] = []
    for measurand, phase, unit, value, location in SAMPLES:
        sample: dict[str, object] = {
            "value": value,
            "context": "Sample.Periodic",
            "measurand": measurand,
            "location": location,
            "unitOfMeasure": {"unit": unit, "multiplier": 0},
        }
        if phase is not None:
            sample["phase"] = phase
        sampled.append(sample)
    return {
        "eventType": "Updated",
        "timestamp": TIMESTAMP,
        "triggerReason": "MeterValuePeriodic",
        "seqNo": 12,
        "transactionInfo": {
            "transactionId": "7f3c2a1e-9b8d-4c6e-a5f4-3d2b1c0e9f8a",
            "chargingState": "Charging",
        },
        "evse": {"id": 1, "connectorId": 1},
        "idToken": {"idToken": "04A2B3C4D5E6F7", "type": "ISO14443"},
        "meterValue": [{"timestamp": TIMESTAMP, "sampledValue": sampled}],
    }


def meter_values_request() -> dict[str, object]:
    """A 1.6 MeterValues.req for a running transaction: one meterValue of ten sampledValues."""
    sampled: list[dict[str, object]] = []
    for measurand, phase, unit, value, location in SAMPLES:
        sample: dict[str, object] = {
            "value": f"{value}",  # 1.6 carries meter values as strings
            "context": "Sample.Periodic",
            "format": "Raw",
            "measurand": measurand,
            "location": location,
            "unit": unit,
        }
        if phase is not None:
            sample["phase"] = phase
        sampled.append(sample)
    return {
        "connectorId": 1,
        "transactionId": 42,
        "meterValue": [{"timestamp": TIMESTAMP, "sampledValue": sampled}],
    }


CASES: tuple[tuple[str, OcppVersion, str, Callable[[], dict[str, object]]], ...] = (
    ("2.0.1 TransactionEvent", OcppVersion.V201, "TransactionEvent", transaction_event_request),
    ("1.6 MeterValues", OcppVersion.V16, "MeterValues", meter_values_request),
)


def frame_for(action: str, payload: dict[str, object]) -> str:
    return encode(Call("a3f1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d", action, payload))


def evstation_round_trip(frame: str, version: OcppVersion) -> str:
    """What our runtime does per inbound CALL: frame -> typed model -> payload -> frame."""
    message = decode(frame, version)
    assert isinstance(message, Call)
    model = parse_request(version, message.action, message.payload)
    return encode(Call(message.message_id, message.action, to_payload(model)))


def ocpp_round_trip(frame: str, version: OcppVersion) -> str:
    """The same with the `ocpp` package: unpack + JSON-schema validation + json.dumps of the payload.

    `_validate_payload` is the synchronous body of `ocpp.messages.validate_payload` (which only adds a
    hop to a thread pool); calling it directly measures the validation and nothing else.
    """
    from ocpp.messages import _validate_payload, unpack

    message = unpack(frame)
    _validate_payload(message, version.value)
    return json.dumps(message.payload, separators=(",", ":"))


def _best_us(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    print(f"{'message':<24} {'evstation µs':>13} {'ocpp µs':>10} {'ratio':>7}")
    for name, version, action, build in CASES:
        frame = frame_for(action, build())
        ours = _best_us(partial(evstation_round_trip, frame, version), 2000)
        theirs = _best_us(partial(ocpp_round_trip, frame, version), 200)
        print(f"{name:<24} {ours:>13.1f} {theirs:>10.1f} {theirs / ours:>6.1f}x")


if __name__ == "__main__":
    main()
