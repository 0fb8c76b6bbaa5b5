"""station.toml: every example loads, and each kind of bad input gives exactly one line naming the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from evstation.protocol.versions import OcppVersion
from evstation.runtime.config import (
    ConfigError,
    ModbusRtuMeterConfig,
    ModbusTcpMeterConfig,
    PhyVersoControllerConfig,
    RapiControllerConfig,
    SimControllerConfig,
    SimMeterConfig,
    StationConfig,
    YetiControllerConfig,
    load_config,
)

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.toml"))

GOOD_PASSWORD = "0123456789abcdef-secret"
CONTROL_TOKEN = "control-token-0123456789abcdef"

MINIMAL = """
[station]
id = "CP-1"
vendor = "Acme"
model = "Box"
ocpp_version = "2.0.1"

[[csms.endpoints]]
url = "ws://127.0.0.1:9000/ocpp"
security_profile = 0

[[evse]]
id = 1
[[evse.connector]]
id = 1
type = "cType2"
max_current_a = 16
[evse.controller]
driver = "sim"
[evse.meter]
driver = "sim"
"""


def write(tmp_path: Path, text: str, name: str = "station.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def with_endpoint(endpoint: str) -> str:
    head, _, tail = MINIMAL.partition("[[csms.endpoints]]")
    _, _, rest = tail.partition("\n[[evse]]")
    return head + "[[csms.endpoints]]\n" + textwrap.dedent(endpoint) + "\n[[evse]]" + rest


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_every_example_validates(path: Path) -> None:
    config = load_config(path)
    assert config.evse
    assert config.csms.endpoints


def test_minimal_file_gets_documented_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.station.ocpp_version is OcppVersion.V201
    assert config.station.data_dir == tmp_path / "data"
    assert config.control.socket_path == tmp_path / "data" / "control.sock"
    assert config.control.tcp_port is None
    assert config.control.tcp_token is None
    assert config.control.allow_network_op is False
    assert config.electrical.line_voltage_v == 230
    assert config.electrical.frequency_hz == 50
    assert config.csms.ping_interval_s == 30
    assert config.csms.message_timeout_s == 30
    assert config.csms.transaction_message_attempts == 3
    assert config.csms.transaction_message_retry_interval_s == 60
    assert config.csms.retry_backoff_wait_minimum_s == 3
    assert config.csms.retry_backoff_random_range_s == 10
    assert config.csms.retry_backoff_repeat_times == 5
    assert config.logging.level == "INFO"
    assert config.logging.file is None
    assert (config.logging.max_file_bytes, config.logging.backup_count) == (10 * 1024 * 1024, 5)
    assert isinstance(config.evse[0].controller, SimControllerConfig)
    assert config.evse[0].connector[0].phases == 3
    assert config.database_path == tmp_path / "data" / "evstation.sqlite3"


def test_a_log_file_is_resolved_against_the_config_folder(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "[station]", '[logging]\nfile = "logs/station.log"\nmax_file_bytes = 1048576\n[station]', 1
    )
    config = load_config(write(tmp_path, text))
    assert config.logging.file == tmp_path / "logs" / "station.log"
    assert config.logging.max_file_bytes == 1048576


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "pw.txt").write_text(GOOD_PASSWORD + "\n", encoding="utf-8")
    text = with_endpoint(
        """
        url = "ws://127.0.0.1:9000/ocpp"
        security_profile = 1
        password_file = "pw.txt"
        """
    ).replace('ocpp_version = "2.0.1"', 'ocpp_version = "1.6"\ndata_dir = "var"')
    (tmp_path / "conf" / "token.txt").write_text(CONTROL_TOKEN + "\n", encoding="utf-8")
    text += '\n[control]\nsocket_path = "run/ctl.sock"\ntcp_port = 7070\ntcp_token_file = "token.txt"\n'
    monkeypatch.chdir(tmp_path)  # a cwd other than the config folder must not matter
    config = load_config(write(tmp_path / "conf", text))
    assert config.station.ocpp_version is OcppVersion.V16
    assert config.station.data_dir == tmp_path / "conf" / "var"
    assert config.control.socket_path == tmp_path / "conf" / "run" / "ctl.sock"
    password = config.csms.endpoints[0].password
    assert password is not None
    assert password.get_secret_value() == GOOD_PASSWORD
    token = config.control.tcp_token
    assert token is not None
    assert token.get_secret_value() == CONTROL_TOKEN


def test_drivers_are_a_discriminated_union(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        '[evse.controller]\ndriver = "sim"\n[evse.meter]\ndriver = "sim"',
        '[evse.controller]\ndriver = "yeti"\ndevice = "/dev/ttyAMA0"\n'
        '[evse.meter]\ndriver = "modbus"\nmodel = "em340"\ntransport = "rtu"\ndevice = "/dev/ttyUSB0"\n'
        "unit_id = 7\n"
        '[[evse]]\nid = 2\n[[evse.connector]]\nid = 1\ntype = "cCCS2"\ncurrent_type = "DC"\n'
        'max_current_a = 125\n[evse.controller]\ndriver = "rapi"\ndevice = "/dev/ttyS1"\n'
        '[evse.meter]\ndriver = "modbus"\nmodel = "sdm72dm"\ntransport = "tcp"\nhost = "meter.local"\n',
    )
    config = load_config(write(tmp_path, text))
    first, second = config.evse
    assert isinstance(first.controller, YetiControllerConfig)
    assert first.controller.baud == 115200
    assert isinstance(first.meter, ModbusRtuMeterConfig)
    assert (first.meter.unit_id, first.meter.baud, first.meter.parity) == (7, 9600, "N")
    assert isinstance(second.controller, RapiControllerConfig)
    assert isinstance(second.meter, ModbusTcpMeterConfig)
    assert second.meter.port == 502


def test_endpoints_by_priority(tmp_path: Path) -> None:
    text = with_endpoint(
        """
        url = "ws://b.example/ocpp"
        security_profile = 0
        priority = 5
        [[csms.endpoints]]
        url = "ws://a.example/ocpp"
        security_profile = 0
        priority = 1
        """
    )
    config = load_config(write(tmp_path, text))
    assert [e.url for e in config.csms.endpoints_by_priority] == [
        "ws://a.example/ocpp",
        "ws://b.example/ocpp",
    ]


# ---- bad input: exactly one line, naming the key ------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            'model = "Box"', 'model = "Box"\ncolour = "red"', "station.colour: unknown key", id="unknown"
        ),
        pytest.param('vendor = "Acme"\n', "", "station.vendor: required key is missing", id="missing"),
        pytest.param(
            "max_current_a = 16",
            'max_current_a = "lots"',
            "evse[0].connector[0].max_current_a: must be a number",
            id="wrong-type",
        ),
        pytest.param(
            'ocpp_version = "2.0.1"',
            'ocpp_version = "2.0"',
            "station.ocpp_version: must be '1.6' or '2.0.1' (got '2.0')",
            id="version",
        ),
        pytest.param('id = "CP-1"', 'id = "CP:1"', "station.id: must be 1-48 characters", id="colon-in-id"),
        pytest.param(
            'driver = "sim"\n[evse.meter]',
            'driver = "ardu"\n[evse.meter]',
            "evse[0].controller.driver: must be one of",
            id="driver",
        ),
        pytest.param(
            '[evse.meter]\ndriver = "sim"',
            '[evse.meter]\ndriver = "modbus"\nmodel = "sdm630"\ntransport = "tcp"',
            "evse[0].meter.host: required key is missing",
            id="modbus-host",
        ),
        pytest.param(
            '[evse.meter]\ndriver = "sim"',
            '[evse.meter]\ndriver = "modbus"\nmodel = "sdm630"\ntransport = "tcp"\nhost = "m"\nbaud = 9600',
            "evse[0].meter.baud: unknown key",
            id="rtu-key-on-tcp-meter",
        ),
        pytest.param(
            "[[evse]]\nid = 1",
            "[[evse]]\nid = 2",
            "evse: EVSE ids must be 1..1 in order (got [2])",
            id="evse-ids",
        ),
        pytest.param(
            "[[evse.connector]]\nid = 1",
            "[[evse.connector]]\nid = 3",
            "evse[0].connector: connector ids must be 1..1",
            id="connector-ids",
        ),
        pytest.param(
            "[station]", '[logging]\nlevel = "chatty"\n[station]', "logging.level: must be", id="log-level"
        ),
        pytest.param(
            "[station]",
            '[logging]\nfile = "s.log"\nbackup_count = 0\n[station]',
            "logging.backup_count: must be greater than or equal to 1",
            id="log-backups",
        ),
        pytest.param(
            "[station]",
            "[logging]\nmax_file_bytes = 1000\n[station]",
            "logging.max_file_bytes: must be greater than or equal to 65536",
            id="log-size",
        ),
        pytest.param(
            "[station]",
            "[electrical]\nline_voltage_v = 0\n[station]",
            "electrical.line_voltage_v: must be greater than 0 (got 0)",
            id="voltage",
        ),
    ],
)
def test_one_line_per_problem(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in MINIMAL
    problems = problems_of(write(tmp_path, MINIMAL.replace(old, new, 1)))
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


def test_security_profile_out_of_range_names_the_key(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, MINIMAL.replace("security_profile = 0", "security_profile = 5")))
    assert problems == ["csms.endpoints[0].security_profile: must be 0, 1, 2 or 3 (got 5)"]


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        pytest.param(
            'url = "wss://x.example/ocpp"\nsecurity_profile = 0',
            "csms.endpoints[0].url: security_profile 0 needs a ws:// URL (got wss://)",
            id="p0-wss",
        ),
        pytest.param(
            f'url = "ws://x.example/ocpp"\nsecurity_profile = 2\npassword = "{GOOD_PASSWORD}"',
            "csms.endpoints[0].url: security_profile 2 needs a wss:// URL (got ws://)",
            id="p2-ws",
        ),
        pytest.param(
            'url = "http://x.example/ocpp"\nsecurity_profile = 0',
            "csms.endpoints[0].url: must be a ws:// or wss:// URL",
            id="http",
        ),
        pytest.param(
            'url = "ws://x.example/ocpp"\nsecurity_profile = 1',
            "csms.endpoints[0].password: required for security_profile 1",
            id="no-password",
        ),
        pytest.param(
            'url = "ws://x.example/ocpp"\nsecurity_profile = 1\npassword = "hunter2"',
            "csms.endpoints[0].password: password must be 16-40 characters (got 7)",
            id="short-password",
        ),
        pytest.param(
            'url = "ws://x.example/ocpp"\nsecurity_profile = 1\npassword_file = "absent.txt"',
            "csms.endpoints[0].password_file: file not found",
            id="password-file-missing",
        ),
        pytest.param(
            'url = "wss://x.example/ocpp"\nsecurity_profile = 3',
            "csms.endpoints[0].client_cert: required for security_profile 3",
            id="p3-no-cert",
        ),
        pytest.param(
            f'url = "ws://x.example/ocpp"\nsecurity_profile = 0\npassword = "{GOOD_PASSWORD}"',
            "csms.endpoints[0].password: not used with security_profile 0",
            id="p0-password",
        ),
    ],
)
def test_endpoint_security_checks(tmp_path: Path, endpoint: str, expected: str) -> None:
    problems = problems_of(write(tmp_path, with_endpoint(endpoint)))
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


def test_duplicate_priorities_are_rejected(tmp_path: Path) -> None:
    text = with_endpoint(
        'url = "ws://a.example/"\nsecurity_profile = 0\n'
        '[[csms.endpoints]]\nurl = "ws://b.example/"\nsecurity_profile = 0'
    )
    assert problems_of(write(tmp_path, text)) == [
        "csms.endpoints: two endpoints share priority 0; priorities must differ"
    ]


def test_several_problems_give_several_lines(tmp_path: Path) -> None:
    text = MINIMAL.replace('model = "Box"', 'model = "Box"\ncolour = 1').replace(
        "max_current_a = 16", "max_current_a = -1"
    )
    problems = problems_of(write(tmp_path, text))
    assert sorted(problems) == [
        "evse[0].connector[0].max_current_a: must be greater than 0 (got -1)",
        "station.colour: unknown key",
    ]


def test_bad_toml_names_line_and_column(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, MINIMAL.replace('vendor = "Acme"', "vendor = Acme")))
    assert len(problems) == 1
    assert "TOML syntax error" in problems[0]
    assert "line 4" in problems[0]  # MINIMAL opens with a blank line
    assert "column" in problems[0]


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert problems_of(path) == ["file not found"]  # the CLI prefixes every line with the path


def test_board_meter_needs_a_yeti_board(tmp_path: Path) -> None:
    text = MINIMAL.replace('[evse.meter]\ndriver = "sim"', '[evse.meter]\ndriver = "board"')
    assert problems_of(write(tmp_path, text)) == [
        "evse[0].meter: driver 'board' needs a board with a meter (yeti), not 'sim'"
    ]


def test_meters_sharing_a_line_must_agree_on_its_settings(tmp_path: Path) -> None:
    rtu = '[evse.meter]\ndriver = "modbus"\nmodel = "sdm630"\ntransport = "rtu"\ndevice = "/dev/ttyUSB0"\n'
    evse = MINIMAL[MINIMAL.index("[[evse]]") :].replace('[evse.meter]\ndriver = "sim"\n', rtu)
    text = (
        MINIMAL[: MINIMAL.index("[[evse]]")]
        + evse
        + evse.replace("id = 1\n[[evse.connector]]", "id = 2\n[[evse.connector]]")
    )
    config = load_config(write(tmp_path, text))
    assert [e.id for e in config.evse] == [1, 2]
    bad = text[: text.rindex("device")] + text[text.rindex("device") :].replace(
        'device = "/dev/ttyUSB0"', 'device = "/dev/ttyUSB0"\nbaud = 19200'
    )
    assert problems_of(write(tmp_path, bad, "bad.toml")) == [
        "evse[1].meter: shares its line with evse[0].meter but not its "
        "baud/parity/stopbits/timeout_s/rs485_direction/rs485_gpio"
    ]


def test_empty_lists_say_how_many_items_are_needed(tmp_path: Path) -> None:
    text = (
        MINIMAL[: MINIMAL.index("[[csms.endpoints]]")]
        + "[csms]\nendpoints = []\n"
        + MINIMAL[MINIMAL.index("[[evse]]") :]
    )
    assert problems_of(write(tmp_path, text)) == ["csms.endpoints: needs at least 1 item(s)"]


def test_secrets_never_appear_in_repr_str_or_errors(tmp_path: Path) -> None:
    secret = "Sup3r-Secret-Passw0rd!"
    text = with_endpoint(f'url = "ws://x.example/ocpp"\nsecurity_profile = 1\npassword = "{secret}"')
    config = load_config(write(tmp_path, text))
    for rendering in (repr(config), str(config), repr(config.csms.endpoints[0]), config.model_dump_json()):
        assert secret not in rendering
    # A password of the wrong type must not be echoed back either.
    bad = with_endpoint('url = "ws://x.example/ocpp"\nsecurity_profile = 1\npassword = 12345678901234567')
    problems = problems_of(write(tmp_path, bad, "bad.toml"))
    assert problems == ["csms.endpoints[0].password: must be a string"]


def test_a_url_carrying_credentials_is_refused_without_echoing_them(tmp_path: Path) -> None:
    # docs/link.md: URLs are logged, so the password goes in `password`, never in the URL. The link
    # refuses such a URL too; check-config must say so, not pass a file that `run` cannot start with.
    text = with_endpoint('url = "ws://cp:Sup3r-Secret-Passw0rd@x.example/ocpp"\nsecurity_profile = 0')
    problems = problems_of(write(tmp_path, text))
    assert problems == [
        "csms.endpoints[0].url: must not carry user:password@ "
        "(give the password as password or password_file)"
    ]
    assert "Sup3r" not in problems[0]
    http = with_endpoint('url = "http://cp:Sup3r-Secret-Passw0rd@x.example/ocpp"\nsecurity_profile = 0')
    assert "Sup3r" not in problems_of(write(tmp_path, http, "http.toml"))[0]


def test_config_is_immutable(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert isinstance(config, StationConfig)
    with pytest.raises(ValueError, match="frozen"):
        config.station.id = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("control", "problem"),
    [
        (
            "tcp_port = 7070",
            "control.tcp_token: required with tcp_port (or tcp_token_file): TCP clients must authenticate",
        ),
        (
            f'tcp_token = "{CONTROL_TOKEN}"',
            "control.tcp_token: only used with tcp_port; remove it or set tcp_port",
        ),
        (
            'tcp_port = 7070\ntcp_token = "short-secret"',
            "control.tcp_token: token must be 16-256 characters (got 12)",
        ),
        (
            f'tcp_port = 7070\ntcp_token = "{CONTROL_TOKEN}"\ntcp_token_file = "token.txt"',
            "control.tcp_token_file: give either tcp_token or tcp_token_file, not both",
        ),
        (
            'tcp_port = 7070\ntcp_token_file = "missing.txt"',
            "control.tcp_token_file: file not found: {tmp}/missing.txt",
        ),
        ("allow_network_op = 1", "control.allow_network_op: must be true or false (got 1)"),
    ],
)
def test_the_control_tcp_listener_needs_a_token(tmp_path: Path, control: str, problem: str) -> None:
    (tmp_path / "token.txt").write_text(CONTROL_TOKEN, encoding="utf-8")
    problems = problems_of(write(tmp_path, MINIMAL + "\n[control]\n" + control + "\n"))
    assert problems == [problem.format(tmp=tmp_path)]
    assert not any(CONTROL_TOKEN in line or "short-secret" in line for line in problems)


def test_control_token_and_network_op_when_configured(tmp_path: Path) -> None:
    text = MINIMAL + f'\n[control]\ntcp_port = 7070\ntcp_token = "{CONTROL_TOKEN}"\nallow_network_op = true\n'
    config = load_config(write(tmp_path, text))
    assert config.control.tcp_token is not None
    assert config.control.tcp_token.get_secret_value() == CONTROL_TOKEN
    assert config.control.allow_network_op is True
    assert CONTROL_TOKEN not in repr(config)


RTU_METER = '[evse.meter]\ndriver = "modbus"\nmodel = "sdm630"\ntransport = "rtu"\ndevice = "/dev/serial0"\n'
RAPI_BOARD = '[evse.controller]\ndriver = "rapi"\ndevice = "/dev/ttyUSB0"\n'


def _with_meter(extra: str) -> str:
    return MINIMAL.replace('[evse.meter]\ndriver = "sim"\n', RTU_METER + extra)


def _with_rapi(extra: str) -> str:
    return MINIMAL.replace('[evse.controller]\ndriver = "sim"\n', RAPI_BOARD + extra)


def test_rs485_direction_keys(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, _with_meter("")))
    meter = config.evse[0].meter
    assert isinstance(meter, ModbusRtuMeterConfig)
    assert (meter.rs485_direction, meter.rs485_gpio) == ("auto", None)
    config = load_config(
        write(tmp_path, _with_meter('rs485_direction = "gpio"\nrs485_gpio = "gpiochip0:17"\n'))
    )
    meter = config.evse[0].meter
    assert isinstance(meter, ModbusRtuMeterConfig)
    assert (meter.rs485_direction, meter.rs485_gpio) == ("gpio", "gpiochip0:17")


def test_rs485_direction_reaches_the_station_s_modbus_line(tmp_path: Path) -> None:
    # The keys must not stop at the config: the bus the station opens for the meter switches DE/RE.
    from evstation.drivers.meters.modbus import RtuTransport
    from evstation.runtime.station import ModbusLines, build_evses

    config = load_config(
        write(tmp_path, _with_meter('rs485_direction = "gpio"\nrs485_gpio = "gpiochip0:17"\n'))
    )
    meter = config.evse[0].meter
    assert isinstance(meter, ModbusRtuMeterConfig)
    wanted = RtuTransport(
        meter.device,
        baudrate=meter.baud,
        parity=meter.parity,
        stopbits=meter.stopbits,
        timeout_s=float(meter.timeout_s),
        rs485_direction="gpio",
        rs485_gpio="gpiochip0:17",
    )
    lines = ModbusLines()
    try:
        build_evses(config, lines)
        # The station made the line's one bus; asking for other settings on that device would raise.
        assert lines.bus_for(wanted).transport == wanted
    finally:
        lines.close()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('rs485_direction = "gpio"\n', 'evse[0].meter.rs485_gpio: required with rs485_direction = "gpio"'),
        (
            'rs485_direction = "rts"\nrs485_gpio = "gpiochip0:17"\n',
            "evse[0].meter.rs485_gpio: only used with",
        ),
        ('rs485_direction = "gpio"\nrs485_gpio = "GPIO17"\n', "evse[0].meter.rs485_gpio:"),
        ('rs485_direction = "de"\n', "evse[0].meter.rs485_direction:"),
    ],
)
def test_rs485_direction_mistakes_are_one_line_naming_the_key(
    tmp_path: Path, extra: str, expected: str
) -> None:
    problems = problems_of(write(tmp_path, _with_meter(extra)))
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_rapi_lock_and_heartbeat_keys(tmp_path: Path) -> None:
    controller = load_config(write(tmp_path, _with_rapi(""))).evse[0].controller
    assert isinstance(controller, RapiControllerConfig)
    assert (controller.lock, controller.heartbeat_interval_s) == (False, 30)
    controller = (
        load_config(write(tmp_path, _with_rapi("lock = true\nheartbeat_interval_s = 0\n"))).evse[0].controller
    )
    assert isinstance(controller, RapiControllerConfig)
    assert (controller.lock, controller.heartbeat_interval_s) == (True, 0)
    problems = problems_of(write(tmp_path, _with_rapi("heartbeat_interval_s = 5\n")))
    assert problems == [
        "evse[0].controller.heartbeat_interval_s: must be 0 (off) or longer than poll_interval_s (5): "
        "the poll is the heartbeat pulse"
    ]


def test_test_aids_are_off_by_default(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert not config.test_aids.fake_meter_timestamps
    assert config.test_aids.warning() is None
    meter = config.evse[0].meter
    assert isinstance(meter, SimMeterConfig) and meter.signed is False


def test_fake_meter_timestamps_start_or_offset(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    config = load_config(
        write(tmp_path, MINIMAL + '\n[test_aids]\nfake_meter_timestamps_start = "2030-06-01T00:00:00Z"\n')
    )
    aids = config.test_aids
    assert aids.fake_meter_timestamps
    assert aids.fake_meter_timestamps_start == datetime(2030, 6, 1, tzinfo=UTC)
    assert aids.warning() is not None and "2030-06-01" in aids.warning()  # type: ignore[operator]
    config = load_config(write(tmp_path, MINIMAL + "\n[test_aids]\nfake_meter_timestamps_offset_s = -3600\n"))
    assert config.test_aids.fake_meter_timestamps_offset_s == -3600
    assert "-3600 s" in (config.test_aids.warning() or "")


@pytest.mark.parametrize(
    ("aids", "expected"),
    [
        (
            'fake_meter_timestamps_start = "2030-06-01T00:00:00Z"\nfake_meter_timestamps_offset_s = 5',
            "test_aids.fake_meter_timestamps_offset_s: set either",
        ),
        ('fake_meter_timestamps_start = "2030-06-01T00:00:00"', "test_aids.fake_meter_timestamps_start"),
        ('fake_meter_timestamps_start = "soon"', "test_aids.fake_meter_timestamps_start"),
        ("fake_meter_timestamp = 5", "test_aids.fake_meter_timestamp"),
    ],
)
def test_test_aid_mistakes_are_one_line_naming_the_key(tmp_path: Path, aids: str, expected: str) -> None:
    (problem,) = problems_of(write(tmp_path, MINIMAL + "\n[test_aids]\n" + aids + "\n"))
    assert problem.startswith(expected), problem


def test_a_sim_meter_can_sign(tmp_path: Path) -> None:
    text = MINIMAL.replace('[evse.meter]\ndriver = "sim"', '[evse.meter]\ndriver = "sim"\nsigned = true')
    config = load_config(write(tmp_path, text))
    meter = config.evse[0].meter
    assert isinstance(meter, SimMeterConfig) and meter.signed is True


def test_authorization_defaults_and_free_vend(tmp_path: Path) -> None:
    """[authorization]: enabled (seeds AuthCtrlr.Enabled) defaults to true; free_vend_id_tag (the 1.6
    idTag of a session started without a token) to "FreeVend"."""
    from evstation.runtime.device_model import AUTH_ENABLED, seed_values

    config = load_config(write(tmp_path, MINIMAL))
    assert config.authorization.enabled is True
    assert config.authorization.free_vend_id_tag == "FreeVend"
    assert seed_values(config)[AUTH_ENABLED] == "true"
    config = load_config(
        write(tmp_path, MINIMAL + '\n[authorization]\nenabled = false\nfree_vend_id_tag = "HOME-1"\n')
    )
    assert config.authorization.free_vend_id_tag == "HOME-1"
    assert seed_values(config)[AUTH_ENABLED] == "false"


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('enabled = "no"', "authorization.enabled"),
        (f'free_vend_id_tag = "{"T" * 21}"', "authorization.free_vend_id_tag"),
        ('free_vend_id_tag = ""', "authorization.free_vend_id_tag"),
        ('free_vend_id_tag = " padded"', "authorization.free_vend_id_tag"),
    ],
)
def test_authorization_mistakes_are_one_line_naming_the_key(tmp_path: Path, line: str, key: str) -> None:
    (problem,) = problems_of(write(tmp_path, MINIMAL + f"\n[authorization]\n{line}\n"))
    assert problem.startswith(f"{key}: "), problem


def _phyverso_station(first: str, second: str) -> str:
    """MINIMAL with two EVSEs, each a phyVERSO connector (extra controller keys given per EVSE)."""
    evse = """
[[evse]]
id = {id}
[[evse.connector]]
id = 1
type = "cType2"
max_current_a = 32
[evse.controller]
driver = "phyverso"
device = "/dev/ttymxc1"
hw_revision = "B"
{extra}
[evse.meter]
driver = "sim"
"""
    head = MINIMAL.partition("[[evse]]")[0]
    return head + evse.format(id=1, extra=first) + evse.format(id=2, extra=second)


def test_phyverso_keys_and_defaults(tmp_path: Path) -> None:
    text = _phyverso_station("connector = 1", 'connector = 2\nlock = "hella"')
    config = load_config(write(tmp_path, text))
    one, two = (evse.controller for evse in config.evse)
    assert isinstance(one, PhyVersoControllerConfig) and isinstance(two, PhyVersoControllerConfig)
    assert (one.connector, one.hw_revision, one.baud, one.keepalive_timeout_s) == (1, "B", 115200, 5)
    assert (one.lock, one.has_socket) == ("none", False)
    assert (two.connector, two.lock) == (2, "hella")


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("connector = 2", "connector = 2", "evse[1].controller.connector: connector 2 of '/dev/ttymxc1' is "
         "evse[0].controller's already"),
        ("connector = 1", "connector = 2\nbaud = 57600", "evse[1].controller.baud: shares '/dev/ttymxc1' "
         "with evse[0].controller but not its baud"),
        ("connector = 1", "connector = 2\nkeepalive_timeout_s = 9", "evse[1].controller.keepalive_timeout_s: "
         "shares '/dev/ttymxc1' with evse[0].controller but not its keepalive_timeout_s"),
        ("connector = 3", "connector = 2", "evse[0].controller.connector: must be 1 or 2 (got 3)"),
        ("connector = 1\nhas_socket = true", "connector = 2", "evse[0].controller.lock: a socket "
         "(has_socket = true) needs a motor lock: hella or valeo_hvac"),
    ],
)  # fmt: skip
def test_phyverso_port_sharing_mistakes_are_one_line_naming_the_key(
    tmp_path: Path, first: str, second: str, expected: str
) -> None:
    assert problems_of(write(tmp_path, _phyverso_station(first, second))) == [expected]


def test_a_serial_port_has_one_driver(tmp_path: Path) -> None:
    text = _phyverso_station("connector = 1", "connector = 2").replace(
        'driver = "phyverso"\ndevice = "/dev/ttymxc1"\nhw_revision = "B"\nconnector = 2',
        'driver = "yeti"\ndevice = "/dev/ttymxc1"',
    )
    assert problems_of(write(tmp_path, text)) == [
        "evse[1].controller.device: '/dev/ttymxc1' is already used by evse[0].controller: only the two "
        "connectors of one phyVERSO board share a serial port"
    ]
