"""Typed, strict configuration: defaults <- YAML recipe <- dotted command-line overrides.

Every field carries its help text in ``field(metadata={"help": ...})``. Merging is strict: an
unknown key or a value of the wrong type raises :class:`ConfigError` naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from prefdiff.errors import ConfigError
from prefdiff.recipes import read_recipe


def _f(default: Any, help: str, **kwargs: Any) -> Any:  # noqa: A002 - "help" reads best here
    """A dataclass field with help text; list/dict defaults are copied per instance."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class ModelConfig:
    path: str = _f("", "A diffusers-format pipeline directory (StableDiffusionPipeline or StableDiffusionXLPipeline).")
    prediction_type: str | None = _f(
        None, "Override the scheduler's prediction type ('epsilon' or 'v_prediction'); None reads it from scheduler/scheduler_config.json."
    )


@dataclass
class LoraConfig:
    enabled: bool = _f(True, "Train LoRA adapters (reference = same UNet, adapters disabled). False: full fine-tuning with a frozen reference copy.")
    rank: int = _f(8, "LoRA rank r.")
    alpha: float = _f(8.0, "LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = _f(0.0, "Dropout on the LoRA branch.")
    target_modules: list[str] = _f(
        ["to_q", "to_k", "to_v", "to_out.0"], "UNet module names (suffixes) that receive adapters."
    )


@dataclass
class DataColumnsConfig:
    prompt: str = _f("", "Column (JSONL key) holding the prompt, for data.format=mapped.")
    chosen: str = _f("", "Pair style: the column holding the preferred image (bytes, {bytes, path} struct, or a path relative to the data file).")
    rejected: str = _f("", "Pair style: the column holding the other image.")
    image_0: str = _f("", "Label style: the column holding the first image.")
    image_1: str = _f("", "Label style: the column holding the second image.")
    label_0: str = _f("", "Label style: the column holding Pick-a-Pic's label_0 (1: image_0 won, 0: image_1 won, 0.5: tie).")

    def is_set(self) -> bool:
        """Whether any column is named (data.format=auto then means 'mapped')."""
        return any(getattr(self, f.name) for f in dataclasses.fields(self))


@dataclass
class DataConfig:
    path: str = _f(
        "",
        "Preference data: a Pick-a-Pic parquet file, a directory of parquet shards, a saved datasets (arrow) "
        "directory, a pair folder with pairs.jsonl, or any parquet/JSONL file with data.columns set.",
    )
    format: Literal["auto", "pickapic", "pairs_jsonl", "mapped"] = _f(
        "auto", "How to read data.path: auto detects (pairs.jsonl -> pairs_jsonl; data.columns set -> mapped; else pickapic)."
    )
    columns: DataColumnsConfig = field(
        default_factory=DataColumnsConfig,
        metadata={"help": "Column mapping for data.format=mapped: prompt plus chosen/rejected, or image_0/image_1/label_0."},
    )
    split: str = _f("train", "Split of a saved DatasetDict, or of hub-style shards named '<split>-*.parquet' (others are ignored).")
    resolution: int = _f(512, "Training resolution in pixels: resize the short side, then crop a square.")
    center_crop: bool = _f(True, "Centre crop (True) or random crop (False); one crop for both images of a pair.")
    random_flip: bool = _f(False, "Flip both images of a pair horizontally with probability 0.5.")
    drop_ties: bool = _f(True, "Drop pairs whose label_0 is 0.5 (ties), as the paper does.")
    max_pairs: int | None = _f(None, "Use at most this many pairs (the first ones in storage order, after drops); None for all.")
    num_workers: int = _f(0, "DataLoader worker processes for decoding images.")
    strict: bool = _f(
        False,
        "Bad input (corrupt image, missing column, empty caption, label outside {0, 0.5, 1}) raises an error naming "
        "the file and row; false skips and counts it (and, when streaming, substitutes a corrupt pair at training time).",
    )
    check_images: Literal["header", "full", "none"] = _f(
        "header",
        "Image check while reading: header (parse format and size, fast), full (decode; also catches truncated "
        "files, a few ms per image), none. Images that fail later, when decoded for training, are substituted.",
    )
    streaming: bool | Literal["auto"] = _f(
        "auto",
        "Stream parquet/arrow data window by window instead of holding every pair in memory; auto streams "
        "when the data files exceed data.stream_above_mb. JSONL formats are always read into memory (paths only).",
    )
    stream_above_mb: float = _f(1024.0, "With data.streaming=auto, stream when the data files total more than this (MiB).")
    shuffle_buffer: int = _f(
        2048,
        "Streaming: pairs per shuffle window (whole row groups are added until a window holds at least this "
        "many). Memory is about one window of encoded images per DataLoader worker.",
    )


@dataclass
class ObjectiveConfig:
    name: Literal["dpo", "sft"] = _f("dpo", "Training objective: 'dpo' (Diffusion-DPO) or 'sft' (denoising loss on winners only).")
    beta: float = _f(5000.0, "DPO beta (KL strength) under the 0.5*beta convention; the paper uses 2000-5000.")


@dataclass
class OptimConfig:
    name: Literal["adamw", "adafactor", "adamw8bit"] = _f("adamw", "Optimizer: adamw, adafactor (transformers), adamw8bit (needs bitsandbytes).")
    lr: float = _f(1e-5, "Peak learning rate. The paper uses 1e-8 per pair of effective batch (2.048e-5 for 2048).")
    weight_decay: float = _f(1e-2, "Decoupled weight decay (AdamW).")
    beta1: float = _f(0.9, "Adam beta1.")
    beta2: float = _f(0.999, "Adam beta2.")
    eps: float = _f(1e-8, "Adam epsilon.")
    max_grad_norm: float | None = _f(1.0, "Clip the global gradient norm to this value; None disables clipping.")
    scheduler: Literal["constant", "cosine"] = _f("constant", "Learning-rate schedule after warm-up.")
    warmup_steps: int = _f(0, "Linear warm-up steps (optimizer steps).")


@dataclass
class TrainConfig:
    max_steps: int = _f(1000, "Number of optimizer steps.")
    batch_size: int = _f(1, "Pairs per process per micro-step.")
    grad_accum_steps: int = _f(1, "Micro-steps accumulated per optimizer step.")
    global_batch_pairs: int | None = _f(
        None,
        "If set, grad_accum_steps is derived so that batch_size x processes x accumulation equals this (must divide evenly).",
    )
    mixed_precision: Literal["no", "fp16", "bf16"] = _f("no", "Mixed precision for the forward passes; trainable weights stay fp32.")
    gradient_checkpointing: bool = _f(False, "Recompute UNet activations in the backward pass to save memory.")
    seed: int = _f(0, "Seed for data order, noise, timesteps and initialisation.")
    checkpoint_every: int = _f(500, "Save a resumable checkpoint every N optimizer steps (0: never).")
    keep_last: int = _f(2, "Keep only the last K checkpoints.")
    log_every: int = _f(1, "Log metrics every N optimizer steps.")
    report_to: Literal["tensorboard", "wandb", "none"] = _f("tensorboard", "Metrics tracker; metrics.jsonl is always written.")
    validate_every: int = _f(0, "Write validation images every N optimizer steps (0: only at the end if prompts are set).")
    validation_prompts: list[str] = _f([], "Fixed prompts for validation images.")
    validation_seeds: list[int] = _f([0], "Seeds for validation images (one image per prompt and seed).")
    validation_steps: int = _f(25, "Sampler steps for validation images.")
    validation_guidance_scale: float = _f(5.0, "Classifier-free guidance scale for validation images.")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "The pipeline to tune."})
    lora: LoraConfig = field(default_factory=LoraConfig, metadata={"help": "LoRA adapters or full fine-tuning."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Preference data and transforms."})
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig, metadata={"help": "Training objective."})
    optim: OptimConfig = field(default_factory=OptimConfig, metadata={"help": "Optimizer and learning-rate schedule."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "The training loop."})
    output_dir: str = _f("runs/prefdiff", "Run directory: config, logs, checkpoints, weights and validation images.")


# --------------------------------------------------------------------------------------------
# strict merging


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if isinstance(value, bool) and "no" in get_args(tp):
            value = "yes" if value else "no"  # YAML 1.1 reads no/off/false as False
        if value not in get_args(tp):
            choices = ", ".join(repr(c) for c in get_args(tp))
            raise ConfigError(f"config key '{key}': {value!r} is not one of {choices}")
        return value
    if origin is list:
        (item_type,) = get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        return [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, int | float) and not isinstance(value, bool) or type(value).__name__ in ("date", "datetime"):
            return str(value)  # YAML turned a name like 2024-01-01 or 123 into a date or number
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}': unsupported type {_type_name(tp)}")  # pragma: no cover


def merge_into(obj: Any, updates: dict[str, Any], prefix: str = "") -> None:
    """Merge a nested mapping into dataclass ``obj`` in place, strictly."""
    if not isinstance(updates, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.') or '<root>'}': expected a mapping, got {updates!r}")
    hints = get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            close = ", ".join(sorted(names))
            raise ConfigError(f"unknown config key '{dotted}' (known keys here: {close})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            merge_into(current, value, prefix=f"{dotted}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], dotted))


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["optim.lr=1e-6", "lora.enabled=false"]`` into a nested mapping.

    Values are parsed as YAML scalars/lists (``1e-6``, ``true``, ``[a, b]``); write
    ``key=null`` for None.
    """
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. optim.lr=1e-6)")
        dotted, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = nested
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with an earlier override of '{part}'")
        node[parts[-1]] = value
    return nested


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML recipe ``path`` (a file or a packaged recipe name), then dotted ``overrides``; validated."""
    config = Config()
    if path is not None:
        data = read_recipe(path)  # a packaged recipe name or a file, parents merged; errors name the file
        try:
            merge_into(config, data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    if overrides:
        merge_into(config, parse_overrides(overrides))
    validate(config)
    return config


def validate(config: Config) -> None:
    """Range checks that the types alone cannot express."""
    checks = [
        (config.train.max_steps >= 1, "train.max_steps", "must be >= 1"),
        (config.train.batch_size >= 1, "train.batch_size", "must be >= 1"),
        (config.train.grad_accum_steps >= 1, "train.grad_accum_steps", "must be >= 1"),
        (config.data.resolution >= 8 and config.data.resolution % 8 == 0, "data.resolution", "must be a positive multiple of 8"),
        (config.lora.rank >= 1, "lora.rank", "must be >= 1"),
        (config.optim.lr > 0, "optim.lr", "must be > 0"),
        (config.objective.beta > 0, "objective.beta", "must be > 0"),
        (config.train.keep_last >= 1, "train.keep_last", "must be >= 1"),
        (config.train.global_batch_pairs is None or config.train.global_batch_pairs >= 1, "train.global_batch_pairs", "must be >= 1 or null"),
        (config.train.log_every >= 1, "train.log_every", "must be >= 1"),
        (config.train.checkpoint_every >= 0, "train.checkpoint_every", "must be >= 0"),
        (config.train.validate_every >= 0, "train.validate_every", "must be >= 0"),
        (config.train.validation_steps >= 1, "train.validation_steps", "must be >= 1"),
        (config.data.max_pairs is None or config.data.max_pairs >= 1, "data.max_pairs", "must be >= 1 or null"),
        (config.data.num_workers >= 0, "data.num_workers", "must be >= 0"),
        (config.lora.alpha > 0, "lora.alpha", "must be > 0"),
        (0 <= config.lora.dropout < 1, "lora.dropout", "must be in [0, 1)"),
        (config.optim.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0"),
        (config.model.prediction_type in (None, "epsilon", "v_prediction"), "model.prediction_type", "must be epsilon or v_prediction"),
    ]
    for ok, key, message in checks:
        if not ok:
            raise ConfigError(f"config key '{key}' {message} (got {_lookup(config, key)!r})")


def _lookup(config: Config, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain nested dicts (for YAML dumps and trackers)."""
    return dataclasses.asdict(config)


def dump_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every leaf field: the reference printed by `prefdiff config`."""
    rows: list[tuple[str, str, str]] = []
    instance = cls()
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            rows.extend(describe(type(value), f"{prefix}{f.name}."))
        else:
            rows.append((f"{prefix}{f.name}", repr(value), f.metadata.get("help", "")))
    return rows


__all__ = [
    "Config",
    "DataColumnsConfig",
    "DataConfig",
    "LoraConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "TrainConfig",
    "describe",
    "dump_yaml",
    "load_config",
    "parse_overrides",
    "to_dict",
]
