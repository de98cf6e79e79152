"""Backbones for diffusers-format pipeline directories."""

from __future__ import annotations

from pathlib import Path

from prefdiff.errors import ModelLoadError
from prefdiff.models.base import Backbone, Conditioning, NoiseDraw, pair_generator, read_model_index
from prefdiff.models.sd import SDBackbone
from prefdiff.models.sdxl import SDXLBackbone

BACKBONES: tuple[type[Backbone], ...] = (SDBackbone, SDXLBackbone)


def backbone_class(path: str | Path) -> type[Backbone]:
    """The backbone class for a pipeline directory, from its model_index.json."""
    path = Path(path)
    index = read_model_index(path)
    class_name = index.get("_class_name", "<missing _class_name>")
    for cls in BACKBONES:
        if class_name in cls.pipeline_classes:
            return cls
    supported = ", ".join(name for cls in BACKBONES for name in cls.pipeline_classes)
    raise ModelLoadError(f"{path}: model_index.json names pipeline class {class_name!r}; prefdiff supports {supported}")


def load_backbone(path: str | Path, prediction_type: str | None = None) -> Backbone:
    """Load a supported pipeline directory as a backbone (fp32, CPU)."""
    path = Path(path)
    return backbone_class(path).load(path, prediction_type)


__all__ = [
    "BACKBONES",
    "Backbone",
    "Conditioning",
    "NoiseDraw",
    "SDBackbone",
    "SDXLBackbone",
    "backbone_class",
    "load_backbone",
    "pair_generator",
]
