"""What a pass over a dataset kept and dropped, and why."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from prefdiff.errors import DataError

EXAMPLES_PER_REASON = 5


class Reject(NamedTuple):
    """Why a row is not a usable pair. ``bad`` marks bad input (an error under ``data.strict``)
    as opposed to a policy drop (ties, ``has_label = false``) that is never an error."""

    reason: str
    bad: bool = True
    detail: str = ""


@dataclass
class ReadReport:
    """Counts of what a pass over a dataset kept and dropped, and why, with example row ids."""

    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    stopped_at_max_pairs: bool = False

    def drop(self, reason: str, row_id: str, count: int = 1) -> None:
        """Count ``count`` rows dropped for ``reason``; remember the first few row ids."""
        self.dropped[reason] += count
        examples = self.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(row_id)

    def reject(self, rejection: Reject, row_id: str, where: str, strict: bool) -> None:
        """Count a rejected row, or raise :class:`DataError` naming ``where`` when the row is bad
        input and ``strict`` is set."""
        if strict and rejection.bad:
            detail = f" ({rejection.detail})" if rejection.detail else ""
            raise DataError(
                f"{where}: {rejection.reason}{detail} (data.strict=true; set it to false to skip and count such rows)"
            )
        self.drop(rejection.reason, row_id)

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def summary(self) -> str:
        parts = [f"kept {self.kept}"]
        for reason, count in sorted(self.dropped.items()):
            parts.append(f"dropped {count} ({reason}; e.g. rows {', '.join(self.examples[reason])})")
        if self.stopped_at_max_pairs:
            parts.append("stopped at data.max_pairs")
        return ", ".join(parts)
