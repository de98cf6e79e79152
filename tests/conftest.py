"""Shared fixtures: tiny pipelines and datasets built offline, once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from prefdiff.models.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny_sd"), "sd")


@pytest.fixture(scope="session")
def tiny_sd_v(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from prefdiff.models.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny_sd_v"), "sd", prediction_type="v_prediction")


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from prefdiff.models.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny_sdxl"), "sdxl")


@pytest.fixture(scope="session")
def tiny_sd3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from prefdiff.models.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny_sd3"), "sd3")


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from prefdiff.models.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny_flux"), "flux")


@pytest.fixture(scope="session")
def shapes_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from prefdiff.toy.synthetic import write_shapes_parquet

    return write_shapes_parquet(tmp_path_factory.mktemp("data") / "shapes.parquet", num_rows=48, size=40, seed=1)
