"""``build_components(config)``: the backbone, objective, strategy and data a run is made of,
built in one place for the training loop, the benchmarks and implicit accuracy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from prefdiff.config import Config, DataConfig
from prefdiff.data.batch import PairBatch
from prefdiff.models import Backbone, load_backbone
from prefdiff.objectives import Objective, build_objective
from prefdiff.train.strategy import FineTuneStrategy, build_strategy

Collate = Callable[[list[dict[str, Any]]], PairBatch]


@dataclass
class Components:
    backbone: Backbone
    objective: Objective
    strategy: FineTuneStrategy


def build_components(config: Config, backbone: Backbone | None = None) -> Components:
    """The model (loaded from ``model.path`` unless given), the objective and the strategy."""
    objective = build_objective(config.objective)
    backbone = backbone or load_backbone(config.model.path, config.model)
    return Components(backbone, objective, build_strategy(config.lora))


def build_pair_data(data: DataConfig, seed: int, backbone: Backbone) -> tuple[Dataset, Collate]:
    """The slot-indexed dataset and its collate: from a latent cache when ``data.path`` is one
    (no VAE or text encoder at training time), else decoded on the fly."""
    from prefdiff.data.cache import CachedPairStream, collate_cached, is_cache_dir
    from prefdiff.data.dataset import build_pair_stream, collate_pairs

    if is_cache_dir(data.path):
        return CachedPairStream(data.path, seed, data, backbone), collate_cached
    return build_pair_stream(data, seed), collate_pairs
