"""`python -m prefdiff` runs the CLI."""

from prefdiff.cli import main

main()
