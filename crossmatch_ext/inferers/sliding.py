"""Sliding-window inference with the evaluation protocol of the CrossMatch / UA-MT literature."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import SlidingWindowInferer

__all__ = ["StridedSlidingWindowInferer"]


class StridedSlidingWindowInferer(SlidingWindowInferer):
    """MONAI's sliding window with explicit strides, averaging softmax probabilities (the papers' LA protocol).

    The LA test scripts of UA-MT, BCP and CrossMatch slide a 112x112x80 window with strides 18/18/4, place windows
    at ``min(i * stride, size - patch)`` (the last one flush with the border), average the per-window softmax
    probabilities uniformly and zero-pad an image smaller than the window symmetrically. MONAI's sliding window
    does the same when the overlap gives exactly those strides, so this class only converts strides to overlaps
    and applies the softmax per window. The output is class probabilities, not logits.

    Args:
        roi_size: the window size.
        strides: the step between windows along each axis.
        sw_batch_size: windows per forward pass.
        softmax: average probabilities (True, the papers' protocol) or raw logits.
        kwargs: any other ``SlidingWindowInferer`` argument except ``overlap`` and ``mode`` (uniform averaging).

    Raises:
        ValueError: when a stride is not in ``[1, roi]``.
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        strides: Sequence[int],
        sw_batch_size: int = 1,
        softmax: bool = True,
        **kwargs: Any,
    ) -> None:
        roi = [int(r) for r in roi_size]
        steps = [int(s) for s in strides]
        if len(steps) != len(roi) or any(not 1 <= s <= r for s, r in zip(steps, roi)):
            raise ValueError(f"strides {tuple(steps)} must give one step in [1, roi] per axis of roi {tuple(roi)}.")
        # int(roi * (1 - overlap)) == stride exactly, away from floating-point edges
        overlap = [1.0 - (s + 0.5) / r if s < r else 0.0 for s, r in zip(steps, roi)]
        super().__init__(roi_size=roi, sw_batch_size=sw_batch_size, overlap=overlap, mode="constant", **kwargs)
        self.strides = tuple(steps)
        self.softmax = bool(softmax)

    def __call__(
        self,
        inputs: torch.Tensor,
        network: Callable[..., torch.Tensor | Sequence[torch.Tensor] | dict[Any, torch.Tensor]],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        if not self.softmax:
            return super().__call__(inputs, network, *args, **kwargs)

        def probabilities(x: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
            logits = network(x, *a, **k)
            if not isinstance(logits, torch.Tensor):
                raise TypeError(f"softmax averaging needs a network returning one tensor, got {type(logits).__name__}.")
            return torch.softmax(logits.float(), dim=1)

        return super().__call__(inputs, probabilities, *args, **kwargs)
