"""TrainState: what, beside weights and optimizer, makes a resumed run continue exactly."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class TrainState:
    """``global_step``: optimizer steps done. ``next_slot``: the first data-stream slot not yet
    consumed (the data position). ``pairs_seen``: pairs consumed by the whole job.
    ``skipped_steps``: steps whose update was dropped for a non-finite loss or gradient."""

    global_step: int = 0
    next_slot: int = 0
    pairs_seen: int = 0
    skipped_steps: int = 0  # steps whose update train.on_nonfinite=skip_step dropped

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_step = int(state["global_step"])
        self.next_slot = int(state["next_slot"])
        self.pairs_seen = int(state["pairs_seen"])
        self.skipped_steps = int(state.get("skipped_steps", 0))  # absent from checkpoints made before it
