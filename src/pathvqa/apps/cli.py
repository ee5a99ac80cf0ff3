"""The ``pathvqa`` command line: parse arguments, then call one library function per command.

The commands live by what they act on: ``cli_data`` (datasets and predictions), ``cli_runs`` (training,
evaluation, planning), ``cli_answers`` (a trained model answering questions); ``cli_shared`` holds the app
and the options they share. Here: the entry point, and how a failure is said.
"""

from __future__ import annotations

import errno
import os
import sys

import typer

from pathvqa.apps.cli_shared import app
from pathvqa.errors import PathVQAError

# each registers its commands on the app, in the order ``pathvqa --help`` lists them
from pathvqa.apps import cli_data, cli_runs, cli_answers  # noqa: F401  isort: skip

EX_IOERR = 74
"""Exit status when output cannot be written (a full disk, a closed pipe): sysexits.h's EX_IOERR."""
OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EPIPE, errno.EIO, errno.EROFS, errno.EFBIG}


class LineTracker:
    """stderr as the process writes it, remembering whether the last write left a line open (a progress
    bar's residue, when stderr is a file or a pipe): an error then starts on a line of its own."""

    def __init__(self, stream):
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> int:
        if text:
            self.last = text
        return self.stream.write(text)

    def open_line(self) -> bool:
        tty = getattr(self.stream, "isatty", lambda: False)()
        return bool(self.last) and not self.last.endswith("\n") and not (tty and self.last.endswith("\r"))

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def _say(tracker: LineTracker, line: str) -> None:
    typer.echo(("\n" if tracker.open_line() else "") + line, err=True)


def main() -> None:
    """Entry point: user mistakes print one line on stderr and exit with status 2; output that cannot be
    written (a full disk, a closed pipe) one line and status 74."""
    import warnings

    # the libraries' own deprecation notices (transformers, peft calling each other) are not the user's to act on
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|accelerate)(\.|$)")
    from typer._click import exceptions as click_errors

    stderr = sys.stderr
    tracker = sys.stderr = LineTracker(stderr)
    try:
        code = app(standalone_mode=False)  # usage errors come here, to be said in one line
        if code == 130:  # typer's own answer to Ctrl-C
            _say(tracker, "interrupted")
        if isinstance(code, int) and code:
            sys.exit(code)
    except click_errors.NoArgsIsHelpError as err:
        err.show()  # the help, as typer prints it
        sys.exit(err.exit_code)
    except click_errors.ClickException as err:
        where = getattr(getattr(err, "ctx", None), "command_path", None) or "pathvqa"
        _say(tracker, f"error: {err.format_message()} (see {where} --help)")
        sys.exit(err.exit_code)
    except PathVQAError as err:
        _say(tracker, f"error: {err}")
        sys.exit(2)
    except KeyboardInterrupt:
        _say(tracker, "interrupted")
        sys.exit(130)
    except OSError as err:
        if err.errno not in OUTPUT_ERRNOS:
            raise
        if err.errno == errno.EPIPE:  # nothing more can reach a closed stdout, not even Python's last flush
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        _say(tracker, f"error: cannot write the output: {err.strerror or err}")
        sys.exit(EX_IOERR)
    finally:
        sys.stderr = stderr
