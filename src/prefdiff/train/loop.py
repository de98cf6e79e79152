"""The one training loop, for every objective and model family, on accelerate."""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prefdiff.config import Config, to_dict
from prefdiff.errors import ConfigError
from prefdiff.models import Backbone, load_backbone
from prefdiff.models.lora import add_lora, save_lora_diffusers
from prefdiff.objectives import build_objective
from prefdiff.train.checkpoint import (
    drop_later_checkpoints,
    register_lora_hooks,
    resolve_resume,
    save_checkpoint,
)
from prefdiff.train.optim import build_optimizer, build_scheduler
from prefdiff.train.reference import AdapterDisabledReference, FrozenCopyReference
from prefdiff.train.run_dir import write_run_info
from prefdiff.train.state import TrainState
from prefdiff.train.step import StepContext, micro_batch_loss
from prefdiff.train.validation import generate_images

log = logging.getLogger("prefdiff.train")

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class TrainResult:
    run_dir: Path
    final_weights: Path
    state: TrainState
    last_metrics: dict[str, float]


def _accumulation_steps(config: Config, world_size: int) -> int:
    train = config.train
    if train.global_batch_pairs is None:
        return train.grad_accum_steps
    per_step = train.batch_size * world_size
    if train.global_batch_pairs % per_step:
        raise ConfigError(
            f"config key 'train.global_batch_pairs'={train.global_batch_pairs} is not a multiple of "
            f"train.batch_size x processes = {train.batch_size} x {world_size}"
        )
    return train.global_batch_pairs // per_step


def _tracker_config(config: Config) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value if isinstance(value, int | float | str | bool) else str(value)

    walk(to_dict(config), "")
    return flat


def train(config: Config, resume: str | None = None, backbone: Backbone | None = None) -> TrainResult:
    """Run ``config`` to ``train.max_steps``; ``resume`` is ``None``, ``"latest"`` or a checkpoint path."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import ProjectConfiguration
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from prefdiff.data.cache import CachedPairStream, collate_cached, is_cache_dir
    from prefdiff.data.dataset import SlotBatchSampler, build_pair_stream, collate_pairs

    run_dir = Path(config.output_dir)
    cfg_t = config.train
    # train() may run several times in one process (tests, the quickstart's DPO and SFT runs) with
    # different precisions: forget the previous run's accelerator settings, keep the process group.
    AcceleratorState._reset_state()
    if cfg_t.report_to == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError("train.report_to=wandb needs wandb: pip install 'prefdiff[wandb]'") from None
    accelerator = Accelerator(
        mixed_precision=cfg_t.mixed_precision,
        log_with=None if cfg_t.report_to == "none" else cfg_t.report_to,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")),
    )
    if accelerator.distributed_type.name in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
        raise ConfigError(
            f"accelerate's {accelerator.distributed_type.name} is not supported yet: the reference forward and the LoRA "
            "checkpoint hooks assume whole (DDP or single-process) models. Launch with --multi_gpu (DDP)."
        )
    accum = _accumulation_steps(config, accelerator.num_processes)
    accelerator.gradient_accumulation_steps = accum
    weight_dtype = DTYPES[cfg_t.mixed_precision]
    device = accelerator.device
    resume_path = resolve_resume(run_dir, resume)

    # ---- inputs first, so that a bad model or dataset fails before anything is written
    backbone = backbone or load_backbone(config.model.path, config.model.prediction_type)
    if is_cache_dir(config.data.path):  # latents and text conditioning encoded once
        stream, collate = CachedPairStream(config.data.path, cfg_t.seed, config.data, backbone), collate_cached
    else:
        stream, collate = build_pair_stream(config.data, cfg_t.seed), collate_pairs
    if accelerator.is_main_process:
        write_run_info(run_dir, config, {"processes": accelerator.num_processes, "grad_accum_steps": accum})

    # ---- model, reference, objective
    torch.manual_seed(cfg_t.seed)  # LoRA init
    backbone.to(device, weight_dtype)
    unet = backbone.unet
    if config.lora.enabled:
        unet.to(device, dtype=weight_dtype) if weight_dtype != torch.float32 else unet.to(device)
        add_lora(unet, config.lora)
    else:
        unet.to(device).float().requires_grad_(True)
    if cfg_t.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    objective = build_objective(config.objective)
    reference = None
    if objective.needs_reference:
        if config.lora.enabled:
            reference = AdapterDisabledReference(unet, accelerator.autocast)
        else:
            reference = FrozenCopyReference(unet, weight_dtype, accelerator.autocast)

    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, config.optim)
    lr_scheduler = build_scheduler(optimizer, config.optim, cfg_t.max_steps)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    state = TrainState()
    accelerator.register_for_checkpointing(lr_scheduler, state)
    if config.lora.enabled:
        register_lora_hooks(accelerator)
    if resume_path is not None:
        accelerator.load_state(str(resume_path))
        log.info("resumed from %s at step %d (data slot %d)", resume_path, state.global_step, state.next_slot)
        if accelerator.is_main_process:
            _drop_metrics_after(run_dir / "metrics.jsonl", state.global_step)
            for abandoned in drop_later_checkpoints(run_dir, resume_path):
                log.warning("removed %s: it belongs to the run abandoned by resuming from %s", abandoned, resume_path)

    # ---- data
    sampler = SlotBatchSampler(state.next_slot, cfg_t.batch_size, accelerator.process_index, accelerator.num_processes)
    # Its own generator: creating the iterator must not draw from the global RNG, or a resumed
    # run's dropout masks would drift from the uninterrupted run's.
    loader = DataLoader(
        stream,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=config.data.num_workers,
        generator=torch.Generator().manual_seed(cfg_t.seed),
    )
    batches = iter(loader)

    if cfg_t.report_to != "none":
        accelerator.init_trackers("prefdiff", config=_tracker_config(config))
    ctx = StepContext(backbone, objective, reference, cfg_t.seed, config.data.resolution, device)
    pairs_per_step = cfg_t.batch_size * accelerator.num_processes * accum
    metrics_file = run_dir / "metrics.jsonl"
    progress = tqdm(
        total=cfg_t.max_steps, initial=state.global_step, desc="train", disable=not accelerator.is_main_process, dynamic_ncols=True
    )
    last: dict[str, float] = {}
    while state.global_step < cfg_t.max_steps:
        sums: dict[str, float] = defaultdict(float)
        for _ in range(accum):
            batch = next(batches)
            with accelerator.accumulate(unet):
                out = micro_batch_loss(ctx, unet, batch)
                accelerator.backward(out.loss)
                grad_norm = None
                if accelerator.sync_gradients:
                    max_norm = config.optim.max_grad_norm if config.optim.max_grad_norm is not None else math.inf
                    grad_norm = accelerator.clip_grad_norm_(params, max_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            for key, value in out.metrics.items():
                sums[key] += float(value) / accum
        step_lr = float(lr_scheduler.get_last_lr()[0])  # the lr this step used
        lr_scheduler.step()
        state.global_step += 1
        state.next_slot += pairs_per_step
        state.pairs_seen += pairs_per_step

        names = sorted(sums)
        reduced = accelerator.reduce(torch.tensor([sums[k] for k in names], device=device), reduction="mean")
        last = {k: float(v) for k, v in zip(names, reduced.tolist(), strict=True)}
        last["grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
        last["lr"] = step_lr
        last["pairs_seen"] = float(state.pairs_seen)
        if accelerator.is_main_process:
            postfix = {"loss": f"{last['loss']:.4f}"}
            if "implicit_acc" in last:
                postfix["acc"] = f"{last['implicit_acc']:.2f}"
            progress.set_postfix(postfix)
            progress.update(1)
            if state.global_step % cfg_t.log_every == 0 or state.global_step == cfg_t.max_steps:
                with metrics_file.open("a") as f:
                    f.write(json.dumps({"step": state.global_step, **last}) + "\n")
        if cfg_t.report_to != "none" and state.global_step % cfg_t.log_every == 0:
            accelerator.log(last, step=state.global_step)
        if cfg_t.checkpoint_every and state.global_step % cfg_t.checkpoint_every == 0:
            save_checkpoint(accelerator, run_dir, state.global_step, cfg_t.keep_last)
        if (
            cfg_t.validation_prompts
            and cfg_t.validate_every
            and state.global_step % cfg_t.validate_every == 0
            and accelerator.is_main_process
        ):
            _validate(config, backbone, accelerator.unwrap_model(unet), run_dir, state.global_step, accelerator.autocast)
    progress.close()

    accelerator.wait_for_everyone()
    final = _save_final(config, backbone, accelerator, unet, run_dir)
    if cfg_t.validation_prompts and accelerator.is_main_process and not (
        cfg_t.validate_every and state.global_step % cfg_t.validate_every == 0
    ):
        _validate(config, backbone, accelerator.unwrap_model(unet), run_dir, state.global_step, accelerator.autocast)
    accelerator.end_training()
    return TrainResult(run_dir, final, state, last)


def _drop_metrics_after(metrics_file: Path, step: int) -> None:
    """Forget rows logged after the checkpoint we resume from: they will be logged again."""
    if not metrics_file.exists():
        return
    rows = [line for line in metrics_file.read_text().splitlines() if line.strip()]

    def logged_step(line: str) -> int:
        try:
            return int(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            return step + 1  # a line cut short by a crash: drop it

    kept = [line for line in rows if logged_step(line) <= step]
    if len(kept) != len(rows):
        metrics_file.write_text("".join(line + "\n" for line in kept))


def _validate(config: Config, backbone: Backbone, unet: torch.nn.Module, run_dir: Path, step: int, autocast: Any) -> None:
    cfg_t = config.train
    generate_images(
        backbone,
        unet,
        cfg_t.validation_prompts,
        cfg_t.validation_seeds,
        run_dir / "validation" / f"step_{step:07d}",
        config.data.resolution,
        cfg_t.validation_steps,
        cfg_t.validation_guidance_scale,
        autocast,
    )


def _save_final(config: Config, backbone: Backbone, accelerator: Any, unet: torch.nn.Module, run_dir: Path) -> Path:
    """LoRA in the diffusers format (``RUN/lora``) or the full UNet (``RUN/unet``)."""
    model = accelerator.unwrap_model(unet)
    if config.lora.enabled:
        out = run_dir / "lora"
        if accelerator.is_main_process:
            save_lora_diffusers(backbone.pipeline_class(), model, out)
    else:
        out = run_dir / "unet"
        if accelerator.is_main_process:
            model.save_pretrained(str(out))
    accelerator.wait_for_everyone()
    return out
