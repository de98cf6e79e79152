"""What every run directory records: the resolved config, package version and git commit."""

from __future__ import annotations

import json
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
RESUME_FIXED_KEYS = ("train.timesteps", "model.zero_terminal_snr", "model.prediction_type")


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
