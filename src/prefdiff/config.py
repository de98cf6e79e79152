"""Typed, strict configuration: defaults <- YAML recipe <- dotted command-line overrides.

Every field carries its help text in ``field(metadata={"help": ...})``. Merging is strict: an
unknown key or a value of the wrong type raises :class:`ConfigError` naming the dotted key.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from prefdiff.errors import ConfigError
from prefdiff.recipes import read_recipe

log = logging.getLogger("prefdiff.config")


def _f(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with help text; list/dict defaults are copied per instance."""
    if isinstance(default, list | dict):
        return field(default_factory=functools.partial(copy.copy, default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class ModelConfig:
    path: str = _f(
        "",
        "A diffusers-format pipeline directory of a registered model family (`prefdiff config --reference` lists "
        "them).",
    )
    prediction_type: str | None = _f(
        None,
        "UNet families: override the scheduler's prediction type ('epsilon' or 'v_prediction'); None reads it "
        "from scheduler/scheduler_config.json. The flow families always predict the velocity noise - x0.",
    )
    timestep_sampling: Literal["logit_normal", "uniform", "mode"] = _f(
        "logit_normal",
        "Flow families (sd3, flux): the density u is drawn from per pair, before the scheduler's shift maps it "
        "to a sigma (diffusers.training_utils.compute_density_for_timestep_sampling). SD3's paper trains with "
        "logit_normal(0, 1).",
    )
    logit_mean: float = _f(0.0, "Flow families: mean of the logit-normal density.")
    logit_std: float = _f(1.0, "Flow families: standard deviation of the logit-normal density.")
    mode_scale: float = _f(1.29, "Flow families: scale of the mode density (timestep_sampling=mode).")
    loss_weighting: Literal["none", "sigma_sqrt", "cosmap"] = _f(
        "none",
        "Flow families: per-sample weight of the velocity error (diffusers.training_utils."
        "compute_loss_weighting_for_sd3); it multiplies policy and reference errors alike.",
    )
    guidance: float = _f(
        3.5,
        "FLUX.1 checkpoints with a guidance embedding (FLUX.1-dev): the guidance value fed to the transformer "
        "while training (diffusers' FLUX training scripts use 3.5). Ignored by other families.",
    )
    timestep_spacing: Literal["leading", "trailing", "linspace"] | None = _f(
        None,
        "UNet families: the timestep spacing of the pipeline's sampler for validation images (None: the scheduler's "
        "own). SDXL-Turbo samples with trailing: its 4 steps are 999, 749, 499, 249.",
    )
    zero_terminal_snr: bool = _f(
        False,
        "UNet families: rescale the noise schedule so that the last timestep is pure noise (Lin et al. 2023, "
        "'Common Diffusion Noise Schedules and Sample Steps are Flawed'), through the scheduler's "
        "rescale_betas_zero_snr, for training and for validation images alike. Needs a v-prediction model: at zero "
        "SNR an epsilon target equals the input and says nothing about the image.",
    )
    max_sequence_length: int | None = _f(
        None,
        "Flow families: T5 prompt tokens (the pipelines' defaults: 256 for SD3, 512 for FLUX.1 when null). A "
        "latent cache records it, and training on that cache must use the same value.",
    )


@dataclass
class LoraConfig:
    enabled: bool = _f(
        True,
        "Train LoRA adapters (reference = same denoiser, adapters disabled). False: full fine-tuning with a frozen "
        "reference copy.",
    )
    rank: int = _f(8, "LoRA rank r.")
    alpha: float = _f(8.0, "LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = _f(0.0, "Dropout on the LoRA branch.")
    target_modules: list[str] | None = _f(
        None,
        "Denoiser module names (suffixes) that receive adapters; null: the model family's default "
        "(to_q, to_k, to_v, to_out.0 for the SD and SDXL UNets).",
    )


@dataclass
class DataColumnsConfig:
    prompt: str = _f("", "Column (JSONL key) holding the prompt, for data.format=mapped.")
    chosen: str = _f(
        "",
        "Pair style: the column holding the preferred image (bytes, {bytes, path} struct, or a path relative to the "
        "data file).",
    )
    rejected: str = _f("", "Pair style: the column holding the other image.")
    image_0: str = _f("", "Label style: the column holding the first image.")
    image_1: str = _f("", "Label style: the column holding the second image.")
    label_0: str = _f(
        "", "Label style: the column holding Pick-a-Pic's label_0 (1: image_0 won, 0: image_1 won, 0.5: tie)."
    )

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
    format: str = _f(
        "auto",
        "How to read data.path: auto detects (data.columns set -> mapped; pairs.jsonl -> pairs_jsonl; else pickapic), "
        "or a registered data format by name.",
    )
    columns: DataColumnsConfig = field(
        default_factory=DataColumnsConfig,
        metadata={
            "help": "Column mapping for data.format=mapped: prompt plus chosen/rejected, or image_0/image_1/label_0."
        },
    )
    split: str = _f(
        "train", "Split of a saved DatasetDict, or of hub-style shards named '<split>-*.parquet' (others are ignored)."
    )
    resolution: int = _f(512, "Training resolution in pixels: resize the short side, then crop a square.")
    center_crop: bool = _f(True, "Centre crop (True) or random crop (False); one crop for both images of a pair.")
    random_flip: bool = _f(False, "Flip both images of a pair horizontally with probability 0.5.")
    drop_ties: bool = _f(True, "Drop pairs whose label_0 is 0.5 (ties), as the paper does.")
    soft_labels: bool = _f(
        False,
        "Train on each pair's preference probability instead of a hard winner: the data's preference_0 (vote "
        "fractions from the label app, label-ai --temperature, the toy's raters), 0.5 for kept ties. Needs an "
        "objective with a soft-label loss (dpo, ipo).",
    )
    unpaired: bool = _f(
        False,
        "Train an objective on per-image labels (kto) from pair data: each pair's winner becomes a desirable "
        "image and its loser an undesirable one (Diffusion-KTO's conversion). Not needed for an images.jsonl.",
    )
    allow_outside_paths: bool = _f(
        False,
        "pairs.jsonl folders: accept image paths that lead out of the file's folder (.., absolute paths, symlinks "
        "out); refused rows by default, as in the label app.",
    )
    max_pairs: int | None = _f(
        None, "Use at most this many pairs (the first ones in storage order, after drops); None for all."
    )
    num_workers: int = _f(0, "DataLoader worker processes for decoding images.")
    strict: bool = _f(
        False,
        "Bad input (corrupt image, missing column, empty caption, label outside {0, 0.5, 1}) raises an error naming "
        "the file and row; false skips and counts it (and, when streaming, substitutes a corrupt pair at training "
        "time).",
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
    stream_above_mb: float = _f(
        1024.0, "With data.streaming=auto, stream when the data files total more than this (MiB)."
    )
    shuffle_buffer: int = _f(
        2048,
        "Streaming: pairs per shuffle window (whole row groups are added until a window holds at least this "
        "many). Memory is about one window of encoded images per DataLoader worker.",
    )


@dataclass
class ObjectiveConfig:
    """``objective.name`` picks a registered objective; the objective's own fields (``beta`` for
    dpo, ...) sit beside it as ``objective.<field>`` and live in ``options``, an instance of the
    objective's class. ``config.objective.beta`` reads through to ``options``."""

    name: str = _f(
        "dpo", "Training objective, one of the registered objectives (`prefdiff config --reference` lists them)."
    )
    options: Any = field(default=None, metadata={"help": "The named objective's own fields (objective.<field>)."})

    def __post_init__(self) -> None:
        if self.options is None:
            self.options = objective_class(self.name, "objective.name")()

    def __getattr__(self, key: str) -> Any:
        options = self.__dict__.get("options")
        if options is None or key.startswith("__"):
            raise AttributeError(key)
        return getattr(options, key)

    def merge(self, updates: dict[str, Any], prefix: str) -> None:
        """Merge ``{"name": ..., field: value}``: the name first (its fields start from the
        objective's defaults, keeping same-named values set before), then the fields, strictly."""
        if not isinstance(updates, dict):
            raise ConfigError(f"config key '{prefix.rstrip('.')}': expected a mapping, got {updates!r}")
        updates = dict(updates)
        if "name" in updates:
            name = _coerce(updates.pop("name"), str, f"{prefix}name")
            if name != self.name:
                cls = objective_class(name, f"{prefix}name")
                carried = {
                    f.name: getattr(self.options, f.name)
                    for f in dataclasses.fields(cls)
                    if hasattr(self.options, f.name)
                }
                self.name, self.options = name, cls(**carried)
        known = {f.name for f in dataclasses.fields(self.options)}
        for key in list(updates):
            if key in known:
                continue
            owners = _objectives_with_key(key)
            if not owners:
                own = ", ".join(sorted(known)) or "none"
                raise ConfigError(
                    f"unknown config key '{prefix}{key}': objective {self.name!r} takes name and its own keys: {own}"
                )
            # a key of another objective (objective.beta with sft, as recipes shared between a
            # run and its baseline write it): accepted as before, and said to be unused
            log.warning(
                "config key '%s%s' belongs to %s, not %r: ignored",
                prefix,
                key,
                f"objective {owners[0]}" if len(owners) == 1 else f"objectives {', '.join(owners)}",
                self.name,
            )
            updates.pop(key)
        merge_into(self.options, updates, prefix)

    def as_dict(self) -> dict[str, Any]:
        """``{"name": ..., **own fields}``: the flat form of recipes and config.yaml."""
        return {"name": self.name, **dataclasses.asdict(self.options)}


def _objectives_with_key(key: str) -> list[str]:
    from prefdiff.objectives.base import OBJECTIVES

    return [name for name, cls in OBJECTIVES.items() if key in {f.name for f in dataclasses.fields(cls)}]


def objective_class(name: str, key: str) -> type:
    """The registered objective class for ``name``; unknown names list the known ones."""
    from prefdiff.objectives.base import OBJECTIVES

    return OBJECTIVES.get(name, key=key)


@dataclass
class OptimConfig:
    name: Literal["adamw", "adafactor", "adamw8bit"] = _f(
        "adamw", "Optimizer: adamw, adafactor (transformers), adamw8bit (needs bitsandbytes)."
    )
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
        "If set, grad_accum_steps is derived so that batch_size x processes x accumulation equals this (must divide "
        "evenly).",
    )
    mixed_precision: Literal["no", "fp16", "bf16"] = _f(
        "no", "Mixed precision for the forward passes; trainable weights stay fp32."
    )
    gradient_checkpointing: bool = _f(
        False, "Recompute the denoiser's activations in the backward pass to save memory."
    )
    seed: int = _f(0, "Seed for data order, noise, timesteps and initialisation.")
    timesteps: list[int] | None = _f(
        None,
        "UNet families: train on this discrete set of timesteps only, each pair drawing one of them uniformly "
        "(few-step models: [249, 499, 749, 999] are the four steps SDXL-Turbo samples with trailing spacing). "
        "None: every timestep in [0, num_train_timesteps).",
    )
    checkpoint_every: int = _f(500, "Save a resumable checkpoint every N optimizer steps (0: never).")
    keep_last: int = _f(2, "Keep only the last K checkpoints.")
    log_every: int = _f(1, "Log metrics every N optimizer steps.")
    report_to: Literal["tensorboard", "wandb", "none"] = _f(
        "tensorboard", "Metrics tracker; metrics.jsonl is always written."
    )
    validate_every: int = _f(
        0, "Write validation images every N optimizer steps (0: only at the end if prompts are set)."
    )
    validation_prompts: list[str] = _f([], "Fixed prompts for validation images.")
    validation_seeds: list[int] = _f([0], "Seeds for validation images (one image per prompt and seed).")
    validation_steps: int = _f(25, "Sampler steps for validation images.")
    validation_guidance_scale: float = _f(5.0, "Classifier-free guidance scale for validation images.")
    eval_data: str = _f(
        "",
        "Held-out preference pairs (any pair data.path: a latent cache, a Pick-a-Pic parquet, a pair folder) on which "
        "the policy's implicit accuracy against the reference is measured every train.eval_every steps and at the "
        "last, into RUN/eval.jsonl (empty: none).",
    )
    eval_every: int = _f(0, "Measure implicit accuracy on train.eval_data every N optimizer steps (0: never).")
    eval_draws: int = _f(4, "Fixed noise draws per held-out pair, averaged before the sign is taken.")
    select_step: Literal["last", "best", "one_se"] = _f(
        "last",
        "Whose weights the run keeps as its result: last (the final step's), best (the evaluated step with the "
        "highest held-out implicit accuracy), or one_se (the earliest evaluated step within one standard error of "
        "the best). The choice goes to RUN/selection.json; best and one_se keep a snapshot per evaluation in "
        "RUN/steps/.",
    )
    on_nonfinite: Literal["stop", "skip_step"] = _f(
        "stop",
        "A non-finite loss or gradient norm: stop (an error naming the step and the metric, before the update, so the "
        "last checkpoint and the weights stay finite; exit 2) or skip_step (drop that step's update, count it as "
        "skipped_steps, go on).",
    )
    compile: bool = _f(
        False,
        "torch.compile the denoiser (the policy, and the live reference, which is the same module with LoRA); the "
        "first step's seconds, compilation included, are logged as first_step_seconds.",
    )


@dataclass
class ReferenceConfig:
    mode: Literal["live", "cached"] = _f(
        "live",
        "live: run the frozen reference in every step (LoRA: adapters off; full fine-tuning: a frozen copy). cached: "
        "read the errors `prefdiff reference` computed once for this run's slots (reference.path): an SFT-sized step, "
        "and no frozen copy.",
    )
    path: str = _f("", "With reference.mode=cached: the directory `prefdiff reference --out` wrote.")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "The pipeline to tune."})
    lora: LoraConfig = field(default_factory=LoraConfig, metadata={"help": "LoRA adapters or full fine-tuning."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Preference data and transforms."})
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig, metadata={"help": "Training objective."})
    optim: OptimConfig = field(default_factory=OptimConfig, metadata={"help": "Optimizer and learning-rate schedule."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "The training loop."})
    reference: ReferenceConfig = field(
        default_factory=ReferenceConfig, metadata={"help": "Where the reference model's errors come from."}
    )
    output_dir: str = _f("runs/prefdiff", "Run directory: config, logs, checkpoints, weights and validation images.")


# --------------------------------------------------------------------------------------------
# strict merging


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " or ".join(repr(choice) for choice in get_args(tp))
    if get_origin(tp) in (Union, types.UnionType):  # its members (an Optional's __name__ says nothing)
        return " or ".join("null" if arg is type(None) else _type_name(arg) for arg in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce_union(value: Any, tp: Any, key: str) -> Any:
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


def _coerce_literal(value: Any, tp: Any, key: str) -> Any:
    if isinstance(value, bool) and "no" in get_args(tp):
        value = "yes" if value else "no"  # YAML 1.1 reads no/off/false as False
    if value not in get_args(tp):
        choices = ", ".join(repr(c) for c in get_args(tp))
        raise ConfigError(f"config key '{key}': {value!r} is not one of {choices}")
    return value


def _coerce_list(value: Any, tp: Any, key: str) -> list[Any]:
    (item_type,) = get_args(tp)
    if not isinstance(value, list | tuple):
        raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
    return [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]


def _coerce_bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    return value


def _coerce_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    return value


def _coerce_float(value: Any, key: str) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    if not math.isfinite(value):  # inf or nan: a run would train on it and diverge silently
        raise ConfigError(f"config key '{key}': expected a finite number, got {value!r}")
    return float(value)


def _coerce_str(value: Any, key: str) -> str:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number or type(value).__name__ in ("date", "datetime"):
        return str(value)  # YAML turned a name like 2024-01-01 or 123 into a date or number
    if not isinstance(value, str):
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    return value


_SCALARS: dict[Any, Callable[[Any, str], Any]] = {
    bool: _coerce_bool,
    int: _coerce_int,
    float: _coerce_float,
    str: _coerce_str,
}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return _coerce_union(value, tp, key)
    if origin is Literal:
        return _coerce_literal(value, tp, key)
    if origin is list:
        return _coerce_list(value, tp, key)
    if tp in _SCALARS:
        return _SCALARS[tp](value, key)
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
        if isinstance(current, ObjectiveConfig):
            current.merge(value, prefix=f"{dotted}.")
        elif dataclasses.is_dataclass(current):
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
    """Defaults, then the YAML recipe ``path`` (a file or a packaged recipe name), then dotted ``overrides``.

    The result is validated.
    """
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
        (
            config.data.resolution >= 8 and config.data.resolution % 8 == 0,
            "data.resolution",
            "must be a positive multiple of 8",
        ),
        (config.lora.rank >= 1, "lora.rank", "must be >= 1"),
        (config.optim.lr > 0, "optim.lr", "must be > 0"),
        (config.train.keep_last >= 1, "train.keep_last", "must be >= 1"),
        (
            config.train.global_batch_pairs is None or config.train.global_batch_pairs >= 1,
            "train.global_batch_pairs",
            "must be >= 1 or null",
        ),
        (config.train.log_every >= 1, "train.log_every", "must be >= 1"),
        (config.train.checkpoint_every >= 0, "train.checkpoint_every", "must be >= 0"),
        (config.train.validate_every >= 0, "train.validate_every", "must be >= 0"),
        (config.train.validation_steps >= 1, "train.validation_steps", "must be >= 1"),
        (config.train.eval_every >= 0, "train.eval_every", "must be >= 0"),
        (config.train.eval_draws >= 1, "train.eval_draws", "must be >= 1"),
        (config.data.max_pairs is None or config.data.max_pairs >= 1, "data.max_pairs", "must be >= 1 or null"),
        (config.data.num_workers >= 0, "data.num_workers", "must be >= 0"),
        (config.lora.alpha > 0, "lora.alpha", "must be > 0"),
        (0 <= config.lora.dropout < 1, "lora.dropout", "must be in [0, 1)"),
        (config.optim.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0"),
        (
            config.model.prediction_type in (None, "epsilon", "v_prediction"),
            "model.prediction_type",
            "must be epsilon or v_prediction",
        ),
        (config.model.logit_std > 0, "model.logit_std", "must be > 0"),
        (
            config.train.timesteps is None
            or (
                len(config.train.timesteps) >= 1
                and all(t >= 0 for t in config.train.timesteps)
                and len(set(config.train.timesteps)) == len(config.train.timesteps)
            ),
            "train.timesteps",
            "must be a non-empty list of distinct timesteps >= 0, or null",
        ),
        (
            config.model.max_sequence_length is None or 1 <= config.model.max_sequence_length <= 512,
            "model.max_sequence_length",
            "must be in [1, 512] or null",
        ),
    ]
    checks += [(ok, f"objective.{name}", rule) for ok, name, rule in config.objective.options.checks()]
    for ok, key, message in checks:
        if not ok:
            raise ConfigError(f"config key '{key}' {message} (got {_lookup(config, key)!r})")
    if config.data.soft_labels and not getattr(config.objective.options, "soft_labels", False):
        raise ConfigError(
            f"config key 'data.soft_labels' is true but objective {config.objective.name!r} takes hard labels only; "
            "use an objective with a soft-label loss (dpo, ipo) or set data.soft_labels=false"
        )
    from prefdiff.objectives.base import is_unpaired

    if config.data.unpaired and not is_unpaired(config.objective.options):
        raise ConfigError(
            f"config key 'data.unpaired' is true but objective {config.objective.name!r} trains on pairs; "
            "use an objective on per-image labels (kto) or set data.unpaired=false"
        )
    if config.reference.mode == "cached" and not config.reference.path:
        raise ConfigError(
            "config key 'reference.path' is empty but reference.mode=cached: "
            "give the directory `prefdiff reference` wrote"
        )
    if bool(config.train.eval_data) != bool(config.train.eval_every):
        given, missing = ("eval_data", "eval_every") if config.train.eval_data else ("eval_every", "eval_data")
        raise ConfigError(
            f"config key 'train.{given}' is set but train.{missing} is not: held-out evaluation needs both "
            "(the pairs, and how often)"
        )
    if config.train.select_step != "last" and not config.train.eval_every:
        raise ConfigError(
            f"config key 'train.select_step' is {config.train.select_step!r}, which chooses from held-out "
            "evaluations: set train.eval_data and train.eval_every"
        )
    live_reference = getattr(config.objective.options, "needs_reference", False) and config.reference.mode == "live"
    if config.train.eval_data and not config.lora.enabled and not live_reference:
        raise ConfigError(
            "config key 'train.eval_data': held-out implicit accuracy compares the policy with the reference, and "
            "this full fine-tune keeps no live reference (its objective needs none, or reference.mode=cached): use "
            "LoRA, a live reference, or leave train.eval_data empty"
        )
    if config.train.eval_data and is_unpaired(config.objective.options):
        raise ConfigError(
            f"config key 'train.eval_data': implicit accuracy is measured on pairs, and objective "
            f"{config.objective.name!r} trains on per-image labels"
        )
    if config.data.unpaired and not config.data.drop_ties:
        raise ConfigError(
            "config key 'data.unpaired' is true with data.drop_ties=false: a tie has no desirable image; "
            "set data.drop_ties=true"
        )
    from prefdiff.data.formats import DATA_FORMATS

    if config.data.format != "auto":
        DATA_FORMATS.get(config.data.format, key="data.format")


def _lookup(config: Config, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain nested dicts (for YAML dumps and trackers); the objective is flat,
    ``{"name": ..., **its own fields}``, as recipes write it."""
    if isinstance(config, ObjectiveConfig):
        return config.as_dict()
    return {
        f.name: to_dict(value) if dataclasses.is_dataclass(value) else copy.deepcopy(value)
        for f in dataclasses.fields(config)
        for value in (getattr(config, f.name),)
    }


def dump_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every leaf field: the reference printed by `prefdiff config`.
    Registered names are listed where a key takes one; each objective's own keys are listed
    under ``objective.`` with the objective they belong to."""
    rows: list[tuple[str, str, str]] = []
    instance = cls()
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        if isinstance(value, ObjectiveConfig):
            rows.extend(_describe_objectives(f"{prefix}{f.name}."))
        elif dataclasses.is_dataclass(value):
            rows.extend(describe(type(value), f"{prefix}{f.name}."))
        else:
            rows.append(
                (f"{prefix}{f.name}", repr(value), _with_names(f"{prefix}{f.name}", f.metadata.get("help", "")))
            )
    return rows


def _describe_objectives(prefix: str) -> list[tuple[str, str, str]]:
    from prefdiff.objectives.base import OBJECTIVES, objective_help

    names = "; ".join(f"{name}: {objective_help(cls)}" for name, cls in OBJECTIVES.items())
    rows = [(f"{prefix}name", repr(ObjectiveConfig().name), f"Training objective. Registered: {names}")]
    owners: dict[tuple[str, str, str], list[str]] = {}  # a key shared with the same default and help: one row
    for name, cls in OBJECTIVES.items():
        for f in dataclasses.fields(cls):
            owners.setdefault(
                (f"{prefix}{f.name}", repr(getattr(cls(), f.name)), f.metadata.get("help", "")), []
            ).append(name)
    rows += [(key, default, f"({', '.join(names)}) {text}") for (key, default, text), names in owners.items()]
    return rows


def _with_names(key: str, help_text: str) -> str:
    """Help text plus the registered names a key takes (data formats, model families)."""
    if key == "data.format":
        from prefdiff.data.formats import DATA_FORMATS

        return f"{help_text} Registered: {', '.join(DATA_FORMATS.names())}."
    if key == "model.path":
        from prefdiff.models.base import BACKBONES

        families = ", ".join(f"{name} ({', '.join(cls.pipeline_classes)})" for name, cls in BACKBONES.items())
        return f"{help_text} Registered families: {families}."
    return help_text


__all__ = [
    "Config",
    "DataColumnsConfig",
    "DataConfig",
    "LoraConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "ReferenceConfig",
    "TrainConfig",
    "describe",
    "dump_yaml",
    "load_config",
    "parse_overrides",
    "to_dict",
]
