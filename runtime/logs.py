"""Logging that a peer cannot turn into a disk filler: bounded quotes, rate-limited faults, a capped file.

Whoever reaches the websocket chooses what its frames hold and how many it sends; a log line about
them quotes a bounded, escaped prefix, and repeated faults of one kind are counted instead of written.
Nothing here reads a clock: callers pass the time in.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from evstation.runtime.config import LoggingConfig

__all__ = [
    "LOG_FORMAT",
    "QUOTE_CHARS",
    "FaultLimiter",
    "clip",
    "configure_logging",
    "quote",
    "suppressed_note",
]

# Enough to recognise a frame (its type, id and action) without carrying its payload into the log.
QUOTE_CHARS: Final = 120
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def clip(text: str, limit: int = QUOTE_CHARS) -> str:
    """Like `quote`, without the quotes: for peer text inside a sentence (a CALLERROR description)."""
    shown = repr(text[:limit])[1:-1]
    return shown if len(text) <= limit else f"{shown}... ({len(text):,} characters)"


def quote(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` for a log line: at most `limit` characters of it, escaped (a newline in a frame must not
    forge a log line), with the length of what was left out."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


@dataclass
class _Window:
    """One kind of fault's current window: when it began, lines logged and lines suppressed in it."""

    start: float
    logged: int = 0
    suppressed: int = 0


@dataclass
class FaultLimiter:
    """At most `burst` log lines per kind of fault per `window_s`; the rest are counted.

    `admit(kind, now)` says whether to log this occurrence: None to stay silent, else the number of
    occurrences left out since the last logged one (to be named in the line). Kinds are our own fixed
    names, never text from the peer, so the table stays small.
    """

    burst: int = 5
    window_s: float = 60.0
    _windows: dict[str, _Window] = field(default_factory=dict)

    def admit(self, kind: str, now: float) -> int | None:
        window = self._windows.get(kind)
        if window is None:
            window = self._windows[kind] = _Window(now)
        elif now - window.start >= self.window_s:
            window.start, window.logged = now, 0
        if window.logged >= self.burst:
            window.suppressed += 1
            return None
        window.logged += 1
        suppressed, window.suppressed = window.suppressed, 0
        return suppressed

    def pending(self) -> dict[str, int]:
        """Occurrences counted but not yet named in a logged line, per kind (e.g. to say at close)."""
        return {kind: w.suppressed for kind, w in self._windows.items() if w.suppressed}


def suppressed_note(suppressed: int) -> str:
    """The tail of a rate-limited line: "" or " (and 123 more like it not logged)"."""
    return f" ({suppressed:,} more like it not logged)" if suppressed else ""


def configure_logging(config: LoggingConfig, level_override: str | None = None) -> logging.Handler:
    """Give the root logger its handler for `evstation run`: stderr, or a size-capped rotating file.

    The file rotates at `max_file_bytes` and keeps `backup_count` old files, so the log never takes
    more than (backup_count + 1) x max_file_bytes of disk. Returns the handler it added.
    """
    handler: logging.Handler
    if config.file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        # Imported here: logging.handlers pulls in pickle, a megabyte no station logging to stderr needs.
        from logging.handlers import RotatingFileHandler

        Path(config.file).parent.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(
            config.file,
            maxBytes=config.max_file_bytes,
            backupCount=config.backup_count,
            encoding="utf-8",
        )
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel((level_override or config.level).upper())
    return handler
