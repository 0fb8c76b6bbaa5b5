"""The station configuration file (`station.toml`): parsing, validation and one clear line per problem.

It only reads files (the TOML itself and a `password_file`); it never opens sockets or devices, and
secrets never reach repr/str/log output (pydantic `SecretStr`).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from evstation.protocol.versions import OcppVersion

# OCPP 2.0.1 BasicAuthPassword: passwordString of 16..40 characters (part 2, appendix; A00.FR.205).
PASSWORD_MIN_LENGTH = 16
PASSWORD_MAX_LENGTH = 40
# The control API's TCP token: long enough that guessing it over loopback is hopeless.
CONTROL_TOKEN_MIN_LENGTH = 16
CONTROL_TOKEN_MAX_LENGTH = 256
# The 2.0.1 identifierString alphabet minus ':' — the identity is also the HTTP Basic user name, where
# ':' separates user from password, and a URL path segment, where this set needs no escaping.
STATION_ID_PATTERN = re.compile(r"^[A-Za-z0-9*\-_=+|@.]{1,48}$")

# OCPP 2.0.1 ConnectorEnumType.
ConnectorType = Literal[
    "cCCS1",
    "cCCS2",
    "cG105",
    "cTesla",
    "cType1",
    "cType2",
    "s309-1P-16A",
    "s309-1P-32A",
    "s309-3P-16A",
    "s309-3P-32A",
    "sBS1361",
    "sCEE-7-7",
    "sType2",
    "sType3",
    "Other1PhMax16A",
    "Other1PhOver16A",
    "Other3Ph",
    "Pan",
    "wInductive",
    "wResonant",
    "Undetermined",
    "Unknown",
]
MeterModel = Literal["sdm630", "sdm72dm", "sdm72dm_v2", "abb_b23", "em340"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

DEFAULT_LOG_FILE_BYTES = 10 * 1024 * 1024
MIN_LOG_FILE_BYTES = 64 * 1024

PositiveSeconds = Annotated[float, Field(gt=0)]
NonNegativeSeconds = Annotated[float, Field(ge=0)]


class ConfigError(Exception):
    """The configuration file cannot be used; `problems` holds one human-readable line per problem."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


def _keyed_error(key: str, message: str) -> PydanticCustomError:
    """An error raised by a model-level check that belongs to one field of that model."""
    return PydanticCustomError("station_config_key", "{message}", {"key": key, "message": message})


def _problem(message: str) -> PydanticCustomError:
    """A field-level error whose message is shown as is (it already says what was given)."""
    return PydanticCustomError("station_config", "{message}", {"message": message})


def _resolve(value: Path | None, info: ValidationInfo) -> Path | None:
    """Relative paths are relative to the folder of the config file, not to the process's cwd."""
    if value is None:
        return None
    base = (info.context or {}).get("base_dir")
    path = value.expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return path


def _existing_file(value: Path | None, info: ValidationInfo) -> Path | None:
    path = _resolve(value, info)
    if path is not None and not path.is_file():
        raise _problem(f"file not found: {path}")
    return path


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


# --------------------------------------------------------------------------------------------------
# [station]


class StationIdentity(_Model):
    id: str
    vendor: Annotated[str, Field(min_length=1, max_length=20)]
    model: Annotated[str, Field(min_length=1, max_length=20)]
    serial_number: Annotated[str, Field(min_length=1, max_length=25)] | None = None
    firmware_version: Annotated[str, Field(min_length=1, max_length=50)] | None = None
    ocpp_version: OcppVersion
    data_dir: Annotated[Path, Field(validate_default=True)] = Path("data")

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not STATION_ID_PATTERN.match(value):
            raise _problem(
                "must be 1-48 characters of A-Z a-z 0-9 * - _ = + | @ . (no ':' — it is the basic-auth "
                f"user name and a URL path segment) (got {value!r})"
            )
        return value

    @field_validator("data_dir")
    @classmethod
    def _resolve_data_dir(cls, value: Path, info: ValidationInfo) -> Path:
        resolved = _resolve(value, info)
        assert resolved is not None
        return resolved


# --------------------------------------------------------------------------------------------------
# [csms]


class CsmsEndpoint(_Model):
    url: str
    priority: Annotated[int, Field(ge=0)] = 0
    security_profile: Literal[0, 1, 2, 3]
    password: SecretStr | None = None
    password_file: Path | None = None
    ca_bundle: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.username is not None or parts.password is not None:
            # URLs are logged (and the link refuses them): never echo the value, it holds a secret.
            raise _problem("must not carry user:password@ (give the password as password or password_file)")
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise _problem(f"must be a ws:// or wss:// URL with a host (got {value!r})")
        return value

    @field_validator("password_file", "ca_bundle", "client_cert", "client_key")
    @classmethod
    def _check_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _existing_file(value, info)

    @model_validator(mode="after")
    def _check_profile(self) -> CsmsEndpoint:
        profile = self.security_profile
        scheme = urlsplit(self.url).scheme
        wanted = "ws" if profile in (0, 1) else "wss"
        if scheme != wanted:
            raise _keyed_error("url", f"security_profile {profile} needs a {wanted}:// URL (got {scheme}://)")
        if self.password is not None and self.password_file is not None:
            raise _keyed_error("password_file", "give either password or password_file, not both")
        has_password = self.password is not None or self.password_file is not None
        if profile in (1, 2):
            if not has_password:
                raise _keyed_error("password", f"required for security_profile {profile}")
            if self.password_file is not None:
                try:
                    text = self.password_file.read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise _keyed_error("password_file", f"cannot read: {exc.strerror or exc}") from exc
                except UnicodeDecodeError as exc:
                    raise _keyed_error("password_file", f"not UTF-8 text: {exc.reason}") from exc
                # Bypass the frozen model: the file is a source of the same field, resolved at load.
                object.__setattr__(self, "password", SecretStr(text))
            assert self.password is not None
            length = len(self.password.get_secret_value())
            if not PASSWORD_MIN_LENGTH <= length <= PASSWORD_MAX_LENGTH:
                key = "password_file" if self.password_file is not None else "password"
                raise _keyed_error(
                    key,
                    f"password must be {PASSWORD_MIN_LENGTH}-{PASSWORD_MAX_LENGTH} characters (got {length})",
                )
        elif has_password:
            key = "password" if self.password is not None else "password_file"
            raise _keyed_error(key, f"not used with security_profile {profile}; remove it")
        if profile == 3:
            for key in ("client_cert", "client_key"):
                if getattr(self, key) is None:
                    raise _keyed_error(key, "required for security_profile 3")
        else:
            for key in ("client_cert", "client_key"):
                if getattr(self, key) is not None:
                    raise _keyed_error(key, f"only used with security_profile 3 (got {profile})")
        if profile in (0, 1) and self.ca_bundle is not None:
            raise _keyed_error("ca_bundle", f"only used with wss:// (security_profile 2 or 3, got {profile})")
        return self


class CsmsConfig(_Model):
    endpoints: Annotated[list[CsmsEndpoint], Field(min_length=1)]
    ping_interval_s: NonNegativeSeconds = 30
    message_timeout_s: PositiveSeconds = 30
    retry_backoff_wait_minimum_s: NonNegativeSeconds = 3
    retry_backoff_random_range_s: NonNegativeSeconds = 10
    retry_backoff_repeat_times: Annotated[int, Field(ge=0)] = 5
    connection_attempts_per_endpoint: Annotated[int, Field(ge=1)] = 3
    transaction_message_attempts: Annotated[int, Field(ge=1)] = 3
    transaction_message_retry_interval_s: NonNegativeSeconds = 60
    heartbeat_interval_s: PositiveSeconds = 300
    meter_value_sample_interval_s: PositiveSeconds = 60

    @model_validator(mode="after")
    def _unique_priorities(self) -> CsmsConfig:
        seen: set[int] = set()
        for endpoint in self.endpoints:
            if endpoint.priority in seen:
                raise _keyed_error(
                    "endpoints", f"two endpoints share priority {endpoint.priority}; priorities must differ"
                )
            seen.add(endpoint.priority)
        return self

    @property
    def endpoints_by_priority(self) -> list[CsmsEndpoint]:
        """Endpoints in the order they are tried: lowest priority number first."""
        return sorted(self.endpoints, key=lambda endpoint: endpoint.priority)


# --------------------------------------------------------------------------------------------------
# [[evse]]


class ConnectorConfig(_Model):
    id: Annotated[int, Field(ge=1)]
    type: ConnectorType
    current_type: Literal["AC", "DC"] = "AC"
    phases: Literal[1, 3] = 3
    max_current_a: Annotated[float, Field(gt=0)]


class SimControllerConfig(_Model):
    driver: Literal["sim"]


class YetiControllerConfig(_Model):
    driver: Literal["yeti"]
    device: Annotated[str, Field(min_length=1)]
    baud: Annotated[int, Field(gt=0)] = 115200
    keepalive_timeout_s: PositiveSeconds = 5


class RapiControllerConfig(_Model):
    driver: Literal["rapi"]
    device: Annotated[str, Field(min_length=1)]
    baud: Annotated[int, Field(gt=0)] = 115200
    command_timeout_s: PositiveSeconds = 2
    poll_interval_s: PositiveSeconds = 5
    lock: bool = False  # a Mennekes lock driven with $S5 (firmware built with MENNEKES_LOCK)
    heartbeat_interval_s: Annotated[int, Field(ge=0, le=65535)] = 30  # $SY supervision; 0 = off

    @model_validator(mode="after")
    def _heartbeat_after_poll(self) -> RapiControllerConfig:
        if self.heartbeat_interval_s and self.heartbeat_interval_s <= self.poll_interval_s:
            raise _keyed_error(
                "heartbeat_interval_s",
                f"must be 0 (off) or longer than poll_interval_s ({self.poll_interval_s:g}): "
                "the poll is the heartbeat pulse",
            )
        return self


class PhyVersoControllerConfig(_Model):
    """One charge port (AC) of a PHYTEC phyVERSO board; both ports of a board share its `device`."""

    driver: Literal["phyverso"]
    device: Annotated[str, Field(min_length=1)]
    connector: Literal[1, 2]
    hw_revision: Literal["A", "B"]  # the board's hardware revision, sent to the MCU at every boot
    baud: Annotated[int, Field(gt=0)] = 115200
    keepalive_timeout_s: PositiveSeconds = 5
    lock: Literal["none", "hella", "valeo_hvac"] = "none"  # the socket's motor lock
    has_socket: bool = False  # a socket (detachable cable) rather than a tethered cable

    @model_validator(mode="after")
    def _socket_needs_a_lock(self) -> PhyVersoControllerConfig:
        # PhyVersoBSP refuses an AC socket without a lock type: the cable could be pulled under load.
        if self.has_socket and self.lock == "none":
            raise _keyed_error("lock", "a socket (has_socket = true) needs a motor lock: hella or valeo_hvac")
        return self


ControllerConfig = Annotated[
    SimControllerConfig | YetiControllerConfig | RapiControllerConfig | PhyVersoControllerConfig,
    Field(discriminator="driver"),
]


class SimMeterConfig(_Model):
    driver: Literal["sim"]
    initial_energy_wh: Annotated[float, Field(ge=0)] = 0
    # The simulated signing meter (drivers/sim/signed_meter.py): every reading carries a signed OCMF
    # snapshot, so signed values go out at transaction start and end and TxStartPoint offers DataSigned.
    signed: bool = False


class _ModbusMeterBase(_Model):
    driver: Literal["modbus"]
    model: MeterModel
    unit_id: Annotated[int, Field(ge=1, le=247)] = 1
    poll_interval_s: PositiveSeconds = 1
    timeout_s: PositiveSeconds = 1


class ModbusTcpMeterConfig(_ModbusMeterBase):
    transport: Literal["tcp"]
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] = 502


class ModbusRtuMeterConfig(_ModbusMeterBase):
    transport: Literal["rtu"]
    device: Annotated[str, Field(min_length=1)]
    baud: Annotated[int, Field(gt=0)] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    # Who switches the RS-485 driver (DE/RE): the adapter itself, the UART's RTS, or a GPIO line.
    rs485_direction: Literal["auto", "rts", "gpio"] = "auto"
    rs485_gpio: Annotated[str, Field(pattern=r"^gpiochip[0-9]+:[0-9]+$")] | None = None

    @model_validator(mode="after")
    def _gpio_with_gpio_direction(self) -> ModbusRtuMeterConfig:
        if self.rs485_direction == "gpio" and self.rs485_gpio is None:
            raise _keyed_error("rs485_gpio", 'required with rs485_direction = "gpio" (e.g. "gpiochip0:17")')
        if self.rs485_direction != "gpio" and self.rs485_gpio is not None:
            raise _keyed_error("rs485_gpio", 'only used with rs485_direction = "gpio"')
        return self


class BoardMeterConfig(_Model):
    driver: Literal["board"]


ModbusMeterConfig = Annotated[ModbusTcpMeterConfig | ModbusRtuMeterConfig, Field(discriminator="transport")]
MeterConfig = Annotated[SimMeterConfig | ModbusMeterConfig | BoardMeterConfig, Field(discriminator="driver")]


class EvseConfig(_Model):
    id: Annotated[int, Field(ge=1)]
    connector: Annotated[list[ConnectorConfig], Field(min_length=1)]
    controller: ControllerConfig
    meter: MeterConfig

    @property
    def has_lock(self) -> bool:
        """Whether the EVSE has a connector lock to drive: a RAPI board only with `lock = true` (a
        MENNEKES_LOCK firmware), a phyVERSO port only with a motor lock; otherwise tethered cables."""
        if isinstance(self.controller, RapiControllerConfig):
            return self.controller.lock
        if isinstance(self.controller, PhyVersoControllerConfig):
            return self.controller.lock != "none"
        return True

    @model_validator(mode="after")
    def _contiguous_connectors(self) -> EvseConfig:
        ids = [connector.id for connector in self.connector]
        if ids != list(range(1, len(ids) + 1)):
            raise _keyed_error("connector", f"connector ids must be 1..{len(ids)} in order (got {ids})")
        if isinstance(self.meter, BoardMeterConfig) and not isinstance(self.controller, YetiControllerConfig):
            raise _keyed_error(
                "meter", f"driver 'board' needs a board with a meter (yeti), not {self.controller.driver!r}"
            )
        return self


# --------------------------------------------------------------------------------------------------
# [electrical], [control], [logging]


class ElectricalConfig(_Model):
    line_voltage_v: Annotated[float, Field(gt=0)] = 230
    frequency_hz: Literal[50, 60] = 50
    max_current_a: Annotated[float, Field(gt=0)] | None = None


# The idTag a 1.6 station starts a free-vend session with (StartTransaction needs one, 1.6 has no
# NoAuthorization type): the CSMS must know it as Accepted, like a card.
DEFAULT_FREE_VEND_ID_TAG: Final = "FreeVend"


class AuthorizationConfig(_Model):
    # Seeds AuthCtrlr.Enabled: false = free vend (no token needed; docs/configuration.md).
    enabled: Annotated[bool, Field(strict=True)] = True
    # 1.6 only: CiString20Type, the idTag of Start/StopTransaction for a session started without a token.
    free_vend_id_tag: Annotated[str, Field(min_length=1, max_length=20, pattern=r"^\S(.*\S)?$")] = (
        DEFAULT_FREE_VEND_ID_TAG
    )


class ControlConfig(_Model):
    socket_path: Path | None = None
    tcp_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    tcp_token: SecretStr | None = None
    tcp_token_file: Path | None = None
    # The `network` op cuts the CSMS link on request: a test and demo tool, never on by default.
    allow_network_op: Annotated[bool, Field(strict=True)] = False

    @field_validator("socket_path")
    @classmethod
    def _resolve_socket(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(value, info)

    @field_validator("tcp_token_file")
    @classmethod
    def _check_token_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _existing_file(value, info)

    @model_validator(mode="after")
    def _check_tcp(self) -> ControlConfig:
        """Anyone on the machine can reach 127.0.0.1: the TCP listener only serves clients with the token."""
        if self.tcp_token is not None and self.tcp_token_file is not None:
            raise _keyed_error("tcp_token_file", "give either tcp_token or tcp_token_file, not both")
        if self.tcp_token_file is not None:
            try:
                text = self.tcp_token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise _keyed_error("tcp_token_file", f"cannot read: {exc.strerror or exc}") from exc
            except UnicodeDecodeError as exc:
                raise _keyed_error("tcp_token_file", f"not UTF-8 text: {exc.reason}") from exc
            # Bypass the frozen model: the file is a source of the same field, resolved at load.
            object.__setattr__(self, "tcp_token", SecretStr(text))
        key = "tcp_token_file" if self.tcp_token_file is not None else "tcp_token"
        if self.tcp_port is None:
            if self.tcp_token is not None:
                raise _keyed_error(key, "only used with tcp_port; remove it or set tcp_port")
            return self
        if self.tcp_token is None:
            raise _keyed_error(
                "tcp_token", "required with tcp_port (or tcp_token_file): TCP clients must authenticate"
            )
        length = len(self.tcp_token.get_secret_value())
        if not CONTROL_TOKEN_MIN_LENGTH <= length <= CONTROL_TOKEN_MAX_LENGTH:
            limits = f"{CONTROL_TOKEN_MIN_LENGTH}-{CONTROL_TOKEN_MAX_LENGTH}"
            raise _keyed_error(key, f"token must be {limits} characters (got {length})")
        return self


class LoggingConfig(_Model):
    level: LogLevel = "INFO"
    # None: log to stderr (journald under systemd caps it). A file rotates at max_file_bytes and keeps
    # backup_count old ones, so the log never takes more than (backup_count + 1) x max_file_bytes.
    file: Path | None = None
    max_file_bytes: Annotated[int, Field(ge=MIN_LOG_FILE_BYTES)] = DEFAULT_LOG_FILE_BYTES
    # At least 1: Python's RotatingFileHandler never rotates with 0, the file would grow without end.
    backup_count: Annotated[int, Field(ge=1, le=100)] = 5

    @field_validator("file")
    @classmethod
    def _resolve_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(value, info)

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class TestAidsConfig(_Model):
    """Aids for CSMS test engineers; all off by default, never for a station that bills real sessions."""

    # Meter values carry this instant plus the time elapsed since the station started (e.g. to test
    # time-dependent tariffs without waiting for the hour), instead of the station clock.
    fake_meter_timestamps_start: AwareDatetime | None = None
    # Meter values carry the station clock shifted by this many seconds (negative: into the past).
    fake_meter_timestamps_offset_s: int | None = None

    @model_validator(mode="after")
    def _one_mode(self) -> TestAidsConfig:
        if self.fake_meter_timestamps_start is not None and self.fake_meter_timestamps_offset_s is not None:
            raise _keyed_error(
                "fake_meter_timestamps_offset_s",
                "set either fake_meter_timestamps_start or fake_meter_timestamps_offset_s, not both",
            )
        return self

    @property
    def fake_meter_timestamps(self) -> bool:
        return self.fake_meter_timestamps_start is not None or self.fake_meter_timestamps_offset_s is not None

    def warning(self) -> str | None:
        """The line the station logs at start while an aid is on (None: all off)."""
        if self.fake_meter_timestamps_start is not None:
            how = f"{self.fake_meter_timestamps_start.isoformat()} plus the time since start"
        elif self.fake_meter_timestamps_offset_s is not None:
            how = f"station clock {self.fake_meter_timestamps_offset_s:+d} s"
        else:
            return None
        return (
            f"test aid on: meter values carry fake timestamps ({how}), not the station clock; "
            "never use this on a station that bills real sessions"
        )


# --------------------------------------------------------------------------------------------------


class StationConfig(_Model):
    station: StationIdentity
    csms: CsmsConfig
    evse: Annotated[list[EvseConfig], Field(min_length=1)]
    electrical: ElectricalConfig = ElectricalConfig()
    authorization: AuthorizationConfig = AuthorizationConfig()
    control: ControlConfig = ControlConfig()
    logging: LoggingConfig = LoggingConfig()
    test_aids: TestAidsConfig = TestAidsConfig()

    @model_validator(mode="after")
    def _check_station(self) -> StationConfig:
        ids = [evse.id for evse in self.evse]
        if ids != list(range(1, len(ids) + 1)):
            raise _keyed_error("evse", f"EVSE ids must be 1..{len(ids)} in order (got {ids})")
        self._check_shared_modbus_lines()
        self._check_shared_board_ports()
        if self.control.socket_path is None:
            object.__setattr__(
                self, "control", self.control.model_copy(update={"socket_path": self.control_socket_path})
            )
        return self

    def _check_shared_modbus_lines(self) -> None:
        """Meters on one line (serial device or TCP endpoint) share one bus: one set of line settings."""
        seen: dict[tuple[object, ...], tuple[int, tuple[object, ...]]] = {}
        for index, evse in enumerate(self.evse):
            meter = evse.meter
            if isinstance(meter, ModbusRtuMeterConfig):
                line: tuple[object, ...] = ("rtu", meter.device)
                settings: tuple[object, ...] = (
                    meter.baud, meter.parity, meter.stopbits, meter.timeout_s,
                    meter.rs485_direction, meter.rs485_gpio,
                )  # fmt: skip
            elif isinstance(meter, ModbusTcpMeterConfig):
                line, settings = ("tcp", meter.host, meter.port), (meter.timeout_s,)
            else:
                continue
            first = seen.setdefault(line, (index, settings))
            if first[1] != settings:
                raise _keyed_error(
                    f"evse[{index}].meter",
                    f"shares its line with evse[{first[0]}].meter but not its "
                    "baud/parity/stopbits/timeout_s/rs485_direction/rs485_gpio",
                )

    def _check_shared_board_ports(self) -> None:
        """A serial port has one owner: only the two connectors of one phyVERSO board may share one, and
        then with one set of link settings and distinct connector numbers."""
        owners: dict[str, list[tuple[str, object]]] = {}  # device -> (key, config) of each user, in order
        for index, evse in enumerate(self.evse):
            users: list[tuple[str, str, object]] = []
            controller = evse.controller
            if isinstance(controller, YetiControllerConfig | RapiControllerConfig | PhyVersoControllerConfig):
                users.append((f"evse[{index}].controller", controller.device, controller))
            if isinstance(evse.meter, ModbusRtuMeterConfig):
                users.append((f"evse[{index}].meter", evse.meter.device, evse.meter))
            for key, device, cfg in users:
                earlier = owners.setdefault(device, [])
                for first_key, first in earlier:
                    _check_port_sharing(key, cfg, first_key, first, device)
                earlier.append((key, cfg))

    @property
    def control_socket_path(self) -> Path:
        return self.control.socket_path or self.station.data_dir / "control.sock"

    @property
    def database_path(self) -> Path:
        """The SQLite file of this station (see docs/storage.md)."""
        return self.station.data_dir / "evstation.sqlite3"


def _check_port_sharing(key: str, cfg: object, first_key: str, first: object, device: str) -> None:
    if isinstance(cfg, ModbusRtuMeterConfig) and isinstance(first, ModbusRtuMeterConfig):
        return  # meters on one RS-485 line share a bus (`_check_shared_modbus_lines`)
    if not (isinstance(cfg, PhyVersoControllerConfig) and isinstance(first, PhyVersoControllerConfig)):
        raise _keyed_error(
            f"{key}.device",
            f"{device!r} is already used by {first_key}: only the two connectors of one phyVERSO board "
            "share a serial port",
        )
    for name in ("baud", "hw_revision", "keepalive_timeout_s"):
        if getattr(cfg, name) != getattr(first, name):
            raise _keyed_error(f"{key}.{name}", f"shares {device!r} with {first_key} but not its {name}")
    if cfg.connector == first.connector:
        taken = f"connector {cfg.connector} of {device!r} is {first_key}'s already"
        raise _keyed_error(f"{key}.connector", taken)


# --------------------------------------------------------------------------------------------------
# Loading


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _UNION_TAGS:
            # Discriminated unions add the chosen tag to the location; the user never wrote it.
            continue
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


_UNION_TAGS = frozenset({"sim", "yeti", "rapi", "phyverso", "modbus", "board", "tcp", "rtu"})
_SECRET_KEYS = frozenset({"password", "tcp_token"})
_TYPE_NAMES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
}


def _describe(error: Any) -> str:
    kind: str = error["type"]
    loc: tuple[int | str, ...] = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    if kind == "station_config_key":
        loc = (*loc, ctx["key"])
        message = ctx["message"]
    elif kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "required key is missing"
    elif kind == "too_short":
        message = f"needs at least {ctx.get('min_length')} item(s)"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = ctx.get("discriminator", "").strip("'")
        if kind == "union_tag_not_found":
            loc = (*loc, tag)
            message = "required key is missing"
        else:
            loc = (*loc, tag)
            message = f"must be one of {ctx.get('expected_tags')} (got {ctx.get('tag')!r})"
    else:
        message = error["msg"]
        message = message.removeprefix("Value error, ")
        if message.startswith("Input should be "):
            message = "must be " + message.removeprefix("Input should be ")
        if message.startswith("must be a valid "):
            what = message.removeprefix("must be a valid ").split(",")[0]
            message = "must be " + _TYPE_NAMES.get(what, f"a valid {what}")
        secret = any(isinstance(part, str) and part in _SECRET_KEYS for part in loc)
        value = error.get("input")
        if (
            not secret
            and kind != "station_config"
            and isinstance(value, str | int | float | bool)
            and "(got" not in message
        ):
            message += f" (got {value!r})"
    return f"{_format_loc(loc)}: {message}"


def parse_config(data: dict[str, Any], *, base_dir: Path, source: Path | None = None) -> StationConfig:
    """Validate already-parsed TOML data; relative paths resolve against `base_dir`."""
    try:
        return StationConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors(include_url=False)]
        raise ConfigError(source or base_dir, problems) from None


def load_config(path: Path) -> StationConfig:
    """Read and validate `station.toml`; every problem found is one line of `ConfigError.problems`."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, ["file not found"]) from None
    except OSError as exc:
        raise ConfigError(path, [f"cannot read: {exc.strerror or exc}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [f"not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib puts "(at line L, column C)" in its message; keep it, it is what the user needs.
        raise ConfigError(path, [f"TOML syntax error: {exc}"]) from None
    return parse_config(data, base_dir=path.resolve().parent, source=path)
