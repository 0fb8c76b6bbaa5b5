"""The local control API over a real Unix socket, against real EVSEs on simulated hardware."""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from evstation.drivers.api import PilotState
from evstation.drivers.sim.board import SimChargeController
from evstation.drivers.sim.ev import SimEv
from evstation.drivers.sim.meter import SimMeter
from evstation.runtime.calls import Direction, MessageLogEntry
from evstation.runtime.control import (
    AUTH_FIRST,
    MAX_LINE_BYTES,
    NETWORK_OP_OFF,
    ControlError,
    FrameLog,
    SimMeterControls,
    serve_control,
)
from evstation.runtime.control_requests import OPS
from evstation.runtime.ctl import EXIT_ERROR_REPLY, EXIT_OK, EXIT_USAGE, ctl_main, parse_args, run_ctl
from evstation.runtime.events import Broadcaster, Dropped
from evstation.runtime.evse import Evses

IO_TIMEOUT_S = 10


class FakeStation:
    """A ControlTarget made of real Evses on sim boards; EVSE 2 stands for real hardware."""

    def __init__(self) -> None:
        self.evses = Evses()
        self.boards: dict[int, SimChargeController] = {}
        self.meters: dict[int, SimMeter] = {}
        self.network_up = True
        self.ocpp = Broadcaster[MessageLogEntry]()
        for evse_id in (1, 2):
            meter = SimMeter(230.0, poll_interval_s=3600.0)
            board = SimChargeController(SimEv(), flow=meter)
            self.boards[evse_id], self.meters[evse_id] = board, meter
            self.evses.add(evse_id, board, meter, connector_ids=(1, 2) if evse_id == 1 else (1,))

    async def status(self) -> dict[str, Any]:
        return {
            "ocpp_version": "2.0.1",
            "link": "connected" if self.network_up else "offline",
            "boot": "Accepted",
            "outbox_depth": 0,
        }

    def transaction_id(self, evse_id: int) -> str | None:
        return "tx-1" if self.evses[evse_id].session_active() else None

    def set_network(self, up: bool) -> None:
        if not up and not self.network_up:
            raise ControlError("network already down")
        self.network_up = up

    def sim_board(self, evse_id: int) -> SimChargeController | None:
        return self.boards[evse_id] if evse_id == 1 else None

    def sim_meter(self, evse_id: int) -> SimMeterControls | None:
        return self.meters[evse_id] if evse_id == 1 else None

    def ocpp_messages(self) -> FrameLog | None:
        return self.ocpp


class Client:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.next_id = 0

    async def send_line(self, data: bytes) -> None:
        await self.stream.send_all(data + b"\n")

    async def line(self) -> dict[str, Any] | None:
        while b"\n" not in self.buffer:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return None
            self.buffer += chunk
        newline = self.buffer.index(b"\n")
        raw = bytes(self.buffer[:newline])
        del self.buffer[: newline + 1]
        reply = json.loads(raw)
        assert isinstance(reply, dict)
        return reply

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.send_line(json.dumps({"id": self.next_id, "op": op, **args}).encode())
        reply = await self.line()
        assert reply is not None and reply["id"] == self.next_id
        return reply


@pytest.fixture
def socket_path() -> Iterator[Path]:
    # pytest's tmp_path can exceed AF_UNIX's 108-byte limit: use a short directory under /tmp.
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="evs-") as tmp:
        yield Path(tmp) / "ctl.sock"


@pytest.fixture
async def station(nursery: trio.Nursery, socket_path: Path) -> AsyncIterator[FakeStation]:
    station = FakeStation()
    await nursery.start(station.evses.run)
    await nursery.start(serve_control, station, socket_path)
    yield station


@pytest.fixture
async def client(station: FakeStation, socket_path: Path) -> AsyncIterator[Client]:
    stream = await trio.open_unix_socket(str(socket_path))
    async with stream:
        yield Client(stream)


async def wait_for_status(client: Client, evse: int, status: str) -> dict[str, Any]:
    while True:
        reply = await client.call("status")
        row: dict[str, Any] = reply["result"]["evses"][evse - 1]
        if row["connectors"][0]["status"] == status:
            return row
        await trio.testing.wait_all_tasks_blocked()


async def test_status_reports_station_and_evses(client: Client) -> None:
    with trio.fail_after(IO_TIMEOUT_S):
        reply = await client.call("status")
    assert reply["ok"] is True
    result = reply["result"]
    assert result["ocpp_version"] == "2.0.1" and result["outbox_depth"] == 0
    assert [e["id"] for e in result["evses"]] == [1, 2]
    assert result["evses"][0]["connectors"] == [
        {"id": 1, "status": "Available"},
        {"id": 2, "status": "Available"},
    ]
    assert result["evses"][0]["active_faults"] == []
    assert result["evses"][0]["transaction_id"] is None


async def test_a_whole_session_through_the_api(client: Client, station: FakeStation) -> None:
    with trio.fail_after(IO_TIMEOUT_S):
        assert (await client.call("plug_in", evse=1))["result"] == {"evse": 1, "connector": 1, "pilot": "B"}
        reply = await client.call("present_id_token", id_token="TAG1", evse=1)
        assert reply == {"id": 2, "ok": True, "result": {"evse": 1}}
        station.evses[1].resolve_authorization("TAG1", accepted=True)
        row = await wait_for_status(client, 1, "Charging")
        assert row["offered_current_a"] == 32.0
        assert row["transaction_id"] == "tx-1"
        assert (await client.call("ev", evse=1, wants_energy=False, max_current_a=10))["ok"]
        await wait_for_status(client, 1, "SuspendedEV")
        assert (await client.call("fault", evse=1, code="GroundFailure"))["result"]["active_faults"] == [
            "GroundFailure"
        ]
        row = await wait_for_status(client, 1, "Faulted")
        assert row["active_faults"] == ["GroundFailure"]
        assert (await client.call("clear_fault", evse=1, code="GroundFailure"))["ok"]
        assert (await client.call("meter", evse=1, energy_wh=1234.5, power_w=0))["ok"]
        assert station.meters[1].energy_wh == pytest.approx(1234.5)
        assert (await client.call("lock", evse=1, fail=True))["result"] == {"evse": 1, "fail_next_move": True}
        assert station.boards[1].fail_next_move
        assert (await client.call("unplug", evse=1))["ok"]
        await wait_for_status(client, 1, "Faulted")  # the unlock at the end failed: ConnectorLockFailure
        assert station.boards[1].pilot_state is PilotState.A


async def test_plug_in_with_a_cable_rating_limits_the_offer(client: Client, station: FakeStation) -> None:
    """The sim cable's PP rating (IEC 61851-1 coding) reaches the EVSE: status shows it, the offer never
    exceeds it, and the unplug forgets it."""
    with trio.fail_after(IO_TIMEOUT_S):
        assert (await client.call("plug_in", evse=1, cable_max_current_a=20))["ok"]
        assert (await client.call("present_id_token", id_token="TAG1", evse=1))["ok"]
        station.evses[1].resolve_authorization("TAG1", accepted=True)
        row = await wait_for_status(client, 1, "Charging")
        assert row["cable_max_current_a"] == 20
        assert row["offered_current_a"] == 20.0  # the EVSE could give 32 A, the cable takes 20
        assert (await client.call("present_id_token", id_token="TAG1", evse=1))["ok"]
        assert (await client.call("unplug", evse=1))["ok"]
        row = await wait_for_status(client, 1, "Available")
        assert row["cable_max_current_a"] is None


async def test_network_op_is_off_unless_allowed(client: Client, station: FakeStation) -> None:
    with trio.fail_after(IO_TIMEOUT_S):
        reply = await client.call("network", up=False)
    assert reply == {"id": 1, "ok": False, "error": NETWORK_OP_OFF}
    assert "allow_network_op" in reply["error"]
    assert station.network_up


async def test_network_op_and_its_error_when_allowed(nursery: trio.Nursery, socket_path: Path) -> None:
    station = FakeStation()
    await nursery.start(functools.partial(serve_control, station, socket_path, allow_network=True))
    with trio.fail_after(IO_TIMEOUT_S):
        client = Client(await trio.open_unix_socket(str(socket_path)))
        async with client.stream:
            assert (await client.call("network", up=False))["result"] == {"up": False}
            assert not station.network_up
            assert await client.call("network", up=False) == {
                "id": 2,
                "ok": False,
                "error": "network already down",
            }


async def test_sim_only_ops_refuse_real_hardware(client: Client) -> None:
    with trio.fail_after(IO_TIMEOUT_S):
        cases: list[tuple[str, dict[str, Any]]] = [
            ("plug_in", {"evse": 2}),
            ("ev", {"evse": 2, "wants_energy": True}),
            ("fault", {"evse": 2, "code": "GroundFailure"}),
            ("lock", {"evse": 2, "fail": True}),
            ("meter", {"evse": 2, "energy_wh": 1.0}),
        ]
        for op, args in cases:
            reply = await client.call(op, **args)
            assert reply["ok"] is False
            assert "real" in reply["error"] and "simulator" in reply["error"]
        reply = await client.call("plug_in", evse=9)
        assert reply["error"] == "no EVSE 9"
        reply = await client.call("plug_in", evse=1, connector=3)
        assert reply["error"] == "EVSE 1 has no connector 3"


@pytest.mark.parametrize(
    ("line", "request_id", "error_part"),
    [
        (b"not json", None, "not JSON"),
        (b"[1, 2]", None, "must be a JSON object"),
        (b'{"id": 7, "op": "fly"}', 7, "unknown op 'fly'"),
        (b'{"id": "a", "op": "plug_in"}', "a", "evse: Field required"),
        (b'{"id": 8, "op": "plug_in", "evse": "1"}', 8, "evse: Input should be a valid integer"),
        (b'{"id": 9, "op": "network", "up": "yes"}', 9, "up: Input should be a valid boolean"),
        (b'{"id": 10, "op": "fault", "evse": 1, "code": "Smoke"}', 10, "code: Input should be"),
        (b'{"id": 11, "op": "status", "extra": 1}', 11, "extra: Extra inputs are not permitted"),
        (b"[" * 50_000, None, "not JSON: nested too deeply"),
        (b'{"id": 12, "op": "meter", "evse": 1, "power_w": NaN}', 12, "power_w: Input should be a finite"),
        (b'{"id": 13, "op": "ev", "evse": 1, "wants_energy": true, "max_current_a": 1e999}', 13, "finite"),
        (b'{"id": 14, "op": "plug_in", "evse": 1, "cable_max_current_a": 25}', 14, "cable_max_current_a"),
        (b'{"id": 15, "op": "unplug", "evse": 1, "cable_max_current_a": 32}', 15, "Extra inputs"),
    ],
)
async def test_malformed_lines_get_an_error_and_the_connection_stays(
    client: Client, line: bytes, request_id: object, error_part: str
) -> None:
    with trio.fail_after(IO_TIMEOUT_S):
        await client.send_line(line)
        reply = await client.line()
        assert reply is not None
        assert reply["ok"] is False and reply["id"] == request_id
        assert error_part in reply["error"]
        assert (await client.call("status"))["ok"]


async def test_overlong_line_gets_an_error_and_the_connection_closes(client: Client) -> None:
    with trio.fail_after(IO_TIMEOUT_S):
        await client.stream.send_all(b"x" * (MAX_LINE_BYTES + 10))
        reply = await client.line()
        assert reply is not None and reply["ok"] is False
        assert str(MAX_LINE_BYTES) in reply["error"]
        assert await client.line() is None


async def test_subscribe_streams_evse_events_and_ocpp_messages(
    client: Client, station: FakeStation, socket_path: Path
) -> None:
    with trio.fail_after(IO_TIMEOUT_S):
        assert (await client.call("subscribe"))["result"] == {"subscribed": True}
        station.ocpp.publish(MessageLogEntry(Direction.OUT, '[2,"1","Heartbeat",{}]', "Heartbeat", 1, 0.0))
        assert await client.line() == {
            "event": "OcppMessage",
            "direction": "out",
            "message": [2, "1", "Heartbeat", {}],
        }
        other = await trio.open_unix_socket(str(socket_path))
        async with other:
            await Client(other).call("plug_in", evse=1)
        assert await client.line() == {"event": "EvPlugged", "evse_id": 1, "connector_id": 1}
        assert await client.line() == {
            "event": "StatusChanged",
            "evse_id": 1,
            "connector_id": 1,
            "status": "Preparing",
            "fault": None,
            "ev_away": False,
        }
        # Requests still work on a subscribed connection; the reply is interleaved with events.
        await client.send_line(b'{"id": 99, "op": "present_id_token", "id_token": "T"}')
        wanted = [
            {"id": 99, "ok": True, "result": {"evse": 1}},
            {
                "event": "AuthorizationRequested",
                "evse_id": 1,
                "id_token": "T",
                "token_type": "ISO14443",
                "session_token": None,
            },
        ]
        seen: list[dict[str, Any] | None] = []
        while not all(w in seen for w in wanted):
            seen.append(await client.line())


async def test_ctl_client_prints_the_reply_and_exit_codes(
    station: FakeStation, socket_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert parse_args(
        ["--socket", "/x", "ev", "--evse", "1", "--wants-energy", "false", "--id-token", "AB"]
    ) == (Path("/x"), "ev", {"evse": 1, "wants_energy": False, "id_token": "AB"})
    assert ctl_main(["--evse"]) == EXIT_USAGE
    assert ctl_main(["status", "--evse"]) == EXIT_USAGE
    with trio.fail_after(IO_TIMEOUT_S):
        assert await run_ctl(socket_path, "plug_in", {"evse": 1}) == EXIT_OK
        assert await run_ctl(socket_path, "plug_in", {"evse": 5}) == EXIT_ERROR_REPLY
    out = capsys.readouterr().out.splitlines()
    assert json.loads(out[0])["result"]["pilot"] == "B"
    assert json.loads(out[1]) == {"id": 1, "ok": False, "error": "no EVSE 5"}


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["--socket", "/x", "--help"]])
def test_ctl_help_lists_every_op_and_exits_0(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl_main(argv) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("usage: evstation ctl")
    ops_lines = [line for line in out.splitlines() if line.startswith("  ") and not line.startswith("   ")]
    listed = [line.split()[0] for line in ops_lines]
    assert listed == list(OPS)
    assert "  plug_in --evse VALUE [--connector 1] [--cable-max-current-a VALUE]" in out.splitlines()
    assert "  unplug --evse VALUE [--connector 1]" in out.splitlines()
    assert "[--type ISO14443]" in out


def test_ctl_without_an_op_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl_main([]) == EXIT_USAGE
    assert "missing OP" in capsys.readouterr().err


async def test_socket_file_is_private_and_removed_on_exit(socket_path: Path) -> None:
    station = FakeStation()
    with trio.fail_after(IO_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, station, socket_path)
            assert os.stat(socket_path).st_mode & 0o777 == 0o600
            nursery.cancel_scope.cancel()
    assert socket_path.name not in os.listdir(socket_path.parent)
    os.mkdir(socket_path)  # something that is not a socket must never be replaced
    with pytest.raises(FileExistsError):
        await serve_control(station, socket_path)


TOKEN = "a-control-token-0123456789"


async def test_tcp_listener_needs_a_token(nursery: trio.Nursery) -> None:
    with pytest.raises(ValueError, match="needs a token"):
        await serve_control(FakeStation(), None, tcp_port=0)


async def open_tcp_client(nursery: trio.Nursery, **options: Any) -> tuple[FakeStation, Client]:
    station = FakeStation()
    endpoints = await nursery.start(
        functools.partial(serve_control, station, None, tcp_port=0, tcp_token=TOKEN, **options)
    )
    assert endpoints.tcp_port
    return station, Client(await trio.open_tcp_stream("127.0.0.1", endpoints.tcp_port))


def _listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as the kernel lists them) of TCP sockets listening on `port`."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: TCP_LISTEN
                found.add(address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")
async def test_tcp_listener_listens_on_127_0_0_1_only(nursery: trio.Nursery) -> None:
    # docs/configuration.md: "never on other addresses" - the token is the only guard of this port.
    endpoints = await nursery.start(
        functools.partial(serve_control, FakeStation(), None, tcp_port=0, tcp_token=TOKEN)
    )
    assert _listening_addresses(endpoints.tcp_port) == {"0100007F"}  # 127.0.0.1, little-endian hex


async def test_tcp_client_with_the_token_may_use_every_op(nursery: trio.Nursery) -> None:
    with trio.fail_after(IO_TIMEOUT_S):
        station, client = await open_tcp_client(nursery, allow_network=True)
        async with client.stream:
            assert await client.call("auth", token=TOKEN) == {
                "id": 1,
                "ok": True,
                "result": {"authenticated": True},
            }
            assert (await client.call("status"))["ok"]
            assert (await client.call("network", up=False))["ok"]
    assert not station.network_up


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b'{"id": 1, "op": "status"}', AUTH_FIRST),
        (b'{"id": 1, "op": "network", "up": false}', AUTH_FIRST),
        (b'{"id": 1, "op": "auth", "token": "guess-guess-guess-guess"}', "wrong token; closing"),
        (b'{"id": 1, "op": "auth", "token": "' + TOKEN.encode() + b'x"}', "wrong token; closing"),
        (b'{"id": 1, "op": "auth"}', AUTH_FIRST),
        (b"not json", AUTH_FIRST),
    ],
)
async def test_tcp_client_without_the_token_gets_one_answer_and_is_closed(
    nursery: trio.Nursery, line: bytes, error: str
) -> None:
    with trio.fail_after(IO_TIMEOUT_S):
        station, client = await open_tcp_client(nursery, allow_network=True)
        async with client.stream:
            await client.send_line(line)
            reply = await client.line()
            assert reply is not None and reply["ok"] is False
            assert reply["error"] == error
            assert await client.line() is None  # closed
    assert station.network_up


async def test_unix_socket_needs_no_token_and_accepts_auth(client: Client) -> None:
    with trio.fail_after(IO_TIMEOUT_S):
        assert (await client.call("status"))["ok"]
        assert (await client.call("auth", token="anything"))["result"] == {"authenticated": True}


def test_slow_subscriber_loses_events_and_is_told() -> None:
    hub = Broadcaster[int]()
    with hub.subscribe(max_buffer=2) as slow, hub.subscribe(max_buffer=10) as fast:
        for n in range(5):
            hub.publish(n)
        assert [slow.receive_nowait() for _ in range(2)] == [0, 1]
        hub.publish(5)
        assert [slow.receive_nowait() for _ in range(2)] == [Dropped(3), 5]
        assert [fast.receive_nowait() for _ in range(6)] == [0, 1, 2, 3, 4, 5]
        assert hub.total_dropped == 3
    assert hub.subscriber_count() == 0


async def test_token_nobody_can_take_is_an_error_reply(client: Client, station: FakeStation) -> None:
    with trio.fail_after(IO_TIMEOUT_S):
        await client.call("fault", evse=1, code="EmergencyStop")
        await wait_for_status(client, 1, "Faulted")
        reply = await client.call("present_id_token", id_token="T", evse=1)
    assert reply["ok"] is False
    assert reply["error"] == "no EVSE can take this token now (unavailable, faulted or busy)"


async def test_subscriber_that_vanishes_leaves_the_server_up(station: FakeStation, socket_path: Path) -> None:
    with trio.fail_after(IO_TIMEOUT_S):
        gone = Client(await trio.open_unix_socket(str(socket_path)))
        assert (await gone.call("subscribe"))["ok"]
        await gone.stream.aclose()
        station.boards[1].plug_in()  # events now go to a closed connection
        await trio.testing.wait_all_tasks_blocked()
        stream = await trio.open_unix_socket(str(socket_path))
        async with stream:
            assert (await Client(stream).call("status"))["ok"]
    assert station.evses.events.subscriber_count() == 0


def test_a_loss_at_the_end_of_a_burst_is_told_without_another_publish() -> None:
    """The marker is queued at the loss: a consumer that re-reads state on `Dropped` learns of the
    last losses of a burst even if nothing is published after it (EVSEs publish nothing periodically)."""
    hub = Broadcaster[int]()
    with hub.subscribe(max_buffer=2) as slow:
        for n in range(5):
            hub.publish(n)
        assert [slow.receive_nowait() for _ in range(3)] == [0, 1, Dropped(3)]
        with pytest.raises(trio.WouldBlock):
            slow.receive_nowait()
        hub.publish(5)  # the received marker is final: the next item fits and is delivered as itself
        assert slow.receive_nowait() == 5
        for n in range(6, 10):
            hub.publish(n)
        assert [slow.receive_nowait() for _ in range(3)] == [6, 7, Dropped(2)]
    assert hub.total_dropped == 5


def test_a_subscriber_needs_room_for_one_event() -> None:
    with pytest.raises(ValueError, match="max_buffer must be at least 1"), Broadcaster[int]().subscribe(0):
        pass


def test_publish_never_fails_for_a_subscriber_that_closed_its_end_while_behind() -> None:
    hub = Broadcaster[int]()
    with hub.subscribe(max_buffer=1) as early_closer:
        hub.publish(1)
        hub.publish(2)  # dropped: counted, and its marker queued in the spare slot
        early_closer.close()  # empties the buffer (marker included)
        hub.publish(3)  # fits the emptied buffer: its send finds the channel closed
    assert hub.total_dropped == 1


def test_every_request_model_is_a_listed_op() -> None:
    """The ops (`OPS`, in runtime.control, loaded at start) and the request models (loaded on the
    first request) name the same ops: a model whose op is not listed would be refused as unknown."""
    import typing

    from evstation.runtime.control_requests import _MODELS

    declared = [op for model in _MODELS for op in typing.get_args(model.model_fields["op"].annotation)]
    assert sorted(declared) == sorted(OPS)
