"""The latent cache: every pair encoded once with the model's VAE and text encoder(s).

Layout of a cache directory::

    cache_info.json            what made it (model fingerprint, transform, data) and the shards
    shard_00000.safetensors    per pair: VAE posterior mean and std of winner and loser [n,C,h,w]
    shard_00001.safetensors    (fp16; optional flipped copies), SDXL micro-conditioning, the
    ...                        preference probability [n] (soft labels), and the text
                               conditioning of the shard's unique prompts

Shards are written to a temporary name and renamed when complete, so a killed build resumes at
the first missing shard. Shard ``k`` is built by process ``k mod P`` when several run under
accelerate. Training reads shards through safetensors' memory map and never decodes an image or
runs the VAE or a text encoder; it draws fresh latents ``mean + std * eps`` per epoch, with
``eps`` keyed by the pair's data-stream slot exactly as on-the-fly training does.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from prefdiff.config import DataConfig
from prefdiff.data.batch import LatentStats, PairBatch
from prefdiff.data.dataset import TRANSFORM_STREAM, EpochOrder
from prefdiff.data.readers import iter_pairs
from prefdiff.data.report import ReadReport
from prefdiff.data.schema import PreferencePair, open_image
from prefdiff.data.transforms import transform_pair
from prefdiff.digest import weights_digest
from prefdiff.errors import DataError
from prefdiff.models.base import Backbone, pair_generator

log = logging.getLogger("prefdiff.cache")

CACHE_VERSION = 1
INFO_FILE = "cache_info.json"
SIDES = ("winner", "loser")


@dataclass
class CacheSettings:
    """How pairs are encoded. ``flip_copies`` also stores the latents of mirrored images, so that
    training with ``data.random_flip`` can use the cache."""

    resolution: int = 512
    flip_copies: bool = False
    shard_size: int = 256
    batch_size: int = 16
    strict: bool = False


# ------------------------------------------------------------------------------ fingerprints


def model_fingerprint(backbone: Backbone) -> dict[str, str]:
    """What the cached encodings depend on: the family and the VAE, text encoder and tokenizer
    weights and configs (not the UNet, not the directory's location)."""
    fingerprint = {"family": backbone.family}
    for name in ("vae", *backbone.text_components):
        folder = backbone.path / name
        fingerprint[name] = weights_digest(folder) if folder.is_dir() else "missing"
    fingerprint.update({key: str(value) for key, value in backbone.encoding_settings().items()})
    return fingerprint


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot be read as JSON ({err}); remove the cache directory and rebuild it") from None


def _differences(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    keys = sorted(set(expected) | set(found))
    return [
        f"{k}: cache has {found.get(k)!r}, this run has {expected.get(k)!r}"
        for k in keys
        if expected.get(k) != found.get(k)
    ]


# ------------------------------------------------------------------------------ building


def _shards_of(pairs: Iterator[PreferencePair], shard_size: int) -> Iterator[tuple[int, list[PreferencePair]]]:
    shard: list[PreferencePair] = []
    index = 0
    for pair in pairs:
        shard.append(pair)
        if len(shard) == shard_size:
            yield index, shard
            index, shard = index + 1, []
    if shard:
        yield index, shard


def _shard_path(out: Path, index: int) -> Path:
    return out / f"shard_{index:05d}.safetensors"


@torch.no_grad()
def _encode_shard(
    backbone: Backbone, pairs: list[PreferencePair], settings: CacheSettings, report: ReadReport
) -> dict[str, Any]:
    """Tensors and metadata for one shard (pairs whose images fail to decode are skipped)."""
    kept, pixels, sizes, crops, crops_flip = [], [], [], [], []
    for pair in pairs:
        try:
            winner = open_image(pair.winner, f"{pair.source} row {pair.row_id} winner")
            loser = open_image(pair.loser, f"{pair.source} row {pair.row_id} loser")
        except ValueError as err:
            if settings.strict:
                raise DataError(str(err)) from None
            report.drop("image cannot be decoded", pair.row_id)
            continue
        w, l_ = transform_pair(winner, loser, settings.resolution, center_crop=True, random_flip=False)
        kept.append(pair)
        pixels.append(torch.stack([w.pixels, l_.pixels]))
        sizes.append([w.original_size, l_.original_size])
        crops.append([w.crop_top_left, l_.crop_top_left])
        # a mirrored centre crop: left offset measured in the mirrored image
        widths = [round(img.width * settings.resolution / min(img.size)) for img in (winner, loser)]
        crops_flip.append(
            [
                (c[0], max(settings.resolution, wd) - c[1] - settings.resolution)
                for c, wd in zip(crops[-1], widths, strict=True)
            ]
        )
    if not kept:
        return {}
    stacked = torch.stack(pixels)  # [n, 2, 3, H, W]
    variants = [("", stacked)] + ([("_flip", torch.flip(stacked, dims=[-1]))] if settings.flip_copies else [])
    tensors: dict[str, torch.Tensor] = {}
    for suffix, images in variants:
        means, stds = [], []
        flat = images.flatten(0, 1)  # [2n, 3, H, W], winner and loser of each pair adjacent
        for start in range(0, flat.shape[0], settings.batch_size):
            mean, std = backbone.latent_distribution(flat[start : start + settings.batch_size])
            means.append(mean.cpu())
            stds.append(std.cpu())
        mean = torch.cat(means).unflatten(0, (-1, 2))
        std = torch.cat(stds).unflatten(0, (-1, 2))
        for i, side in enumerate(SIDES):
            tensors[f"{side}_mean{suffix}"] = mean[:, i].to(torch.float16).contiguous()
            tensors[f"{side}_std{suffix}"] = std[:, i].to(torch.float16).contiguous()
    prompts = sorted({p.prompt for p in kept})
    prompt_row = {p: i for i, p in enumerate(prompts)}
    cond: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(prompts), settings.batch_size):
        part = backbone.encode_prompts(prompts[start : start + settings.batch_size])
        for key, value in part.items():
            cond.setdefault(key, []).append(value.cpu())
    for key, values in cond.items():
        tensors[f"cond.{key}"] = torch.cat(values).to(torch.float16).contiguous()
    tensors["prompt_row"] = torch.tensor([prompt_row[p.prompt] for p in kept], dtype=torch.int64)
    tensors["preference"] = torch.tensor([p.preference for p in kept], dtype=torch.float32)
    tensors["original_size"] = torch.tensor(sizes, dtype=torch.int32)
    tensors["crop_top_left"] = torch.tensor(crops, dtype=torch.int32)
    if settings.flip_copies:
        tensors["crop_top_left_flip"] = torch.tensor(crops_flip, dtype=torch.int32)
    metadata = {"prompts": json.dumps([p.prompt for p in kept]), "row_ids": json.dumps([p.row_id for p in kept])}
    return {"tensors": tensors, "metadata": metadata}


def _write_shard(path: Path, encoded: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tmp = path.with_suffix(".tmp")
    if encoded:
        save_file(
            encoded["tensors"],
            str(tmp),
            metadata={**encoded["metadata"], "num_pairs": str(len(encoded["tensors"]["prompt_row"]))},
        )
    else:  # every pair of the shard was bad: an empty marker keeps resume and indexing simple
        save_file(
            {"prompt_row": torch.zeros(0, dtype=torch.int64)},
            str(tmp),
            metadata={"num_pairs": "0", "prompts": "[]", "row_ids": "[]"},
        )
    os.replace(tmp, path)


def _shard_num_pairs(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return int(f.metadata()["num_pairs"])


def build_cache(
    backbone: Backbone,
    data: DataConfig,
    out: Path,
    settings: CacheSettings,
    process_index: int = 0,
    num_processes: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Encode this process's shards of ``data`` into ``out``; resumes at the first missing shard.

    Returns the cache identity (model fingerprint, transform, data settings), the same on every
    process; pass it to :func:`finish_cache` on process 0 after every process is done.
    """
    from tqdm.auto import tqdm

    from prefdiff.data.unpaired import images_file

    images = images_file(data.path) if data.path else None
    if images is not None:
        raise DataError(
            f"{images}: per-image labels; the latent cache holds pairs. Train kto on the images.jsonl directly, "
            "or cache pair data and train it with data.unpaired=true"
        )

    out.mkdir(parents=True, exist_ok=True)
    info_path = out / INFO_FILE
    expected = _cache_identity(backbone, data, settings)
    for made_by in (info_path, out / "cache_identity.json"):  # finished, or interrupted
        if made_by.exists():
            existing = _read_json(made_by)
            diffs = _differences(expected, {k: existing.get(k) for k in expected})
            if diffs:
                raise DataError(f"{out} holds a cache made differently ({'; '.join(diffs)}); choose another --out")
    (out / "cache_identity.json").write_text(json.dumps(expected, indent=2))
    source_report = ReadReport()  # what the reader dropped: the same on every process
    encode_report = ReadReport()  # images that failed to decode in this process's shards
    bar = tqdm(desc=f"cache[{process_index}]", unit="pair", disable=not progress)
    for index, shard in _shards_of(iter_pairs(data, source_report), settings.shard_size):
        path = _shard_path(out, index)
        if index % num_processes != process_index or path.exists():
            continue  # another process's shard, or done before an interruption
        _write_shard(path, _encode_shard(backbone, shard, settings, encode_report))
        bar.update(len(shard))
    bar.close()
    (out / f"report_{process_index}.json").write_text(
        json.dumps(
            {
                "source_dropped": dict(source_report.dropped),
                "encode_dropped": dict(encode_report.dropped),
                "examples": {**source_report.examples, **encode_report.examples},
            }
        )
    )
    log.info(
        "cache %s: read %s; failed to decode %d", out, source_report.summary(), sum(encode_report.dropped.values())
    )
    return expected


def _cache_identity(backbone: Backbone, data: DataConfig, settings: CacheSettings) -> dict[str, Any]:
    return {
        "version": CACHE_VERSION,
        "model": model_fingerprint(backbone),
        "transform": {"resolution": settings.resolution, "center_crop": True, "flip_copies": settings.flip_copies},
        "data": {
            "path": str(Path(data.path).resolve()),
            "format": data.format,
            "split": data.split,
            "columns": {k: v for k, v in vars(data.columns).items()},
            "drop_ties": data.drop_ties,
            "max_pairs": data.max_pairs,
        },
        "shard_size": settings.shard_size,
    }


def finish_cache(out: Path, identity: dict[str, Any], num_processes: int = 1) -> dict[str, Any]:
    """Index the shards and write ``cache_info.json`` (process 0, after every process is done)."""
    shards = sorted(out.glob("shard_*.safetensors"))
    counts = [_shard_num_pairs(p) for p in shards]
    reports = [json.loads(p.read_text()) for p in sorted(out.glob("report_*.json"))]
    dropped: dict[str, int] = dict(reports[0]["source_dropped"]) if reports else {}
    for report in reports:
        for reason, count in report["encode_dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + count
    info = {
        **identity,
        "shards": [{"file": p.name, "num_pairs": n} for p, n in zip(shards, counts, strict=True)],
        "num_pairs": sum(counts),
        "dropped": dropped,
        "complete": True,
    }
    if info["num_pairs"] == 0:
        raise DataError(f"{out}: the cache holds no pairs (dropped: {dropped})")
    (out / INFO_FILE).write_text(json.dumps(info, indent=2))
    return info


# ------------------------------------------------------------------------------ reading


def is_cache_dir(path: str | Path) -> bool:
    """A finished cache, or one whose build was interrupted (training then says so)."""
    return bool(path) and ((Path(path) / INFO_FILE).is_file() or (Path(path) / "cache_identity.json").is_file())


def load_cache_info(path: Path) -> dict[str, Any]:
    info_file = path / INFO_FILE
    info = _read_json(info_file) if info_file.is_file() else {}
    if not info.get("complete"):
        raise DataError(f"{path}: the cache is incomplete; run `prefdiff cache` again to finish it")
    if info.get("version") != CACHE_VERSION:
        raise DataError(f"{path}: cache version {info.get('version')} is not {CACHE_VERSION}; rebuild it")
    return info


def check_cache_matches(info: dict[str, Any], backbone: Backbone, data: DataConfig, path: Path) -> None:
    """Refuse a cache made with another model or transform, saying what differs."""
    problems = _differences(model_fingerprint(backbone), info["model"])
    transform = info["transform"]
    if transform["resolution"] != data.resolution:
        problems.append(f"resolution: cache has {transform['resolution']}, data.resolution is {data.resolution}")
    if not data.center_crop:
        problems.append("crop: the cache holds centre crops; set data.center_crop=true")
    if data.random_flip and not transform["flip_copies"]:
        problems.append(
            "flip: the cache has no flipped copies; rebuild with --flip-copies or set data.random_flip=false"
        )
    if problems:
        raise DataError(f"{path} was made with a different model or transform: " + "; ".join(problems))


class CachedPairStream(Dataset):
    """Slot-indexed dataset over a cache, in the same order as the in-memory on-the-fly stream
    (a streamed dataset visits pairs window by window, so its order differs)."""

    def __init__(self, path: str | Path, seed: int, data: DataConfig, backbone: Backbone) -> None:
        self.path = Path(path)
        self.info = load_cache_info(self.path)
        check_cache_matches(self.info, backbone, data, self.path)
        self.seed = seed
        self.random_flip = data.random_flip
        self.soft_labels = data.soft_labels
        counts = [s["num_pairs"] for s in self.info["shards"]]
        total = sum(counts)
        if data.max_pairs is not None:
            total = min(total, data.max_pairs)
        self.size = total
        self.locations: list[tuple[int, int]] = [(s, r) for s, n in enumerate(counts) for r in range(n)][:total]
        self._pair_index = EpochOrder(seed, total)
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return self.size

    def _handle(self, shard: int) -> Any:
        from safetensors import safe_open

        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.path / self.info["shards"][shard]["file"]), framework="pt")
        return self._handles[shard]

    def __getitem__(self, slot: int) -> dict[str, Any]:
        shard, row = self.locations[self._pair_index(slot)]
        f = self._handle(shard)
        flip = False
        if self.random_flip:  # the same draw as transform_pair's flip for this slot
            flip = bool(torch.rand(3, generator=pair_generator(self.seed, slot, stream=TRANSFORM_STREAM))[2] < 0.5)
        suffix = "_flip" if flip else ""
        item: dict[str, Any] = {"slot": slot}
        for side in SIDES:
            item[f"{side}_latent_mean"] = f.get_slice(f"{side}_mean{suffix}")[row : row + 1][0].float()
            item[f"{side}_latent_std"] = f.get_slice(f"{side}_std{suffix}")[row : row + 1][0].float()
        item["prompt_cond"] = self._prompt_cond(f, row)
        item["preference"] = self._preference(f, shard, row)
        item["original_size"] = f.get_slice("original_size")[row : row + 1][0]
        item["crop_top_left"] = f.get_slice(f"crop_top_left{suffix}")[row : row + 1][0]
        return item

    def _prompt_cond(self, f: Any, row: int) -> dict[str, torch.Tensor]:
        prompt_row = int(f.get_slice("prompt_row")[row : row + 1][0])
        return {
            key[len("cond.") :]: f.get_slice(key)[prompt_row : prompt_row + 1][0].float()
            for key in f.keys()
            if key.startswith("cond.")
        }

    def prompt_cond_of(self, slot: int) -> dict[str, torch.Tensor]:
        """The cached text conditioning of the pair at ``slot`` alone (no latents read)."""
        shard, row = self.locations[self._pair_index(slot)]
        return self._prompt_cond(self._handle(shard), row)

    def _preference(self, f: Any, shard: int, row: int) -> float:
        """The pair's preference probability with ``data.soft_labels``, else 1.0."""
        if not self.soft_labels:
            return 1.0
        if "preference" not in f.keys():
            raise DataError(
                f"{self.path / self.info['shards'][shard]['file']}: this cache predates soft labels (no preference "
                "per pair); rebuild it to train with data.soft_labels=true"
            )
        return float(f.get_slice("preference")[row : row + 1][0])

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers open their own handles
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state


def collate_cached(items: list[dict[str, Any]]) -> PairBatch:
    """Stack cached pairs into a :class:`PairBatch` (text conditioning and latent statistics),
    micro-conditioning laid out ``[winners; losers]`` as on the fly."""
    latents = {
        side: LatentStats(
            torch.stack([item[f"{side}_latent_mean"] for item in items]),
            torch.stack([item[f"{side}_latent_std"] for item in items]),
        )
        for side in SIDES
    }
    micro = {}
    for key in ("original_size", "crop_top_left"):
        stacked = torch.stack([item[key] for item in items])  # [P, 2, 2]
        micro[key] = torch.cat([stacked[:, 0], stacked[:, 1]])
    return PairBatch(
        slots=[item["slot"] for item in items],
        labels=torch.tensor([float(item["preference"]) for item in items]),
        original_size=micro["original_size"],
        crop_top_left=micro["crop_top_left"],
        prompt_cond={key: torch.stack([item["prompt_cond"][key] for item in items]) for key in items[0]["prompt_cond"]},
        winner_latents=latents["winner"],
        loser_latents=latents["loser"],
    )


__all__ = [
    "CacheSettings",
    "CachedPairStream",
    "build_cache",
    "collate_cached",
    "finish_cache",
    "is_cache_dir",
    "load_cache_info",
    "model_fingerprint",
]
