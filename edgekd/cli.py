"""The ``edgekd`` command group. Each sub-command lives in ``edgekd/commands/<name>.py`` as ``command``.

Every :class:`~edgekd.errors.EdgekdError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import errno
import importlib
import os
import pkgutil
import sys

import click

import edgekd.commands
from edgekd import __version__
from edgekd.errors import EdgekdError, interrupt_message
from edgekd.safetext import plain

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekd")
def cli() -> None:
    """edgekd: distill a cloud teacher into an edge student, export it, profile it, benchmark it."""


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(edgekd.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"edgekd.commands.{info.name}")
        cmd = getattr(module, "command", None)
        if isinstance(cmd, click.Command):
            cli.add_command(cmd)


_register_commands()


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_message(e: OSError) -> str:
    """One line for a write that failed for lack of space, with what the command kept (its interrupt
    message: a training run continues with --resume, an export leaves the previous one intact)."""
    where = e.filename or "a file"
    return f"disk full while writing {where}; free space and run the command again ({interrupt_message()})"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the group, turning EdgekdError (and a full disk) into a one-line message
    and exit 2. The line is :func:`edgekd.safetext.plain`: names from files cannot reach the terminal as
    escape sequences."""
    try:
        rc = cli.main(args=argv, prog_name="edgekd", standalone_mode=False)
    except EdgekdError as e:
        click.echo(f"error: {plain(e)}", err=True)
        sys.exit(2)
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        click.echo(f"error: {plain(disk_full_message(e))}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo(f"interrupted: {interrupt_message()}", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    if isinstance(rc, int) and rc != 0:
        sys.exit(rc)


if __name__ == "__main__":  # pragma: no cover
    main()
