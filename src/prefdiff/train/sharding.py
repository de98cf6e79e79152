"""FSDP2 through accelerate: which distributed modes a run accepts, turning FSDP2 on (CPU
included), sharding the full fine-tune's reference like the policy, and gathering a sharded
denoiser back into a whole one that the single-process save code can write.

Under FSDP2 (``torch.distributed.fsdp.fully_shard``) the denoiser is sharded in place: every
parameter becomes a DTensor holding ``1/world`` of its rows on each process, and each wrapped
block is all-gathered just before its forward and freed after. Gathering is collective, so
every function here that gathers must be called by every process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch

from prefdiff.errors import ConfigError
from prefdiff.models.base import Denoiser

log = logging.getLogger("prefdiff.train")

Shard = Callable[[Denoiser], Denoiser]
LAUNCH_HINT = (
    "prefdiff trains with DDP (`accelerate launch --multi_gpu`) or FSDP2 (`accelerate launch --use_fsdp "
    "--fsdp_version 2 --fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP`)"
)


def check_distributed(accelerator: Any) -> None:
    """Refuse what the loop cannot run: DeepSpeed, Megatron-LM and FSDP version 1."""
    kind = accelerator.distributed_type.name
    if kind in ("DEEPSPEED", "MEGATRON_LM"):
        raise ConfigError(f"accelerate's {kind} is not supported: {LAUNCH_HINT}.")
    if kind == "FSDP" and accelerator.state.fsdp_plugin.fsdp_version != 2:
        raise ConfigError(f"FSDP version 1 is not supported, FSDP2 is required: add `--fsdp_version 2`. {LAUNCH_HINT}.")


def enable_fsdp_on_cpu(accelerator: Any) -> None:
    """Honour ``accelerate launch --use_fsdp`` on CPU, and default the wrap policy to the denoiser's blocks.

    accelerate 1.16 builds the FSDP plugin from the launcher's environment but, on CPU, keeps the
    state ``MULTI_CPU`` and drops the plugin without a word: the run would be DDP. torch's
    ``fully_shard`` and accelerate's FSDP2 code both run on CPU over gloo, so the state is turned
    to FSDP here. When no ``--fsdp_auto_wrap_policy`` was given, each block named in the
    denoiser's ``_no_split_modules`` becomes one FSDP unit (TRANSFORMER_BASED_WRAP), rather than
    accelerate's NO_WRAP (the whole denoiser one unit, gathered whole at every forward).
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    wants_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    state = accelerator.state
    if wants_fsdp and accelerator.distributed_type == DistributedType.MULTI_CPU:
        log.warning("accelerate ignores --use_fsdp on CPU; prefdiff turns FSDP on itself (gloo)")
        plugin = FullyShardedDataParallelPlugin()
        if accelerator.mixed_precision != "no":
            plugin.set_mixed_precision(accelerator.mixed_precision)
        state.fsdp_plugin = plugin
        # as accelerate does for FSDP on GPU: every later AcceleratorState() copies PartialState's type
        state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
    plugin = getattr(state, "fsdp_plugin", None)
    if plugin is not None and plugin.auto_wrap_policy is None and "FSDP_AUTO_WRAP_POLICY" not in os.environ:
        from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

        plugin.auto_wrap_policy = transformer_auto_wrap_policy  # reads the model's _no_split_modules


def unsharded(module: Denoiser) -> Denoiser:
    """The identity :data:`Shard`: the module stays whole (no FSDP)."""
    return module


def sharder(accelerator: Any) -> Shard:
    """Shard a module the way ``accelerator.prepare`` shards the policy (same plugin, wrap policy
    and mixed precision); the identity when the run is not FSDP2."""
    if not accelerator.is_fsdp2:
        return unsharded
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model

    return lambda module: fsdp2_prepare_model(accelerator, module)


def is_sharded(module: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def gather_whole(
    denoiser: Denoiser,
    build: Callable[[], Denoiser],
    trainable_only: bool,
    is_main_process: bool,
) -> Denoiser | None:
    """The denoiser with whole (not sharded) weights on the main process, ``None`` on the others.

    A denoiser that is not sharded is returned as is. A sharded one is gathered (every process
    must call this) into a full state dict on the main process's CPU (torch's
    ``get_model_state_dict`` with ``full_state_dict`` and ``cpu_offload``), which is then assigned
    to ``build()``: a plain module of the same structure made on the ``meta`` device, so the
    weights are held once. ``trainable_only`` gathers the parameters that require grad (LoRA's
    adapters) and leaves the rest of the copy on ``meta``: enough to save the adapters, not to run.
    """
    if not is_sharded(denoiser):
        return denoiser
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=trainable_only)
    state = get_model_state_dict(denoiser, options=options)
    if not is_main_process:
        return None
    with torch.device("meta"):
        whole = build()
    missing, unexpected = whole.load_state_dict(state, strict=False, assign=True)
    if unexpected or (missing and not trainable_only):
        raise RuntimeError(f"gathered state does not fit the rebuilt denoiser: {(missing + unexpected)[:3]}")
    return whole
