"""What a scorer spec is (``ScorerSpec``) and what a scorer kind declares (``ScorerKind``).

Each scorer module defines one ``ScorerKind`` per kind it serves (its name, the options its spec
takes, its loader); ``registry.py`` collects them. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prefdiff.evaluate.scorers.base import Scorer, ScorerError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ScorerSpec:
    """A parsed ``KIND:PATH[,key=value...]``."""

    kind: str
    path: str
    options: dict[str, str] = field(default_factory=dict)

    def expanded_path(self) -> Path:
        """``path`` with ``~`` expanded."""
        return Path(self.path).expanduser()

    def path_option(self, key: str) -> Path | None:
        """Option ``key`` as a path (``~`` expanded), or None when the spec does not give it."""
        return Path(self.options[key]).expanduser() if key in self.options else None

    def int_option(self, key: str) -> int | None:
        """Option ``key`` as an integer, or None when the spec does not give it."""
        if key not in self.options:
            return None
        try:
            return int(self.options[key])
        except ValueError as error:
            raise ScorerError(f"option {key}={self.options[key]!r} is not an integer") from error


ScorerLoader = Callable[[ScorerSpec, "str | torch.device", str], Scorer]
"""``(spec, device, name) -> Scorer``; ``name`` is the spec text the scorer reports as its name."""


@dataclass(frozen=True)
class ScorerKind:
    """One scorer kind as the spec parser and ``load_scorer`` see it.

    ``options`` are the ``key=`` names its spec accepts after the path. With ``whole_target``
    the text after ``KIND:`` is handed over whole (``python:module:function``) instead of being
    split into ``PATH,key=value...``. ``load`` imports its heavy dependencies inside itself, so
    registering a kind costs no torch import.
    """

    name: str
    load: ScorerLoader
    options: tuple[str, ...] = ()
    whole_target: bool = False
