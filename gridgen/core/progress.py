"""Progress for people and for batch logs: a bar on a terminal, timestamped log lines elsewhere.

A tqdm bar redraws every few seconds; in a batch job's log file that is a line every 2 s with no
time stamp. So :func:`progress` gives a bar only when bars are wanted and stderr is a terminal;
otherwise it logs through :mod:`logging` (logger ``cinn4most.progress``, level INFO) one line per
update (a chunk of work), at most one per :data:`LOG_INTERVAL_S` plus the last one, with the
counts, the rate and the ETA::

    2026-12-01T06:01:02Z node17 INFO augment: 480/2000 spectrum (24.0 %), 3.1 spectrum/s, ETA 00:08:10

:func:`configure_logging` sets the format (UTC time stamp, host, level) and the level that the
command-line option ``--log-level`` chooses; :func:`add_progress_options` gives a parser that option
and ``--no-progress`` (every command of every CLI has both, see :mod:`gridgen.core.commandline`).
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import time

from tqdm import tqdm

#: Levels ``--log-level`` accepts.
LOG_LEVELS = ("debug", "info", "warning", "error")
#: Fewest seconds between two progress lines in a log (the last line is always written).
LOG_INTERVAL_S = 10.0

_LOGGER = logging.getLogger("cinn4most.progress")


def configure_logging(level: str = "info") -> None:
    """Log the toolkit's ``cinn4most.*`` loggers to stderr with UTC time stamps and the host name, at
    ``level`` (one of :data:`LOG_LEVELS`).

    Replaces the handlers a previous call installed, so calling it again (tests, several commands in
    one process) does not duplicate lines.
    """
    handler = _StderrHandler()
    formatter = logging.Formatter(f"%(asctime)s {socket.gethostname()} %(levelname)s %(message)s",
                                  datefmt="%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    # The toolkit's own loggers only: libraries (dask, distributed, optuna) keep their settings,
    # so a rejected run still ends in one error line.
    logger = logging.getLogger("cinn4most")
    for old in [h for h in logger.handlers if getattr(h, "_cinn4most", False)]:
        logger.removeHandler(old)
    handler._cinn4most = True
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (it may be replaced later)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def add_progress_options(parser, *, defaults: bool = True) -> None:
    """``--log-level`` (default info) and ``--no-progress`` on an argparse parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    defaults : bool
        Give the options their defaults. A subcommand's parser passes False: an option it is not
        given then sets nothing, and the value given before the command word (or the default
        there) stands.
    """
    parser.add_argument("--log-level", default="info" if defaults else argparse.SUPPRESS, choices=LOG_LEVELS,
                        help="messages at this level and above go to stderr (default info; warning drops "
                             "the progress lines)")
    parser.add_argument("--no-progress", action="store_true", default=False if defaults else argparse.SUPPRESS,
                        help="no progress bars: timestamped log lines with counts, rate and ETA, as when "
                             "stderr is not a terminal")


def progress(total: int | None = None, desc: str = "", unit: str = "it", bars: bool = True, **tqdm_kwargs):
    """A tqdm bar when ``bars`` and stderr is a terminal, else a :class:`LogProgress`.

    Both offer what the toolkit uses of tqdm: ``update(n)``, ``n``, ``total``, ``refresh()``,
    ``close()`` and the context manager.
    """
    if bars and sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, **tqdm_kwargs)
    return LogProgress(total, desc, unit)


class LogProgress:
    """Progress as log lines: counts, rate and ETA, at most one per :data:`LOG_INTERVAL_S`.

    Parameters
    ----------
    total : int or None
        Units of work expected (None: unknown, no percentage or ETA).
    desc : str
        What is progressing, first word of each line.
    unit : str
        Name of one unit of work, e.g. ``"spectrum"``.
    """

    def __init__(self, total: int | None, desc: str, unit: str):
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self._start = self._last_log = time.monotonic()
        self._logged_n = 0
        self._closed = False

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done; log a line if the last one is old enough."""
        self.n += n
        self.refresh()

    def refresh(self) -> None:
        """Log a line if there is news and the last line is at least :data:`LOG_INTERVAL_S` old."""
        now = time.monotonic()
        if self.n != self._logged_n and now - self._last_log >= LOG_INTERVAL_S:
            self._log(now)

    def close(self) -> None:
        """Log the final count (once)."""
        if not self._closed:
            self._closed = True
            if self.n != self._logged_n or self.n == 0:
                self._log(time.monotonic())

    def line(self, now: float) -> str:
        """The progress line at monotonic time ``now``."""
        elapsed = max(now - self._start, 1e-9)
        rate = self.n / elapsed
        text = f"{self.desc}: {self.n}"
        if self.total:
            text += f"/{self.total} {self.unit} ({100.0 * self.n / self.total:.1f} %)"
        else:
            text += f" {self.unit}"
        text += f", {rate:.3g} {self.unit}/s"
        if self.total and rate > 0 and self.n < self.total:
            text += f", ETA {_hms((self.total - self.n) / rate)}"
        elif self.total and self.n >= self.total:
            text += f", done in {_hms(elapsed)}"
        return text

    def _log(self, now: float) -> None:
        _LOGGER.info(self.line(now))
        self._last_log, self._logged_n = now, self.n

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            # A failing command ends with its one ``error:`` line, not with a progress line.
            self._closed = True


def _hms(seconds: float) -> str:
    """``HH:MM:SS`` of a duration in seconds."""
    seconds = int(round(seconds))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
