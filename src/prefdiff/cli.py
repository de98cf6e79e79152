"""The one `prefdiff` command. Heavy imports (torch, diffusers) live inside each sub-command
so that `prefdiff --help` and the label app stay fast and torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefdiff.label.cli import app as label_app

app = typer.Typer(
    help="prefdiff: align text-to-image diffusion models with human preferences.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(label_app, name="label")





@app.command()
def version() -> None:
    """Print the package version."""
    from prefdiff import __version__

    typer.echo(__version__)


def main() -> None:
    """Entry point: user-facing errors print one clear line and exit 2."""
    from prefdiff.errors import PrefdiffError

    try:
        app()
    except PrefdiffError as err:
        typer.echo(f"error: {err}", err=True)
        raise SystemExit(2) from None
