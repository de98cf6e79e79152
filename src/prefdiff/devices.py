"""``--device`` and ``--dtype`` of the commands that run a model outside training (generate,
compare, label-ai, implicit accuracy): names resolved to torch objects, with one clear line for
a device this machine does not have or a precision it cannot run."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from prefdiff.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "auto (the GPU when there is one, else the CPU), cpu, cuda or cuda:N."
DTYPES = ("fp32", "fp16", "bf16")
DTYPE_HELP = "Weights and activations in fp32, fp16 or bf16 (fp16 needs a GPU)."


def resolve_device(name: str, flag: str = "--device") -> torch.device:
    """``auto``: ``cuda`` when CUDA is available, else ``cpu``; ``cpu``; ``cuda`` / ``cuda:N``,
    refused in one line when no such GPU is visible."""
    import torch

    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    kind, _, index = name.partition(":")
    if kind != "cuda" or (":" in name and not index.isdigit()):
        raise ConfigError(f"{flag} {name!r}: expected {DEVICE_HELP}")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"{flag} {name}: no CUDA device is available here (torch {torch.__version__}, "
            f"{'built without CUDA' if torch.version.cuda is None else 'no GPU visible'}); use {flag} cpu or auto"
        )
    if index and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"{flag} {name}: this machine has {torch.cuda.device_count()} CUDA device(s), 0-based")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device, flag: str = "--dtype") -> torch.dtype:
    """The torch dtype for ``fp32`` / ``fp16`` / ``bf16`` on ``device`` (fp16 on a CPU is refused:
    many of its kernels are missing or slower than fp32 there)."""
    import torch

    key = name.strip().lower()
    if key not in DTYPES:
        raise ConfigError(f"{flag} {name!r}: expected one of {', '.join(DTYPES)}")
    if key == "fp16" and device.type == "cpu":
        raise ConfigError(f"{flag} fp16 needs a GPU; on the CPU use bf16 or fp32")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[key]


def process_state() -> Any:
    """accelerate's ``PartialState`` when this is one of several processes (``accelerate launch``
    or torchrun), else None: the commands that split their work across processes use it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return PartialState()
