"""``python:module:function`` — any callable ``(image, prompt) -> float`` as a scorer."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from prefdiff.evaluate.scorers.base import Scorer, ScorerError, check_batch
from prefdiff.evaluate.scorers.spec import ScorerKind, ScorerSpec

if TYPE_CHECKING:
    import torch
    from PIL import Image

ScoreFn = Callable[["Image.Image", str], float]


class PythonScorer(Scorer):
    """Calls ``function(image, prompt)`` once per pair; higher is better."""

    def __init__(self, function: ScoreFn, name: str) -> None:
        self.function = function
        self.name = name

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        check_batch(images, prompts)
        scores = []
        for image, prompt in zip(images, prompts, strict=True):
            value = self.function(image, prompt)
            try:
                scores.append(float(value))
            except (TypeError, ValueError) as error:
                raise ScorerError(f"{self.name} returned {value!r}, not a number") from error
        return scores


def _import(module_name: str) -> object:
    """A module by dotted name, or from a ``.py`` file path."""
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ScorerError(f"python scorer file not found: {path}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ScorerError(f"cannot import python scorer file {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise ScorerError(f"cannot import module {module_name!r} for a python scorer: {error}") from error


def load_python(target: str, name: str | None = None) -> PythonScorer:
    """``target`` is ``module:function`` (``pkg.mod:fn`` or ``path/to/file.py:fn``)."""
    module_name, sep, function_name = target.rpartition(":")
    if not sep or not module_name or not function_name:
        raise ScorerError(f"python scorer needs 'python:module:function', got 'python:{target}'")
    module = _import(module_name)
    function = getattr(module, function_name, None)
    if function is None:
        raise ScorerError(f"module {module_name!r} has no attribute {function_name!r}")
    if not callable(function):
        raise ScorerError(f"{module_name}:{function_name} is not callable")
    return PythonScorer(function, name or f"python:{target}")


def _load_python_spec(spec: ScorerSpec, device: str | torch.device, name: str) -> PythonScorer:
    return load_python(spec.path, name=name)


PYTHON = ScorerKind("python", _load_python_spec, whole_target=True)
"""``python:module:function``; the device is unused (the function runs as it is)."""
