"""The authors' iterative schedule: linearly rising rates over K cycles (docs/method.md §8.3–8.4).

Cycle k = 1…K of a pruning run (min, max) prunes to ``min + (max − min) · k / K`` %; (0, 60) over
4 cycles gives 15, 30, 45, 60, the released ver2 chain. The training engine calls
``prune_to_rate(model, rate)`` at the start of each cycle, then restores the previous cycle's best
weights (masks re-applied) and trains with a fresh optimiser and lr schedule.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["PruneSchedule", "linear_schedule"]


def _check_rate(field: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{field}={value!r} must be a finite number in [0, 100)")
    if not 0.0 <= float(value) < 100.0:
        raise ValueError(f"{field}={value!r} is outside [0, 100); rates are percentages of weights removed")


@dataclass(frozen=True)
class PruneSchedule:
    """A pruning run (min_rate, max_rate) over ``cycles`` cycles (docs/method.md §8.3; authors: 4 cycles)."""

    min_rate: float = 0.0
    max_rate: float = 60.0
    cycles: int = 4

    def __post_init__(self) -> None:
        _check_rate("min_rate", self.min_rate)
        _check_rate("max_rate", self.max_rate)
        if self.min_rate > self.max_rate:
            raise ValueError(f"min_rate={self.min_rate!r} exceeds max_rate={self.max_rate!r}; need min_rate <= max_rate")
        if isinstance(self.cycles, bool) or not isinstance(self.cycles, int) or self.cycles < 1:
            raise ValueError(f"cycles={self.cycles!r} must be a positive integer (the authors use 4)")

    @property
    def rates(self) -> list[float]:
        """Per-cycle rates in %, rate_k = min + (max − min)·k/K for k = 1…K, computed exactly."""
        lo = Fraction(repr(float(self.min_rate)))
        hi = Fraction(repr(float(self.max_rate)))
        return [float(lo + (hi - lo) * k / self.cycles) for k in range(1, self.cycles + 1)]


def linear_schedule(min_rate: float, max_rate: float, cycles: int = 4) -> list[float]:
    """``PruneSchedule(min_rate, max_rate, cycles).rates``: e.g. (0, 60, 4) → [15, 30, 45, 60]."""
    return PruneSchedule(min_rate=min_rate, max_rate=max_rate, cycles=cycles).rates
