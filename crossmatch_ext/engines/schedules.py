"""Confidence-threshold schedules for the pseudo-label mask.

A schedule is a callable ``schedule(iteration) -> threshold`` where ``iteration`` is the 1-based number of the
training step being computed (Ignite's ``engine.state.iteration`` inside an iteration).
"""

from __future__ import annotations

import math

__all__ = ["ConstantThreshold", "OfficialRampThreshold", "sigmoid_rampup"]


def sigmoid_rampup(current: float, length: float) -> float:
    """The ``exp(-5 (1 - t)^2)`` ramp from 0 to 1 over ``length`` steps (Laine and Aila), clipped at both ends."""
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(current, 0.0), length) / length
    return float(math.exp(-5.0 * phase * phase))


class ConstantThreshold:
    """The same threshold at every step (the authors' ACDC setting, 0.95).

    Args:
        value: the threshold in [0, 1].

    Raises:
        ValueError: for a value outside [0, 1].
    """

    def __init__(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"confidence threshold must lie in [0, 1], got {value}.")
        self.value = float(value)

    def __call__(self, iteration: int) -> float:
        return self.value

    def __repr__(self) -> str:
        return f"ConstantThreshold({self.value})"


class OfficialRampThreshold:
    """The threshold schedule of the authors' LA code.

    Step 1 uses ``initial``; from step 2 on the threshold is
    ``(initial + (1 - initial) * sigmoid_rampup(step - 2, ramp_length)) * scale`` with the authors' fixed
    ``ramp_length`` of 17000 steps and a ``scale`` of ln 2. With ``initial = 0.75`` this gives 0.75, 0.5210, ...,
    0.5771 at step 9001 and 0.6681 at step 14001: since a two-class max-softmax is at least 0.5, almost every voxel
    passes. Set ``scale=1`` for the ramp without the ln 2 factor.

    Args:
        initial: the threshold of the first step (the authors' ``conf_thresh``; 0.75 now, 0.85 in the paper era).
        ramp_length: the ramp length in steps.
        scale: the factor applied from step 2 on.
    """

    def __init__(self, initial: float = 0.75, ramp_length: int = 17000, scale: float = math.log(2.0)) -> None:
        if not 0.0 <= initial <= 1.0:
            raise ValueError(f"initial confidence threshold must lie in [0, 1], got {initial}.")
        self.initial = float(initial)
        self.ramp_length = int(ramp_length)
        self.scale = float(scale)

    def __call__(self, iteration: int) -> float:
        if iteration <= 1:
            return self.initial
        ramp = sigmoid_rampup(iteration - 2, self.ramp_length)
        return (self.initial + (1.0 - self.initial) * ramp) * self.scale

    def __repr__(self) -> str:
        return f"OfficialRampThreshold(initial={self.initial}, ramp_length={self.ramp_length}, scale={self.scale:.6f})"
