"""The toolkit's command lines, all built one way.

``python -m gridgen``, ``python -m augment`` and ``python -m cinn`` are each a :class:`CommandLine`:
an argparse parser of subcommands (``python -m PACKAGE COMMAND ...``) where

- every command takes ``--log-level`` and ``--no-progress``
  (:func:`gridgen.core.progress.add_progress_options`), after the command word or before it
  (``gridgen --log-level warning run ...``);
- logging is configured (:func:`gridgen.core.progress.configure_logging`) before any command
  runs, so that every command writes its log lines in a batch job; at ``--log-level debug`` the
  command line and its exit status are logged too;
- a usage error is a :class:`~gridgen.core.errors.UserError`, and the whole command runs through
  :func:`gridgen.core.errors.run_cli`: one ``error:`` line and exit 1 on bad input (see
  docs/contracts.md, Conventions);
- a warning raised while the command runs is printed as one ``warning:`` line on stderr
  (:func:`gridgen.core.errors.warnings_as_lines`; the local worker processes of
  :func:`gridgen.scheduling.execute` print theirs the same way).

A command line may have a default command, run when no command word is given:
``python -m augment --in G --out T`` is ``python -m augment run --in G --out T``.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time

from gridgen.core.errors import ArgumentParser, UserError, run_cli, warnings_as_lines
from gridgen.core.progress import add_progress_options, configure_logging
from gridgen.core.provenance import VersionAction

#: Options before the command word that take a value (the token after them is not a command).
_VALUED_OPTIONS = ("--log-level",)
#: Options before the command word that end parsing there (no default command is inserted).
_TOP_LEVEL_ONLY = ("-h", "--help", "--version")
#: Problem lines :func:`fail_on_problems` prints before summarising the rest.
PROBLEMS_SHOWN = 20

_LOG = logging.getLogger("cinn4most.cli")


class CommandLine:
    """A ``python -m PACKAGE COMMAND ...`` command line.

    Parameters
    ----------
    prog : str
        How the command is typed, e.g. ``"python -m augment"``.
    description : str
        The ``--help`` text (kept as written: line breaks stay).
    version_extra : callable or None
        Extra lines of ``--version`` (:class:`gridgen.core.provenance.VersionAction`).
    default : str or None
        The command run when the command line gives no command word (see :meth:`parse_args`).
    epilog : str or None
        Text after the ``--help`` of the command line.
    """

    def __init__(self, prog: str, description: str, *, version_extra=None, default: str | None = None,
                 epilog: str | None = None):
        self.prog, self.default = prog, default
        self.parser = _TopParser(prog=prog, description=description, epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        self.parser.add_argument("--version", action=VersionAction, extra=version_extra,
                                 help="print the version, the commit" + (" and the engine's fingerprint"
                                                                      if version_extra else "") + ", and exit")
        add_progress_options(self.parser)
        self.commands = self.parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                                   parser_class=ArgumentParser)

    def add(self, name: str, handler, **kwargs) -> argparse.ArgumentParser:
        """A new command ``name`` run by ``handler(args) -> int`` (see :func:`add_command`)."""
        if name != self.default:
            return add_command(self.commands, name, handler, **kwargs)
        # Its usage is how it is documented, without the command word, and the command line's
        # --help shows it.
        kwargs.setdefault("prog", self.prog)
        self.parser.default_command = add_command(self.commands, name, handler, **kwargs)
        return self.parser.default_command

    def parse_args(self, argv: list[str]) -> argparse.Namespace:
        """The arguments of ``argv``, the default command's when it gives no command word.

        No command word means that the first token after the options of the command line itself
        (``--log-level L``, ``--no-progress``) is another option, or that there is none.
        """
        argv = list(argv)
        if self.default is not None:
            at = _command_position(argv)
            if at is not None and (at == len(argv) or argv[at].startswith("-")):
                argv.insert(at, self.default)
        return self.parser.parse_args(argv)

    def main(self, argv: list[str] | None = None) -> int:
        """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status.

        Through :func:`gridgen.core.errors.run_cli`: 0 on success (or what the command returns),
        1 with one ``error:`` line on bad input, 2 with a traceback on an internal failure.
        """
        argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
        return run_cli(self._run, argv)

    def _run(self, argv: list[str]) -> int:
        args = self.parse_args(argv)
        configure_logging(args.log_level)
        _LOG.debug(f"{self.prog} {shlex.join(argv)}")
        start = time.monotonic()
        with warnings_as_lines():
            status = int(args.handler(args) or 0)
        _LOG.debug(f"exit status {status} after {time.monotonic() - start:.1f} s")
        return status


class _TopParser(ArgumentParser):
    """The parser of a command line: its ``--help`` ends with the default command's, if any."""

    default_command: argparse.ArgumentParser | None = None

    def format_help(self) -> str:
        text = super().format_help()
        return text if self.default_command is None else f"{text}\n{self.default_command.format_help()}"


def add_command(commands, name: str, handler, **kwargs) -> argparse.ArgumentParser:
    """Add the command ``name`` to ``commands`` (an argparse subparsers action) with the common options.

    Parameters
    ----------
    commands : argparse._SubParsersAction
        What ``parser.add_subparsers()`` returned.
    name : str
    handler : callable or None
        ``handler(args) -> int`` runs the command; None for a command that only holds commands
        of its own (``gridgen engine build``), each added with a handler.
    **kwargs
        Passed to ``commands.add_parser`` (``help``, ``description``, ``epilog``, ...).
    """
    parser = commands.add_parser(name, **kwargs)
    add_progress_options(parser, defaults=False)
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def _command_position(argv: list[str]) -> int | None:
    """Index of the command word in ``argv`` (past the options of the command line itself), or
    None when ``argv`` asks for the command line's own ``--help`` or ``--version`` or lacks the
    value of its last option."""
    at = 0
    while at < len(argv) and argv[at].startswith("-"):
        if argv[at] in _TOP_LEVEL_ONLY:
            return None
        if argv[at] in _VALUED_OPTIONS:
            if at + 1 == len(argv):
                return None   # argparse says the value is missing
            at += 2
        elif argv[at] == "--no-progress" or argv[at].split("=")[0] in _VALUED_OPTIONS:
            at += 1
        else:
            break
    return min(at, len(argv))


def fail_on_problems(subject: str, problems: list[str]) -> None:
    """Print one ``FAIL`` line per problem found in ``subject`` and raise a UserError naming the first.

    At most :data:`PROBLEMS_SHOWN` lines, then one counting the rest. Returns only when
    ``problems`` is empty; the UserError makes the command exit with status 1.
    """
    for line in problems[:PROBLEMS_SHOWN]:
        print(f"FAIL {line}")
    if len(problems) > PROBLEMS_SHOWN:
        print(f"FAIL ... and {len(problems) - PROBLEMS_SHOWN} more")
    if problems:
        more = f" (and {len(problems) - 1} more problem(s), listed above)" if len(problems) > 1 else ""
        raise UserError(f"{subject}: {problems[0]}{more}")
