"""User-facing errors. Each message names the file, row or key that is wrong."""

import errno
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


_FILE_SYSTEM_FAULTS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
}


def file_system_fault(err: BaseException) -> str | None:
    """One line for a file-system fault (a read-only or full disk, no permission), or None.
    torch.save on a full disk raises a RuntimeError ('unexpected pos ...') that never says so."""
    if isinstance(err, OSError) and err.errno in _FILE_SYSTEM_FAULTS:
        where = err.filename or "a file"
        return f"cannot write {where}: {_FILE_SYSTEM_FAULTS[err.errno]}"
    text = str(err)
    if "No space left on device" in text or "os error 28" in text:  # safetensors' Rust I/O errors
        return f"writing failed: no space left on device ({type(err).__name__})"
    if isinstance(err, RuntimeError) and ("unexpected pos" in text or "PytorchStreamWriter failed" in text):
        return f"writing a checkpoint or weights failed, most likely for lack of disk space ({text[:120]})"
    return None


def run_reporting_user_errors(command: Callable[[], object]) -> None:
    """Run a CLI: a PrefdiffError, or a file-system fault (read-only, full, no permission), prints
    one ``error: ...`` line on stderr and exits 2."""
    try:
        command()
    except PrefdiffError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as err:
        line = file_system_fault(err)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        raise SystemExit(2) from None
