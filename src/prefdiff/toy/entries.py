"""The quickstart's leaderboard entries (``toy.objectives``): which objectives it trains, each
with its own settings.

An entry is ``NAME`` or ``NAME@key=value@key=value``: ``NAME`` a registered objective, a key
without a dot an ``objective.<key>`` of it, a dotted key any other config key
(``dpo@label_smoothing=0.1``, ``dpo@beta=auto``, ``dpo@data.soft_labels=true``). Each entry
trains into its own run directory over the same pairs, votes and cache.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from prefdiff.config import Config, merge_into, parse_overrides, validate
from prefdiff.errors import ConfigError

TRAIN_RECORD = "quickstart_train.json"  # in each entry's run directory: its training seconds and peak memory
REQUIRED = ("dpo", "sft")  # the headline and its baseline: every summary field is about them
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Entry:
    """``text`` as written; ``objective`` its registered name; ``overrides`` its settings as
    dotted config keys."""

    text: str
    objective: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def dir_name(self) -> str:
        """A file-system-safe run directory name: ``dpo`` for plain ``dpo``, else the entry with
        ``@`` as ``__`` and ``=`` as ``-`` (``dpo__beta-auto``)."""
        return _UNSAFE.sub("_", self.text.replace("@", "__").replace("=", "-"))


def parse_entry(text: str) -> Entry:
    """One ``toy.objectives`` entry; ConfigError naming the entry when it is malformed."""
    from prefdiff.objectives.base import OBJECTIVES

    name, *settings = str(text).strip().split("@")
    if name not in OBJECTIVES:
        raise ConfigError(
            f"config key 'toy.objectives': entry {text!r} names no objective (known: {', '.join(OBJECTIVES.names())})"
        )
    overrides: list[str] = []
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise ConfigError(f"config key 'toy.objectives': entry {text!r}: {setting!r} is not key=value")
        if key in ("name", "objective.name"):
            raise ConfigError(f"config key 'toy.objectives': entry {text!r}: the objective is the entry's name")
        overrides.append(f"{key if '.' in key else 'objective.' + key}={value}")
    return Entry(str(text).strip(), name, parse_overrides(overrides))


def parse_entries(texts: list[str]) -> list[Entry]:
    """Every entry of ``toy.objectives``, checked: known objectives, distinct run directories,
    and ``dpo`` and ``sft`` present."""
    if isinstance(texts, str) or not isinstance(texts, list):
        raise ConfigError(f"config key 'toy.objectives': expected a list such as [dpo,sft,ipo] (got {texts!r})")
    entries = [parse_entry(text) for text in texts]
    names = [entry.dir_name for entry in entries]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"config key 'toy.objectives': entries repeat ({', '.join(duplicated)})")
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        raise ConfigError(
            f"config key 'toy.objectives': must hold plain {' and '.join(REQUIRED)} (the headline and its baseline; "
            f"missing {', '.join(missing)})"
        )
    return entries


def entry_config(config: Config, entry: Entry) -> Config:
    """``config`` with the entry's objective and settings, validated; an objective that trains
    on unpaired data gets ``data.unpaired=true`` (the pairs become per-image labels) and twice
    the batch (counted in images), unless the entry sets one."""
    from prefdiff.objectives.base import OBJECTIVES, is_unpaired

    objective = OBJECTIVES.get(entry.objective)
    own = {f.name for f in dataclasses.fields(objective)}
    foreign = sorted(set(entry.overrides.get("objective", {})) - own)
    if foreign:
        raise ConfigError(
            f"config key 'toy.objectives': entry {entry.text!r}: objective {entry.objective!r} has no key "
            f"{', '.join(foreign)} (its keys: {', '.join(sorted(own)) or 'none'})"
        )
    run = copy.deepcopy(config)
    updates: dict[str, Any] = {"objective": {"name": entry.objective}}
    if is_unpaired(objective):
        # Per-image labels from the pairs; train.batch_size then counts images, so it is doubled
        # to give the objective every image a paired objective sees in a step.
        updates["data"] = {"unpaired": True}
        updates["train"] = {"batch_size": 2 * run.train.batch_size}
    try:
        merge_into(run, updates)
        merge_into(run, entry.overrides)
        validate(run)
    except ConfigError as err:
        raise ConfigError(f"config key 'toy.objectives': entry {entry.text!r}: {err}") from None
    return run
