"""The `dsita` command: a thin layer that builds Settings and calls library functions.

The commands live in `dsita.commands`, one module per concern; importing them registers them on the app.
Heavy modules are imported inside each command so that `dsita --help` stays fast.
"""

from __future__ import annotations

import logging
import sys

from dsita.commands import data, lm, release, serve, training  # noqa: F401  (registers the commands)
from dsita.commands.base import app, console
from dsita.errors import DsitaError, PrintableLog

PLAIN_LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def _log_handler() -> logging.Handler:
    """Rich's handler in a terminal; elsewhere (a file, Docker logs, CI, `nohup`) plain lines with a time,
    never wrapped: rich would fold them at 80 columns, as it assumes for a console that is not a terminal."""
    from rich.logging import RichHandler

    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(PLAIN_LOG_FORMAT))
    return handler


def main() -> None:
    """The `dsita` console script: run the CLI, printing a DsitaError or disk error as one line (exit 2)."""
    from rich.text import Text

    from dsita.system import disk_error

    handler = _log_handler()
    handler.addFilter(PrintableLog())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        app()
    except (DsitaError, OSError) as exc:
        # A full or read-only disk that no command translated itself is still one line.
        failure = exc if isinstance(exc, DsitaError) else disk_error(exc, None, what="this command")
        if failure is None:
            raise
        # A Text, not markup: a message quoting user text ("[bold]" in a CSV header) prints as it is.
        console.print(Text.assemble(("error:", "bold red"), f" {failure}"), highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
