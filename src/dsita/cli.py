"""The `dsita` command: a thin layer that builds Settings and calls library functions.

The commands live in `dsita.commands`, one module per concern; importing them registers them on the app.
Heavy modules are imported inside each command so that `dsita --help` stays fast.
"""

from __future__ import annotations

import logging
import sys

from dsita.commands import data, lm, release, serve, training  # noqa: F401  (registers the commands)
from dsita.commands.base import app, console
from dsita.errors import DsitaError


def main() -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)]
    )
    try:
        app()
    except DsitaError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
