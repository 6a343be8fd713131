"""Exceptions shared by the three packages' command-line front ends.

A :class:`UserError` is a problem with what the user gave us (a file, a flag, a config key).
Every CLI prints its message as one line and exits with status 1. So does an ``OSError`` by
which the system refused a file operation for a reason of the user's machine, not of the code
(:data:`DISK_FAULTS`: a full disk or quota, a read-only file system, a missing permission). Any
other exception is an internal failure and exits with status 2 (see docs/contracts.md,
Conventions).
"""


import argparse
import errno
import os
import sys
import warnings
from contextlib import contextmanager


class UserError(Exception):
    """Bad input from the user; the message must be one readable line naming the culprit."""


class ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are UserErrors (exit 1, one line), not exit 2."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


def print_warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one ``warning:`` line on stderr (a ``warnings.showwarning``), not Python's
    two-line format with the source line: the reader is a user, not a developer."""
    print(f"warning: {message}", file=sys.stderr)


@contextmanager
def warnings_as_lines():
    """Print the warnings raised inside as :func:`print_warning_line` lines."""
    with warnings.catch_warnings():
        warnings.showwarning = print_warning_line
        yield


class WarningsAsLines:
    """``function`` run with :func:`warnings_as_lines`, picklable: a task of a worker process,
    whose warnings then read like those of the command that started it."""

    def __init__(self, function):
        self.function = function

    def __call__(self, *args, **kwargs):
        with warnings_as_lines():
            return self.function(*args, **kwargs)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM or SIGINT.

    A subclass of KeyboardInterrupt so that every ``finally`` and ``except KeyboardInterrupt``
    cleans up the same way for ``kill``, ``scancel``, a walltime limit and Ctrl-C.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


#: errno of an ``OSError`` that is the user's disk or permissions, not a bug, and what to do.
DISK_FAULTS = {
    errno.ENOSPC: "free some space or write elsewhere, then re-run the same command",
    errno.EDQUOT: "free some of the quota or write elsewhere, then re-run the same command",
    errno.EROFS: "write to a writable file system instead",
    errno.EACCES: "check the permissions of the path, or write elsewhere",
    errno.EPERM: "check the permissions of the path, or write elsewhere",
}


def disk_fault(exc: BaseException) -> OSError | None:
    """The ``OSError`` with an errno of :data:`DISK_FAULTS` behind ``exc``, else None.

    ``exc`` itself or an exception it was raised from or while handling, as a traceback would
    show them (``__cause__``, else ``__context__`` unless suppressed): a library that wraps the
    system's refusal in its own exception, or cleanup that fails after it, still leaves the
    disk as the reason.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FAULTS:
            return exc
        exc = exc.__cause__ if exc.__cause__ is not None else (
            None if exc.__suppress_context__ else exc.__context__)
    return None


def disk_fault_message(err: OSError) -> str:
    """One line for a :func:`disk_fault`: the path, the errno's meaning and name, what to do.

    E.g. ``/scratch/g.zarr: No space left on device (ENOSPC); free some space or write
    elsewhere, then re-run the same command``.
    """
    where = f"{err.filename}: " if err.filename else ""
    meaning = err.strerror or os.strerror(err.errno)
    return f"{where}{meaning} ({errno.errorcode.get(err.errno, err.errno)}); {DISK_FAULTS[err.errno]}"


def run_cli(main, argv=None) -> int:
    """Run a CLI ``main(argv) -> int`` with the toolkit's exit-code convention.

    Returns 0 (or what ``main`` returns) on success; 1 after printing ``error: <message>`` for a
    :class:`UserError` or a :func:`disk_fault` (:func:`disk_fault_message`); 130 on SIGINT (Ctrl-C) and 143 on SIGTERM (``kill``, ``scancel``, a
    walltime limit), after one line saying how to resume; 141, silently, when stdout is a pipe
    closed early (``... | head``). Any other exception propagates with exit code 2 and its
    traceback, since that is a bug to report.
    """
    import os
    import signal
    import sys
    import threading
    import traceback

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, _raise_interrupted)
    try:
        return int(main(argv) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        name = signal.Signals(signum).name
        print(f"interrupted ({name}); re-run the same command to resume", file=sys.stderr)
        return 128 + int(signum)
    except BrokenPipeError:
        # The reader went away (`| head`): say nothing more, and keep Python's exit-time flush of
        # stdout from raising again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 141
    except Exception as exc:  # noqa: BLE001 - internal failure: show the traceback, exit 2
        fault = disk_fault(exc)
        if fault is not None:
            print(f"error: {disk_fault_message(fault)}", file=sys.stderr)
            return 1
        traceback.print_exc()
        return 2
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
