"""User-facing errors. Each message names the file, row or key that is wrong."""

import sys
from collections.abc import Callable


class PrefdiffError(Exception):
    """Base class: the CLI prints the message and exits with status 2, no traceback."""


class ConfigError(PrefdiffError):
    """A config key is unknown, has the wrong type, or a value is out of range."""


class ModelLoadError(PrefdiffError):
    """A directory is not a supported diffusers pipeline."""


class DataError(PrefdiffError):
    """A dataset is missing, empty or malformed."""


def run_reporting_user_errors(command: Callable[[], object]) -> None:
    """Run a CLI: a PrefdiffError prints one ``error: ...`` line on stderr and exits 2."""
    try:
        command()
    except PrefdiffError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
