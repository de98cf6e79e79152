"""`prefdiff label ...` sub-commands (placeholder until the label app lands)."""

import typer

app = typer.Typer(help="The preference labelling web app: studies, raters, votes, exports.", no_args_is_help=True)
