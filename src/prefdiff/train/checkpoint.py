"""Checkpoints: ``RUN/checkpoints/step_NNNNNNN/`` via accelerate's save_state, keep the last K.

With LoRA only the adapter weights are written (not the multi-GB frozen base): accelerate's
save/load hooks swap the model's state for ``lora_adapter.safetensors``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from prefdiff.errors import PrefdiffError
from prefdiff.models.lora import ADAPTER_FILE, load_lora_state_dict, lora_state_dict

PREFIX = "step_"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"{PREFIX}{step:07d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / "COMPLETE").exists()]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX) :]))


def resolve_resume(run_dir: Path, resume: str | None) -> Path | None:
    """``None`` -> no resume; ``latest`` -> the newest complete checkpoint; else a path."""
    if resume is None:
        return None
    if resume == "latest":
        found = list_checkpoints(run_dir)
        if not found:
            raise PrefdiffError(f"--resume latest: no complete checkpoint under {run_dir / 'checkpoints'}")
        return found[-1]
    path = Path(resume)
    if not (path / "COMPLETE").exists():
        raise PrefdiffError(f"--resume {resume}: not a complete prefdiff checkpoint directory")
    return path


def drop_later_checkpoints(run_dir: Path, resumed: Path) -> list[Path]:
    """Resuming from an older checkpoint abandons the later ones: remove them, so that
    pruning and ``--resume latest`` follow the new run."""
    step = int(resumed.name[len(PREFIX) :]) if resumed.name.startswith(PREFIX) else None
    if step is None:
        return []
    later = [p for p in list_checkpoints(run_dir) if int(p.name[len(PREFIX) :]) > step]
    for old in later:
        shutil.rmtree(old, ignore_errors=True)
    return later


def register_lora_hooks(accelerator: Any) -> None:
    """Make accelerate save and load only the LoRA adapter of the prepared denoiser.

    Not under FSDP2: there accelerate writes and reads the denoiser's shards itself (torch's
    distributed checkpoint, each process its own shard, the frozen base included) before any hook
    runs, and leaves the hooks no weights to replace.
    """
    from safetensors.torch import load_file, save_file

    if accelerator.is_fsdp2:
        return

    def save_hook(models: list[torch.nn.Module], weights: list[dict], output_dir: str) -> None:
        if accelerator.is_main_process:
            denoiser = accelerator.unwrap_model(models[0])
            save_file(lora_state_dict(denoiser), str(Path(output_dir) / ADAPTER_FILE))
        while weights:
            weights.pop()

    def load_hook(models: list[torch.nn.Module], input_dir: str) -> None:
        denoiser = accelerator.unwrap_model(models.pop())
        load_lora_state_dict(denoiser, load_file(str(Path(input_dir) / ADAPTER_FILE)))

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def save_checkpoint(accelerator: Any, run_dir: Path, step: int, keep_last: int) -> Path:
    """Save, mark complete (a crash mid-save leaves no 'COMPLETE'), then drop old ones."""
    path = checkpoint_dir(run_dir, step)
    if accelerator.is_main_process and path.exists():
        shutil.rmtree(path)  # a checkpoint of an abandoned later run: never half-overwrite it
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(path))
    except BaseException:
        if accelerator.is_main_process:  # a full disk or a kill mid-save: leave no partial folder
            shutil.rmtree(path, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (path / "COMPLETE").write_text(str(step))
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path
