"""``build_components(config)``: the backbone, objective, strategy and data a run is made of,
built in one place for the training loop, the benchmarks and implicit accuracy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from prefdiff.config import Config, DataConfig
from prefdiff.data.batch import PairBatch
from prefdiff.errors import ConfigError, DataError
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
    """The model (loaded from ``model.path`` unless given), the objective and the strategy. The
    model draws from ``train.timesteps`` when set (a given model keeps its own set otherwise)."""
    objective = build_objective(config.objective)
    if backbone is None or config.train.timesteps is not None:
        backbone = backbone or load_backbone(config.model.path, config.model)
        backbone.use_timesteps(config.train.timesteps)
    return Components(backbone, objective, build_strategy(config.lora))


def build_pair_data(data: DataConfig, seed: int, backbone: Backbone, unpaired: bool = False) -> tuple[Dataset, Collate]:
    """The slot-indexed dataset and its collate: from a latent cache when ``data.path`` is one
    (no VAE or text encoder at training time), else decoded on the fly.

    ``unpaired`` (the objective's ``needs_unpaired``): single labelled images
    (:mod:`prefdiff.data.unpaired`) from an images.jsonl, or from pairs with ``data.unpaired``.
    Pair data for an unpaired objective, and an images.jsonl for a paired one, are refused."""
    from prefdiff.data.cache import CachedPairStream, collate_cached, is_cache_dir
    from prefdiff.data.dataset import build_pair_stream, collate_pairs
    from prefdiff.data.unpaired import ImageStream, UnpairedView, collate_unpaired, images_file, read_images_jsonl

    images = images_file(data.path) if data.path else None
    if images is not None:
        if not unpaired:
            raise DataError(
                f"{images}: per-image labels (prompt, image, desirable), not pairs; this objective trains on pairs "
                "(a winner and a loser per prompt): use objective.name=kto, or point data.path at pair data"
            )
        if data.unpaired:
            raise ConfigError(
                f"config key 'data.unpaired' converts pair data, but {images} is already per-image; "
                "set data.unpaired=false"
            )
        return ImageStream(read_images_jsonl(images, data), data, seed), collate_unpaired
    if unpaired and not data.unpaired:
        raise ConfigError(
            f"{data.path or 'data.path'} holds pairs, but the objective trains on per-image labels: set "
            "data.unpaired=true to use each winner as desirable and each loser as undesirable, or point data.path "
            "at an images.jsonl"
        )
    paired: Dataset
    if is_cache_dir(data.path):
        paired, collate = CachedPairStream(data.path, seed, data, backbone), collate_cached
    else:
        paired, collate = build_pair_stream(data, seed), collate_pairs
    return (UnpairedView(paired), collate_unpaired) if unpaired else (paired, collate)
