"""The one training loop, for every objective and model family, on accelerate.

``train(config)`` builds the components (backbone, objective, strategy, data), prepares the
denoiser, resumes if asked, then runs optimizer steps until ``train.max_steps``: each step
accumulates micro-batches, logs the averaged metrics, checkpoints and validates on schedule.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prefdiff.config import Config, to_dict
from prefdiff.data.batch import PairBatch
from prefdiff.errors import ConfigError, PrefdiffError
from prefdiff.models import Backbone
from prefdiff.models.base import Denoiser
from prefdiff.objectives.base import is_unpaired, needs_reference_point
from prefdiff.runlog import METRICS_FILE, drop_metrics_after
from prefdiff.train.auto_beta import resolve_auto_beta
from prefdiff.train.checkpoint import drop_later_checkpoints, resolve_resume, save_checkpoint
from prefdiff.train.components import Components, build_components, build_pair_data
from prefdiff.train.optim import build_optimizer, build_scheduler
from prefdiff.train.reference import Reference
from prefdiff.train.run_dir import RunLock, check_resume_settings, claim_run_dir, write_run_info
from prefdiff.train.selection import (
    HeldOutEval,
    append_evaluation,
    drop_evaluations_after,
    load_eval_pairs,
    read_curve,
    select_result,
    snapshot_dir,
)
from prefdiff.train.sharding import check_distributed, enable_fsdp_on_cpu, is_sharded, sharder
from prefdiff.train.state import TrainState
from prefdiff.train.step import StepContext, micro_batch_loss, step_reference_point
from prefdiff.train.validation import generate_images

log = logging.getLogger("prefdiff.train")

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class TrainResult:
    run_dir: Path
    final_weights: Path
    state: TrainState
    last_metrics: dict[str, float]


@dataclass
class Session:
    """Everything one run holds while it trains."""

    config: Config
    accelerator: Any
    components: Components
    denoiser: Denoiser  # prepared (wrapped by DDP, or sharded in place by FSDP2)
    params: list[torch.nn.Parameter]  # the prepared denoiser's trainable ones (DTensors under FSDP2)
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LambdaLR
    state: TrainState
    ctx: StepContext
    accum: int
    evaluator: HeldOutEval | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def pairs_per_step(self) -> int:
        return self.config.train.batch_size * self.accelerator.num_processes * self.accum


class TrainingDiverged(PrefdiffError):
    """A non-finite loss or gradient norm with ``train.on_nonfinite=stop``."""


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


def _make_accelerator(config: Config) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import ProjectConfiguration

    cfg_t = config.train
    run_dir = Path(config.output_dir)
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
    enable_fsdp_on_cpu(accelerator)
    check_distributed(accelerator)
    return accelerator


def _prepare(config: Config, accelerator: Any, components: Components, accum: int) -> Session:
    """Make the denoiser trainable, build reference, optimizer and schedule, wrap for accelerate."""
    cfg_t = config.train
    weight_dtype = DTYPES[cfg_t.mixed_precision]
    backbone, strategy = components.backbone, components.strategy
    torch.manual_seed(cfg_t.seed)  # LoRA init
    backbone.to(accelerator.device, weight_dtype)
    params = strategy.prepare(backbone, accelerator.device, weight_dtype)
    denoiser = backbone.denoiser
    if cfg_t.gradient_checkpointing:
        denoiser.enable_gradient_checkpointing()
    denoiser.train()
    if cfg_t.compile:
        denoiser.compile()  # in place: the same module, its forward compiled at the first step
    reference = (
        _reference(config, components, accelerator, weight_dtype) if components.objective.needs_reference else None
    )
    optimizer = build_optimizer(params, config.optim)
    lr_scheduler = build_scheduler(optimizer, config.optim, cfg_t.max_steps)
    denoiser, optimizer = accelerator.prepare(denoiser, optimizer)
    params = [p for p in denoiser.parameters() if p.requires_grad]  # FSDP2 replaced them by their shards
    if cfg_t.validation_prompts and is_sharded(denoiser):
        log.warning("validation images are skipped under FSDP: the denoiser is sharded across processes")
    state = TrainState()
    accelerator.register_for_checkpointing(lr_scheduler, state)
    strategy.register_checkpoint_hooks(accelerator)
    ctx = StepContext(backbone, components.objective, reference, cfg_t.seed, config.data.resolution, accelerator.device)
    return Session(config, accelerator, components, denoiser, params, optimizer, lr_scheduler, state, ctx, accum)


def _reference(config: Config, components: Components, accelerator: Any, weight_dtype: torch.dtype) -> Reference:
    """The live reference of the strategy, or with ``reference.mode=cached`` the errors that
    `prefdiff reference` computed (checked against this run; no frozen copy is built)."""
    if config.reference.mode == "live":
        return components.strategy.reference(
            components.backbone, weight_dtype, accelerator.autocast, sharder(accelerator)
        )
    if is_unpaired(components.objective):
        raise ConfigError(
            f"config key 'reference.mode': cached reference errors are per pair; objective "
            f"{config.objective.name!r} also needs the reference on mismatched prompts: use reference.mode=live"
        )
    from prefdiff.train.reference_cache import CachedReference

    return CachedReference.open(Path(config.reference.path), config, accelerator.num_processes)


def _resume(session: Session, resume_path: Path) -> None:
    try:
        session.accelerator.load_state(str(resume_path))
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as err:  # torch.load and safetensors' many errors
        cause = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"--resume {resume_path}: the checkpoint cannot be loaded ({cause[:300]}); it is damaged or from another "
            "setup: resume from an earlier one (RUN/checkpoints/step_N) or start afresh"
        ) from None
    state = session.state
    log.info("resumed from %s at step %d (data slot %d)", resume_path, state.global_step, state.next_slot)
    if session.accelerator.is_main_process:
        drop_metrics_after(session.run_dir / METRICS_FILE, state.global_step)
        drop_evaluations_after(session.run_dir, state.global_step)
        for abandoned in drop_later_checkpoints(session.run_dir, resume_path):
            log.warning("removed %s: it belongs to the run abandoned by resuming from %s", abandoned, resume_path)


def _batches(session: Session, stream: Any, collate: Any) -> Iterator[PairBatch]:
    from torch.utils.data import DataLoader

    from prefdiff.data.dataset import SlotBatchSampler

    cfg_t, acc = session.config.train, session.accelerator
    sampler = SlotBatchSampler(session.state.next_slot, cfg_t.batch_size, acc.process_index, acc.num_processes)
    # Its own generator: creating the iterator must not draw from the global RNG, or a resumed
    # run's dropout masks would drift from the uninterrupted run's.
    loader = DataLoader(
        stream,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=session.config.data.num_workers,
        generator=torch.Generator().manual_seed(cfg_t.seed),
    )
    return iter(loader)


def _optimizer_step(session: Session, batches: Iterator[PairBatch]) -> dict[str, float]:
    """Accumulate ``accum`` micro-batches, step, and return the metrics averaged over
    micro-batches and processes, with grad norm, lr and pairs seen.

    An objective with a reference point (KTO) gets it first, from all of the step's
    micro-batches on every process (they are drawn up front, so held in memory together)."""
    acc, config = session.accelerator, session.config
    sums: dict[str, float] = defaultdict(float)
    grad_norm = None
    reference_point = None
    step_batches: list[PairBatch] = []
    if needs_reference_point(session.ctx.objective):
        step_batches = [next(batches) for _ in range(session.accum)]
        reduce_sum = lambda t: acc.reduce(t, reduction="sum")  # noqa: E731
        reference_point = step_reference_point(session.ctx, session.denoiser, step_batches, reduce_sum)
    nonfinite_loss = False
    skipped = 0.0
    for index in range(session.accum):
        batch = step_batches[index] if step_batches else next(batches)
        with acc.accumulate(session.denoiser):
            out = micro_batch_loss(session.ctx, session.denoiser, batch, reference_point)
            nonfinite_loss = nonfinite_loss or not bool(torch.isfinite(out.loss.detach()))
            acc.backward(out.loss)
            grad_norm = None
            update = True
            if acc.sync_gradients:
                max_norm = config.optim.max_grad_norm if config.optim.max_grad_norm is not None else math.inf
                grad_norm = acc.clip_grad_norm_(session.params, max_norm)
                update = _finite_or_stop(session, nonfinite_loss, grad_norm, out.loss)
                skipped = 0.0 if update else 1.0
            if update:
                session.optimizer.step()
            session.optimizer.zero_grad(set_to_none=True)
        for key, value in out.metrics.items():
            sums[key] += float(value) / session.accum
    step_lr = float(session.lr_scheduler.get_last_lr()[0])  # the lr this step used
    session.lr_scheduler.step()
    state = session.state
    state.global_step += 1
    state.next_slot += session.pairs_per_step
    state.pairs_seen += session.pairs_per_step
    names = sorted(sums)
    reduced = acc.reduce(torch.tensor([sums[k] for k in names], device=acc.device), reduction="mean")
    metrics = {k: float(v) for k, v in zip(names, reduced.tolist(), strict=True)}
    metrics["grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
    metrics["lr"] = step_lr
    metrics["pairs_seen"] = float(state.pairs_seen)
    if config.train.on_nonfinite == "skip_step":
        state.skipped_steps += int(skipped)
        metrics["skipped_steps"] = float(state.skipped_steps)
    return metrics


def _check_weights_finite(session: Session, what: str) -> None:
    """Never write non-finite weights: a finite loss and gradient can still step into inf."""
    acc = session.accelerator

    def local(param: torch.Tensor) -> torch.Tensor:  # FSDP2 holds DTensor shards: check this process's part
        detached: Any = param.detach()
        return detached.to_local() if hasattr(detached, "to_local") else detached

    # one host sync for all parameters, not one per parameter (thousands in a full fine-tune)
    finite = torch.stack([torch.isfinite(local(p)).all() for p in session.params]).all()
    bad = (~finite).float().to(acc.device)
    if float(acc.reduce(bad, reduction="sum")) > 0:
        raise TrainingDiverged(
            f"step {session.state.global_step}: the trainable weights hold inf or nan; {what} was not saved "
            "(the previous checkpoint is kept). Lower optim.lr"
        )


def _finite_or_stop(session: Session, nonfinite_loss: bool, grad_norm: Any, loss: torch.Tensor) -> bool:
    """Whether this optimizer step may update the weights. A non-finite loss (on any micro-batch,
    on any process) or gradient norm stops the run before the update with ``train.on_nonfinite
    =stop``, so the weights and the last checkpoint stay finite; with ``skip_step`` the update
    is dropped."""
    acc = session.accelerator
    flags = torch.tensor([float(nonfinite_loss), float(not math.isfinite(float(grad_norm)))], device=acc.device)
    loss_bad, norm_bad = (bool(v) for v in acc.reduce(flags, reduction="sum").tolist())
    if not (loss_bad or norm_bad):
        return True
    step = session.state.global_step + 1
    metric = "loss" if loss_bad else "grad_norm"
    value = float(loss.detach()) if loss_bad else float(grad_norm)
    if session.config.train.on_nonfinite == "skip_step":
        log.warning("step %d: %s is %s: the update is skipped (train.on_nonfinite=skip_step)", step, metric, value)
        return False
    from prefdiff.train.checkpoint import list_checkpoints

    found = list_checkpoints(session.run_dir)
    kept = f"the last checkpoint, {found[-1]}, is finite (--resume latest)" if found else "no checkpoint was saved yet"
    raise TrainingDiverged(
        f"step {step}: {metric} is {value} (on this process or another): the run diverged and stopped before "
        f"the update (train.on_nonfinite=stop); {kept}, and no weights were saved as the result. "
        "Lower optim.lr or raise objective.beta, or set train.on_nonfinite=skip_step"
    )


def _record(session: Session, metrics: dict[str, float], progress: Any) -> None:
    """Progress bar, metrics.jsonl (main process) and the tracker, every ``train.log_every`` steps."""
    cfg_t, step = session.config.train, session.state.global_step
    due = step % cfg_t.log_every == 0
    if session.accelerator.is_main_process:
        postfix = {"loss": f"{metrics['loss']:.4f}"}
        if "implicit_acc" in metrics:
            postfix["acc"] = f"{metrics['implicit_acc']:.2f}"
        progress.set_postfix(postfix)
        progress.update(1)
        if due or step == cfg_t.max_steps:
            with (session.run_dir / METRICS_FILE).open("a") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\n")
    if cfg_t.report_to != "none" and due:
        session.accelerator.log(metrics, step=step)


def _after_step(session: Session) -> None:
    """Held-out evaluation, checkpoint and validation images on their schedules."""
    cfg_t, step = session.config.train, session.state.global_step
    if cfg_t.eval_every and step % cfg_t.eval_every == 0:
        _evaluate(session)
    if cfg_t.checkpoint_every and step % cfg_t.checkpoint_every == 0:
        _check_weights_finite(session, f"checkpoint step {step}")
        save_checkpoint(session.accelerator, session.run_dir, step, cfg_t.keep_last)
    if _validates(session) and _validation_due(session):
        _validate(session)


def _validates(session: Session) -> bool:
    """Validation images on this process: the main one, with a whole denoiser (not under FSDP)."""
    return bool(
        session.config.train.validation_prompts
        and session.accelerator.is_main_process
        and not is_sharded(session.denoiser)
    )


def _validation_due(session: Session) -> bool:
    cfg_t = session.config.train
    return bool(cfg_t.validate_every and session.state.global_step % cfg_t.validate_every == 0)


def train(
    config: Config, resume: str | None = None, backbone: Backbone | None = None, overwrite: bool = False
) -> TrainResult:
    """Run ``config`` to ``train.max_steps``; ``resume`` is ``None``, ``"latest"`` or a checkpoint
    path. A run directory that holds a run is refused unless resuming it or ``overwrite`` (which
    removes the old run first); a run directory another trainer holds is refused."""
    run_dir = Path(config.output_dir)
    accelerator = _make_accelerator(config)
    resume_path = resolve_resume(run_dir, resume)
    lock = RunLock(run_dir)

    def claim() -> None:  # once the inputs are known good, before anything is written
        if accelerator.is_main_process:
            lock.acquire()  # first: a refused second trainer must not --overwrite the running one's outputs
        claim_run_dir(run_dir, resume_path is not None, overwrite, accelerator.is_main_process)
        accelerator.wait_for_everyone()

    try:
        return _train(config, accelerator, resume_path, backbone, claim)
    finally:
        lock.release()


def _train(
    config: Config,
    accelerator: Any,
    resume_path: Path | None,
    backbone: Backbone | None,
    claim: Callable[[], None],
) -> TrainResult:
    from tqdm.auto import tqdm

    cfg_t = config.train
    run_dir = Path(config.output_dir)
    accum = _accumulation_steps(config, accelerator.num_processes)
    accelerator.gradient_accumulation_steps = accum
    if resume_path is not None:
        check_resume_settings(resume_path, config)

    # inputs first, so that a bad model or dataset fails before anything is written
    components = build_components(config, backbone)
    unpaired = is_unpaired(components.objective)
    stream, collate = build_pair_data(config.data, cfg_t.seed, components.backbone, unpaired)
    eval_pairs = load_eval_pairs(config, components.backbone) if cfg_t.eval_every else None
    claim()
    if accelerator.is_main_process:
        result = components.strategy.result_path(components.backbone, run_dir).relative_to(run_dir)
        extra = {"processes": accelerator.num_processes, "grad_accum_steps": accum, "result": str(result)}
        write_run_info(run_dir, config, extra)

    session = _prepare(config, accelerator, components, accum)
    resolve_auto_beta(session.ctx, config, stream, collate, run_dir, accelerator.is_main_process)
    if eval_pairs is not None:
        session.evaluator = HeldOutEval.build(
            config,
            components.backbone,
            session.ctx.reference,
            accelerator.unwrap_model(session.denoiser),
            accelerator.autocast,
            accelerator.device,
            eval_pairs,
        )
    if resume_path is not None:
        _resume(session, resume_path)
    batches = _batches(session, stream, collate)
    if cfg_t.report_to != "none":
        accelerator.init_trackers("prefdiff", config=_tracker_config(config))
    progress = tqdm(
        total=cfg_t.max_steps,
        initial=session.state.global_step,
        desc="train",
        disable=not accelerator.is_main_process,
        dynamic_ncols=True,
    )
    last: dict[str, float] = {}
    first = True
    try:
        while session.state.global_step < cfg_t.max_steps:
            start = time.perf_counter()
            last = _optimizer_step(session, batches)
            if first and cfg_t.compile:  # compilation happens in the first step: reported apart
                last["first_step_seconds"] = time.perf_counter() - start
                log.info("first step (compiling the denoiser): %.1f s", last["first_step_seconds"])
            first = False
            _record(session, last, progress)
            _after_step(session)
    finally:
        progress.close()  # ends the bar's line, so that an error's one line starts on its own
    return _finish(session, last)


def _finish(session: Session, last: dict[str, float]) -> TrainResult:
    """Save the result, validate once more unless the last step just did, end the trackers."""
    acc = session.accelerator
    acc.wait_for_everyone()
    _check_weights_finite(session, "the result")
    final = session.components.strategy.result_path(session.components.backbone, session.run_dir)
    session.components.strategy.save_result(
        session.components.backbone, acc.unwrap_model(session.denoiser), session.run_dir, acc.is_main_process
    )
    acc.wait_for_everyone()
    cfg_t = session.config.train
    if session.evaluator is not None:
        curve = read_curve(session.run_dir)
        if not curve or curve[-1]["step"] != session.state.global_step:  # the last step is always evaluated
            _evaluate(session)  # with a snapshot: a later resume that goes on may still choose it
        if acc.is_main_process:
            record = select_result(session.run_dir, final, cfg_t.select_step, session.state.global_step)
            log.info(
                "train.select_step=%s: step %d (held-out implicit accuracy %.3f)",
                record["rule"],
                record["step"],
                record["eval_implicit_acc"],
            )
        acc.wait_for_everyone()
    if _validates(session) and not _validation_due(session):
        _validate(session)
    # DDP's reducer holds the process group that end_training destroys: free the wrapper first,
    # or its destructor can block in gloo's teardown once the other processes have exited
    session.denoiser = None
    acc.free_memory()
    gc.collect()
    acc.end_training()
    return TrainResult(session.run_dir, final, session.state, last)


def _evaluate(session: Session) -> None:
    """Implicit accuracy on ``train.eval_data`` into RUN/eval.jsonl and the tracker; a snapshot of
    the result weights when ``train.select_step`` may choose this step."""
    assert session.evaluator is not None
    acc, step = session.accelerator, session.state.global_step
    row = session.evaluator.measure(acc.unwrap_model(session.denoiser), step)
    if acc.is_main_process:
        append_evaluation(session.run_dir, row)
        log.info(
            "step %d: held-out implicit accuracy %.3f (+/- %.3f)", step, row["eval_implicit_acc"], row["eval_stderr"]
        )
    if session.config.train.report_to != "none":
        acc.log({k: v for k, v in row.items() if k != "step"}, step=step)
    if session.config.train.select_step != "last":
        strategy, backbone = session.components.strategy, session.components.backbone
        strategy.save_result(
            backbone, acc.unwrap_model(session.denoiser), snapshot_dir(session.run_dir, step), acc.is_main_process
        )
    acc.wait_for_everyone()


def _validate(session: Session) -> None:
    config = session.config
    cfg_t = config.train
    generate_images(
        session.components.backbone,
        session.accelerator.unwrap_model(session.denoiser),
        cfg_t.validation_prompts,
        cfg_t.validation_seeds,
        session.run_dir / "validation" / f"step_{session.state.global_step:07d}",
        config.data.resolution,
        cfg_t.validation_steps,
        cfg_t.validation_guidance_scale,
        session.accelerator.autocast,
    )
