"""What every run directory records: the resolved config, package version and git commit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from prefdiff.config import Config, dump_yaml, to_dict
from prefdiff.errors import ConfigError

# Keys that change which denoising problems a run trains on: a resumed run must keep them, or its
# second half trains another model than its first (and the recorded config.yaml would be wrong).
RESUME_FIXED_KEYS = (
    "train.timesteps",
    "model.zero_terminal_snr",
    "model.prediction_type",
    "lora.enabled",
    "lora.rank",
    "lora.alpha",
    "lora.target_modules",
    "objective.name",
    "train.batch_size",
    "train.seed",
    "train.eval_data",
    "train.eval_every",
    "train.eval_draws",
    "train.select_step",
)
"""Also what the checkpoint's shapes or the data position depend on: the adapter's shape, the
objective, and the batch and seed that map steps to data slots; and what the held-out curve is
measured on and chosen from (one curve, one set of snapshots)."""


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the prefdiff source tree (or ``cwd``), with ``+dirty`` when modified."""
    where = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _comparable(dotted: str, value: Any) -> Any:
    """A fixed key's value as training uses it: a timestep set is a set (its order is not drawn)."""
    if dotted == "train.timesteps" and value is not None:
        return sorted(set(value))
    return value


def check_resume_settings(checkpoint: Path, config: Config) -> None:
    """Refuse to resume from ``checkpoint`` (``RUN/checkpoints/step_N``) when ``config`` differs
    from that run's recorded ``config.yaml`` in one of :data:`RESUME_FIXED_KEYS` (a key absent
    from an older record counts as its default)."""
    recorded_file = checkpoint.parent.parent / "config.yaml"
    if not recorded_file.is_file():
        return
    recorded = yaml.safe_load(recorded_file.read_text()) or {}
    now, defaults = to_dict(config), to_dict(Config())
    for dotted in RESUME_FIXED_KEYS:
        section, key = dotted.split(".")
        before = (recorded.get(section) or {}).get(key, defaults[section][key])
        if _comparable(dotted, before) != _comparable(dotted, now[section][key]):
            raise ConfigError(
                f"config key '{dotted}': {recorded_file} records {before!r} but the resumed run has "
                f"{now[section][key]!r}; resume with {dotted}={json.dumps(before)} (or start a new run directory)"
            )


def write_run_info(run_dir: Path, config: Config, extra: dict[str, Any] | None = None) -> None:
    from prefdiff import __version__

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_yaml(config))
    info = {
        "prefdiff_version": __version__,
        "git_commit": git_commit(),
        "command": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
    }
    (run_dir / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")


RUN_MARKERS = ("config.yaml", "run_info.json", "metrics.jsonl", "checkpoints")
"""What makes a directory a run directory: a new run there would mix with the old one."""
RUN_OUTPUTS = (
    *RUN_MARKERS,
    "logs",
    "validation",
    "lora",
    "unet",
    "transformer",
    "auto_beta.json",
    "eval.jsonl",
    "steps",
    "selection.json",
)
"""What ``--overwrite`` removes: everything a run writes, and nothing else in the folder."""


def claim_run_dir(run_dir: Path, resuming: bool, overwrite: bool, is_main_process: bool = True) -> None:
    """Refuse to start a new run in a directory that holds one (a finished or an interrupted run),
    unless ``resuming`` it or asked to ``overwrite`` it, which removes the old run's outputs first
    (main process only)."""
    if resuming or not run_dir.is_dir():
        return
    found = [name for name in RUN_MARKERS if (run_dir / name).exists()]
    if not found:
        return
    if not overwrite:
        from prefdiff.train.checkpoint import list_checkpoints

        checkpoints = list_checkpoints(run_dir)
        finished = any((run_dir / name).exists() for name in ("lora", "unet", "transformer"))
        state = "a finished run" if finished else f"an unfinished run ({len(checkpoints)} checkpoint(s))"
        hint = "--resume latest to continue it, " if checkpoints and not finished else ""
        raise ConfigError(
            f"output_dir {run_dir} holds {state} ({', '.join(found)}): use {hint}another output_dir, or --overwrite to "
            "remove the old run first"
        )
    if is_main_process:
        import shutil

        for name in RUN_OUTPUTS:
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()


LOCK_FILE = ".prefdiff.lock"


class RunLock:
    """One trainer per run directory: ``RUN/.prefdiff.lock`` holds the pid, host and start time of
    the process that trains there (the main process; its peers under DDP train the same run).
    A second trainer is refused, naming the holder. A lock left by a process that died on this
    host is taken over; one from another host cannot be checked from here and is refused with
    the file to delete."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self.held = False

    def acquire(self) -> None:
        import socket

        self.path.parent.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname()
        mine = {"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        for _ in range(2):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._refuse_or_clear(host)
                continue
            with os.fdopen(handle, "w") as f:
                json.dump(mine, f)
            self.held = True
            return
        raise ConfigError(f"{self.path}: could not take the run directory's lock")  # pragma: no cover

    def _refuse_or_clear(self, host: str) -> None:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            holder = {}
        pid, where = holder.get("pid"), holder.get("host")
        if where == host and isinstance(pid, int) and pid != os.getpid() and _alive(pid):
            raise ConfigError(
                f"{self.path.parent} is being trained by pid {pid} (since {holder.get('started')}): wait for it to "
                "finish, or use another output_dir"
            )
        if where not in (None, host):
            raise ConfigError(
                f"{self.path.parent} is locked by pid {pid} on host {where} (since {holder.get('started')}); if that "
                f"run is gone, delete {self.path}"
            )
        self.path.unlink(missing_ok=True)  # its process is gone (or it is ours, left by a crash): stale

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
