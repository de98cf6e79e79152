"""Backbones for diffusers-format pipeline directories, one file per family, found through
the :data:`BACKBONES` registry."""

from __future__ import annotations

from pathlib import Path

from prefdiff.config import ModelConfig
from prefdiff.errors import ModelLoadError
from prefdiff.models.base import (
    BACKBONES,
    Backbone,
    Conditioning,
    DenoisingProblem,
    NoiseDraw,
    pair_generator,
    read_model_index,
)
from prefdiff.models.flux import FluxBackbone
from prefdiff.models.sd import SDBackbone
from prefdiff.models.sd3 import SD3Backbone
from prefdiff.models.sdxl import SDXLBackbone


def backbone_class(path: str | Path) -> type[Backbone]:
    """The registered backbone class for a pipeline directory, from its model_index.json."""
    path = Path(path)
    index = read_model_index(path)
    class_name = index.get("_class_name", "<missing _class_name>")
    for _, cls in BACKBONES.items():
        if class_name in cls.pipeline_classes:
            return cls
    supported = ", ".join(f"{name} ({', '.join(cls.pipeline_classes)})" for name, cls in BACKBONES.items())
    if class_name == "StableDiffusionXLImg2ImgPipeline":  # how the SDXL refiner is saved
        raise ModelLoadError(
            f"{path}: model_index.json names StableDiffusionXLImg2ImgPipeline, the SDXL refiner's class; prefdiff "
            "tunes and samples the SDXL base on its own, without a refiner: give the base pipeline's directory "
            "(StableDiffusionXLPipeline; its SDEdit runs use --init-images)"
        )
    raise ModelLoadError(
        f"{path}: model_index.json names pipeline class {class_name!r}; prefdiff supports the families {supported}"
    )


def load_backbone(path: str | Path, options: ModelConfig | None = None) -> Backbone:
    """Load a supported pipeline directory as a backbone (fp32, CPU), with the run's ``model.*``
    options (the defaults when None)."""
    path = Path(path)
    return backbone_class(path).load(path, options)


__all__ = [
    "BACKBONES",
    "Backbone",
    "Conditioning",
    "DenoisingProblem",
    "FluxBackbone",
    "NoiseDraw",
    "SD3Backbone",
    "SDBackbone",
    "SDXLBackbone",
    "backbone_class",
    "load_backbone",
    "pair_generator",
]
