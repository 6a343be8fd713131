"""Exceptions shared by the three packages' command-line front ends.

A :class:`UserError` is a problem with what the user gave us (a file, a flag, a config key).
Every CLI prints its message as one line and exits with status 1; any other exception is an
internal failure and exits with status 2 (see DESIGN.md, Conventions).
"""


import argparse


class UserError(Exception):
    """Bad input from the user; the message must be one readable line naming the culprit."""


class ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are UserErrors (exit 1, one line), not exit 2."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


def run_cli(main, argv=None) -> int:
    """Run a CLI ``main(argv) -> int`` with the toolkit's exit-code convention.

    Returns 0 (or what ``main`` returns) on success, 1 after printing ``error: <message>`` for a
    :class:`UserError`, 130 on Ctrl-C, and lets any other exception propagate with exit code 2
    and its traceback, since that is a bug to report.
    """
    import sys
    import traceback

    try:
        return int(main(argv) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - internal failure: show the traceback, exit 2
        traceback.print_exc()
        return 2
