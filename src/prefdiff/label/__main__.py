"""`python -m prefdiff.label ...`: the label commands without the rest of prefdiff's CLI."""

from prefdiff.label.cli import main

main()
