"""Reference errors computed once (``prefdiff reference``) and read back in training
(``reference.mode=cached``).

Every random draw for a pair (its timestep, noise, latent sample, crop and flip) is keyed by its
slot in the data stream (:func:`prefdiff.models.base.pair_generator`), so the frozen
reference's errors for a whole run are known before it starts. ``prefdiff reference`` walks the
slots that ``train.max_steps`` will visit through the trainer's own data and denoising problem,
runs the reference without gradients, and stores ``[winner, loser]`` errors per slot:

    DIR/reference_identity.json   what the errors depend on (written first; a resume must match)
    DIR/errors_000000.safetensors ``errors [n, 2]`` fp32 and ``slots [n]`` for one shard of slots
    DIR/reference_info.json       the identity, the slot count and the shard size, once complete

Shards are written to a temporary name and renamed, so a killed pass resumes without redoing a
finished one; under ``accelerate launch`` process ``i`` computes shards ``i, i+n, ...``.
Training with ``reference.mode=cached`` compares its own identity with the recorded one and
names the first key that differs, checks that the slots it will visit were computed, and then
looks the errors up by slot instead of running a reference: a full fine-tune builds no frozen
copy of the denoiser at all.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prefdiff.config import Config, to_dict
from prefdiff.errors import ConfigError, DataError
from prefdiff.models.base import Backbone, Denoiser, DenoisingProblem

IDENTITY_FILE = "reference_identity.json"
INFO_FILE = "reference_info.json"
FORMAT = 1
# data keys that change nothing about which pair a slot holds or how it is drawn
_DATA_KEYS_IGNORED = ("num_workers", "strict", "check_images", "soft_labels")


def _data_fingerprint(path: str) -> dict[str, Any]:
    """What identifies the training data: a latent cache by the digest of its ``cache_info.json``
    (which names the source data, the encoders and every shard); a file or folder by its
    resolved path, size and modification time."""
    from prefdiff.data.cache import INFO_FILE as CACHE_INFO

    where = Path(path)
    if (where / CACHE_INFO).is_file():
        return {"cache_info": hashlib.sha256((where / CACHE_INFO).read_bytes()).hexdigest()[:16]}
    if not where.exists():
        raise DataError(f"data.path {path}: no such file or folder")
    stat = where.stat()
    return {"path": str(where.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def slots_needed(config: Config, processes: int) -> int:
    """Data-stream slots a run of ``config`` on ``processes`` processes visits: its steps times
    its pairs per optimizer step."""
    train = config.train
    per_step = train.global_batch_pairs or train.batch_size * train.grad_accum_steps * processes
    return train.max_steps * per_step


def reference_identity(config: Config) -> dict[str, Any]:
    """Everything a slot's reference errors depend on, as plain JSON: the model (path and weight
    digest, every ``model.*`` key), the data (its fingerprint and the keys that pick and draw
    pairs), the seed, the timestep set, the precision. The objective, optimizer and LoRA
    settings are not in it: the reference is the base model whatever trains on top of it."""
    from prefdiff.digest import weights_digest

    model = to_dict(config.model)
    model_dir = Path(model.pop("path"))
    data = {k: v for k, v in to_dict(config.data).items() if k not in _DATA_KEYS_IGNORED}
    data.pop("path")
    return {
        "format": FORMAT,
        "model": {"path": str(model_dir.resolve()), "weights": weights_digest(model_dir, "*/*"), **model},
        "data": {"source": _data_fingerprint(config.data.path), **data},
        "seed": config.train.seed,
        "timesteps": sorted(set(config.train.timesteps)) if config.train.timesteps is not None else None,
        "mixed_precision": config.train.mixed_precision,
        "lora": config.lora.enabled,  # the live reference of LoRA and full runs holds its norms differently
    }


def first_difference(recorded: Any, current: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key whose value differs between two JSON trees, with both values."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        for key in sorted(set(recorded) | set(current)):
            found = first_difference(recorded.get(key), current.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if recorded == current else (prefix.rstrip("."), recorded, current)


def _shard_path(out: Path, index: int) -> Path:
    return out / f"errors_{index:06d}.safetensors"


def reference_weights(denoiser: Denoiser, dtype: torch.dtype, lora: bool) -> Denoiser:
    """The base denoiser as the live reference holds it, in place. LoRA's reference is the policy
    with its adapters off: all in the run's precision and in training mode (which changes the
    attention kernels' rounding in the last digit, though nothing random is on). A full
    fine-tune's frozen copy is in eval mode, with its normalisation layers in fp32."""
    from prefdiff.train.reference import norms_in_fp32

    denoiser.to(dtype=dtype).train(lora).requires_grad_(False)
    return denoiser if lora else norms_in_fp32(denoiser)


@dataclass
class ReferencePass:
    """One process's share of ``prefdiff reference``: ``total`` slots in shards of ``shard_slots``."""

    config: Config
    out: Path
    total: int
    shard_slots: int = 1024
    batch_size: int = 32

    @property
    def num_shards(self) -> int:
        return math.ceil(self.total / self.shard_slots)

    def begin(self, identity: dict[str, Any]) -> None:
        """Write the identity, or check it against the one an interrupted pass left."""
        self.out.mkdir(parents=True, exist_ok=True)
        record = self.out / IDENTITY_FILE
        if record.is_file():
            before = json.loads(record.read_text())
            found = first_difference(before["identity"], identity)
            if found is None and before["shard_slots"] != self.shard_slots:
                found = ("shard_slots", before["shard_slots"], self.shard_slots)
            if found is not None:
                key, old, new = found
                raise ConfigError(
                    f"{self.out} holds reference errors for other settings: {key} was {old!r}, now {new!r}; "
                    "use another --out, or delete it"
                )
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"identity": identity, "shard_slots": self.shard_slots}, indent=2) + "\n")
        os.replace(tmp, record)

    def todo(self, process_index: int, num_processes: int) -> list[int]:
        """This process's shards that no earlier attempt finished."""
        shards = range(process_index, self.num_shards, num_processes)
        return [k for k in shards if not _shard_path(self.out, k).is_file()]

    @torch.no_grad()
    def run(
        self,
        backbone: Backbone,
        stream: Any,
        collate: Any,
        device: torch.device,
        autocast: Any,
        shards: list[int],
        progress: bool = False,
    ) -> int:
        """Compute and write ``shards``; returns the slots computed."""
        from safetensors.torch import save_file
        from tqdm.auto import tqdm

        cfg = self.config
        denoiser = backbone.denoiser
        slots_total = sum(min(self.shard_slots, self.total - k * self.shard_slots) for k in shards)
        bar = tqdm(total=slots_total, desc="reference", unit="pair", disable=not progress)
        for shard in shards:
            first, last = shard * self.shard_slots, min(self.total, (shard + 1) * self.shard_slots)
            rows = []
            for start in range(first, last, self.batch_size):
                batch = collate([stream[s] for s in range(start, min(last, start + self.batch_size))])
                problem = backbone.denoising_problem(batch, cfg.train.seed, cfg.data.resolution, device, True)
                with torch.inference_mode(), autocast():
                    winners, losers = problem.split(backbone.errors(denoiser, problem))
                assert losers is not None
                rows.append(torch.stack([winners, losers], dim=1).float().cpu())
                bar.update(problem.num_pairs)
            tensors = {"errors": torch.cat(rows), "slots": torch.arange(first, last, dtype=torch.int64)}
            tmp = _shard_path(self.out, shard).with_suffix(".tmp")
            save_file(tensors, str(tmp))
            os.replace(tmp, _shard_path(self.out, shard))
        bar.close()
        return slots_total

    def finish(self, identity: dict[str, Any]) -> None:
        """``reference_info.json``, once every shard is on disk (any process may have made them)."""
        missing = [k for k in range(self.num_shards) if not _shard_path(self.out, k).is_file()]
        if missing:
            raise DataError(f"{self.out}: shards {missing[:5]} are missing; rerun `prefdiff reference` to finish them")
        info = {"identity": identity, "slots": self.total, "shard_slots": self.shard_slots, "complete": True}
        (self.out / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")


class CachedReference:
    """The reference errors of ``prefdiff reference``, looked up by slot: no denoiser, no forward.

    ``errors`` returns ``[winners; losers]`` (or winners alone) for the problem's slots, as the
    live reference would compute them."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table  # [slots, 2] fp32: winner and loser error of each slot

    @classmethod
    def open(cls, directory: Path, config: Config, processes: int) -> CachedReference:
        """Read ``directory`` after checking that it was computed for ``config`` (the same
        identity) and holds every slot the run will visit."""
        from safetensors.torch import load_file

        info_file = directory / INFO_FILE
        if not info_file.is_file():
            partial = (directory / IDENTITY_FILE).is_file()
            raise ConfigError(
                f"config key 'reference.path': {directory} "
                + ("is incomplete: rerun `prefdiff reference` with the same --out to finish it" if partial
                   else "holds no reference errors: make them with `prefdiff reference -c RECIPE --out DIR`")
            )  # fmt: skip
        info = json.loads(info_file.read_text())
        found = first_difference(info["identity"], reference_identity(config))
        if found is not None:
            key, old, new = found
            raise ConfigError(
                f"config key 'reference.path': {directory} was computed with {key}={old!r}, this run has {new!r}; "
                "recompute it with `prefdiff reference` and this run's settings"
            )
        needed = slots_needed(config, processes)
        if needed > info["slots"]:
            raise ConfigError(
                f"config key 'reference.path': this run visits {needed} slots (train.max_steps="
                f"{config.train.max_steps} x {needed // config.train.max_steps} pairs per step) but {directory} "
                f"holds {info['slots']}; "
                "recompute it for this many steps"
            )
        shards = math.ceil(info["slots"] / info["shard_slots"])
        table = torch.cat([load_file(str(_shard_path(directory, k)))["errors"] for k in range(shards)])
        return cls(table)

    def errors(self, backbone: Backbone, problem: DenoisingProblem) -> torch.Tensor:
        if not problem.slots:
            raise ValueError("a cached reference needs the problem's slots (DenoisingProblem.slots)")
        rows = self.table[torch.tensor(problem.slots, dtype=torch.int64)]
        errors = torch.cat([rows[:, 0], rows[:, 1]]) if problem.has_losers else rows[:, 0]
        return errors.to(problem.noisy.device)


def compute_reference(
    config: Config,
    out: Path,
    batch_size: int = 32,
    shard_slots: int = 1024,
    train_processes: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """``prefdiff reference``: the reference errors of every slot a run of ``config`` on
    ``train_processes`` processes will visit, into ``out``; this process's share under
    ``accelerate launch``. Returns ``{"slots", "computed", "shards", "seconds"}``."""
    import time

    from accelerate import Accelerator

    from prefdiff.train.components import build_components, build_pair_data
    from prefdiff.train.loop import DTYPES

    if config.data.unpaired:
        raise ConfigError("config key 'data.unpaired': cached reference errors are per pair; use reference.mode=live")
    for name, value in (
        ("--batch-size", batch_size),
        ("--shard-slots", shard_slots),
        ("--train-processes", train_processes),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1 (got {value})")
    accelerator = Accelerator(mixed_precision=config.train.mixed_precision)
    dtype = DTYPES[config.train.mixed_precision]
    components = build_components(config)  # the backbone with model.* and train.timesteps, as training loads it
    backbone = components.backbone.to(accelerator.device, dtype)
    stream, collate = build_pair_data(config.data, config.train.seed, backbone)
    reference_weights(backbone.denoiser, dtype, config.lora.enabled).to(accelerator.device)
    identity = reference_identity(config)
    work = ReferencePass(config, out, slots_needed(config, train_processes), shard_slots, batch_size)
    if accelerator.is_main_process:
        work.begin(identity)
    accelerator.wait_for_everyone()
    shards = work.todo(accelerator.process_index, accelerator.num_processes)
    start = time.perf_counter()
    computed = work.run(
        backbone,
        stream,
        collate,
        accelerator.device,
        accelerator.autocast,
        shards,
        progress and accelerator.is_main_process,
    )
    seconds = time.perf_counter() - start
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        work.finish(identity)
    return {"slots": work.total, "computed": computed, "shards": work.num_shards, "seconds": seconds}
