"""prefdiff: align text-to-image diffusion models with human preferences."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("prefdiff")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
