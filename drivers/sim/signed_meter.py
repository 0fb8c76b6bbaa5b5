"""`SignedMeter`: a signed-meter twin that wraps `SimMeter` and attaches OCMF readings signed with an
ECDSA P-256 key, plus `verify_ocmf` for tests and tools. A simulation aid: its key is no calibrated meter's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, NoReturn

import trio
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from evstation.drivers.api import MeterEvent, MeterFault, MeterRecovered, MeterSample, SignedReading
from evstation.drivers.meters.publisher import MeterEventPublisher
from evstation.drivers.sim.meter import SimMeter
from evstation.records import record

OCMF_ENCODING = "OCMF"
SIGNING_METHOD = "ECDSA-secp256r1-SHA256"
OCMF_FORMAT_VERSION = "1.0"
OBIS_ACTIVE_IMPORT = "1-b:1.8.0"  # total active energy import register

TimeStatus = Literal["U", "I", "S", "R"]  # OCMF time status: unknown, informative, synchronised, relative
ReadingReason = Literal["B", "C", "E"]  # OCMF TX: begin, charging (intermediate), end of transaction


class OcmfError(ValueError):
    """Text that is not a well-formed OCMF record."""


def ocmf_time(ts: datetime, status: TimeStatus) -> str:
    """OCMF TM: `YYYY-MM-DDThh:mm:ss,fff+hhmm <status>`."""
    if ts.tzinfo is None:
        raise ValueError("OCMF time needs an aware datetime")
    return f"{ts:%Y-%m-%dT%H:%M:%S},{ts.microsecond // 1000:03d}{ts:%z} {status}"


def public_key_hex(key: ec.EllipticCurvePublicKey) -> str:
    """The key as hex DER SubjectPublicKeyInfo, the form OCMF tools and OCPP publicKey fields carry."""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo).hex()


def sign_ocmf(payload: Mapping[str, Any], private_key: ec.EllipticCurvePrivateKey) -> str:
    """Serialise `payload` compactly and sign exactly those bytes: `OCMF|<payload>|<signature>`."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    if "|" in text:
        raise OcmfError("'|' is not allowed inside an OCMF section")
    der = private_key.sign(text.encode("utf-8"), ec.ECDSA(hashes.SHA256()))
    signature = json.dumps({"SA": SIGNING_METHOD, "SD": der.hex()}, separators=(",", ":"))
    return f"OCMF|{text}|{signature}"


def parse_ocmf(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split and decode an OCMF record into (payload, signature section)."""
    parts = text.split("|")
    if len(parts) != 3 or parts[0] != "OCMF":
        raise OcmfError("expected 'OCMF|<payload>|<signature>'")
    try:
        payload = json.loads(parts[1])
        signature = json.loads(parts[2])
    except json.JSONDecodeError as exc:
        raise OcmfError(f"section is not JSON: {exc}") from exc
    if not isinstance(payload, dict) or not isinstance(signature, dict):
        raise OcmfError("sections must be JSON objects")
    return payload, signature


def verify_ocmf(text: str, public_key: ec.EllipticCurvePublicKey | str) -> bool:
    """True when `text` is OCMF signed with ECDSA-secp256r1-SHA256 by `public_key` (object or hex DER)."""
    if isinstance(public_key, str):
        loaded = serialization.load_der_public_key(bytes.fromhex(public_key))
        if not isinstance(loaded, ec.EllipticCurvePublicKey):
            raise ValueError("public key is not an EC key")
        public_key = loaded
    try:
        _, signature = parse_ocmf(text)
        if signature.get("SA", SIGNING_METHOD) != SIGNING_METHOD:
            return False
        der = bytes.fromhex(signature["SD"])
    except (OcmfError, KeyError, TypeError, ValueError):
        return False
    signed_bytes = text.split("|")[1].encode("utf-8")
    try:
        public_key.verify(der, signed_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


@record
class OcmfIdentity:
    """Who signs: the gateway (signing component) and the meter, as OCMF GI/GS and MV/MM/MS name them."""

    gateway_id: str = "evstation-sim"
    gateway_serial: str = "SIM-GW-0001"
    meter_vendor: str = "evstation"
    meter_model: str = "SimMeter"
    meter_serial: str = "SIM-0001"


_SIM_IDENTITY = OcmfIdentity()


class SignedMeter:
    """A `PowerMeter` whose every sample carries a signed OCMF reading of the import register.

    Outside a transaction readings use the fiscal pagination context (PG "F<n>", no TX/IS); between
    `begin_transaction` and `end_transaction` the transaction context (PG "T<n>", TX B/C/E, IS/IT).
    """

    def __init__(
        self,
        meter: SimMeter,
        *,
        private_key: ec.EllipticCurvePrivateKey | None = None,
        identity: OcmfIdentity = _SIM_IDENTITY,
        time_status: TimeStatus = "U",
    ) -> None:
        self.sim = meter
        self._key = private_key or ec.generate_private_key(ec.SECP256R1())
        if not isinstance(self._key.curve, ec.SECP256R1):
            raise ValueError("the signed meter twin signs with secp256r1 (P-256) only")
        self.identity = identity
        self.time_status = time_status
        self.public_key_hex = public_key_hex(self._key.public_key())
        self._publisher = MeterEventPublisher()
        self._pages = {"T": 0, "F": 0}
        self._tx_reason: ReadingReason | None = None
        self._id_type = "NONE"
        self._id_data: str | None = None

    # -------------------------------------------------------------- transaction context

    def begin_transaction(self, *, id_type: str = "NONE", id_data: str | None = None) -> SignedReading:
        """Start the transaction context and return the signed begin reading (TX "B")."""
        self._id_type, self._id_data = id_type, id_data
        self._tx_reason = "B"
        reading = self.sign(self.sim.read())
        self._tx_reason = "C"
        return reading

    def end_transaction(self) -> SignedReading:
        """Sign the end reading (TX "E") now and leave the transaction context."""
        self._tx_reason = "E"
        reading = self.sign(self.sim.read())
        self._tx_reason = None
        return reading

    def sign(self, sample: MeterSample) -> SignedReading:
        """Sign `sample`'s import register in the current pagination context (advances its counter)."""
        context = "F" if self._tx_reason is None else "T"
        self._pages[context] += 1
        reading: dict[str, Any] = {
            "TM": ocmf_time(sample.timestamp, self.time_status),
            "RV": round(sample.energy_import_wh / 1000.0, 3),
            "RI": OBIS_ACTIVE_IMPORT,
            "RU": "kWh",
            "RT": "AC",
            "ST": "G",
        }
        payload: dict[str, Any] = {
            "FV": OCMF_FORMAT_VERSION,
            "GI": self.identity.gateway_id,
            "GS": self.identity.gateway_serial,
            "PG": f"{context}{self._pages[context]}",
            "MV": self.identity.meter_vendor,
            "MM": self.identity.meter_model,
            "MS": self.identity.meter_serial,
        }
        if self._tx_reason is not None:
            payload["IS"] = self._id_type != "NONE"
            payload["IT"] = self._id_type
            if self._id_data is not None:
                payload["ID"] = self._id_data
            reading = {"TM": reading.pop("TM"), "TX": self._tx_reason, **reading}
        payload["RD"] = [reading]
        return SignedReading(
            data=sign_ocmf(payload, self._key),
            encoding=OCMF_ENCODING,
            signing_method=SIGNING_METHOD,
            public_key=self.public_key_hex,
        )

    # -------------------------------------------------------------- PowerMeter

    def events(self) -> trio.MemoryReceiveChannel[MeterEvent]:
        return self._publisher.events()

    def latest(self) -> MeterSample | None:
        return self._publisher.latest()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.sim.run)
            inner = self.sim.events()
            self._relay(await inner.receive())
            task_status.started()
            async for event in inner:
                self._relay(event)
        raise AssertionError("SimMeter.run returned")  # run() of the inner meter never returns

    def _relay(self, event: MeterEvent) -> None:
        if isinstance(event, MeterSample):
            self._publisher.sample(dataclasses.replace(event, signed=self.sign(event)))
        elif isinstance(event, MeterFault):
            self._publisher.fault(event.code, event.detail)
        elif isinstance(event, MeterRecovered):
            pass  # our publisher emits its own MeterRecovered with the next good sample
