"""Run an exported CrossMatch bundle (``models/model.ts``) on a preprocessed volume with PyTorch alone.

The deployment side needs neither MONAI nor crossmatch-ext: this script imports only ``torch`` (and the standard
library), loads the TorchScript network written by ``python -m monai.bundle ckpt_export`` and reproduces the
bundles' inference protocols with plain loops:

* ``sliding`` (LA V-Net): windows of ``--roi`` placed every ``--strides`` voxels (the last window flush with the
  border, a volume smaller than the window zero-padded symmetrically), per-window softmax, probabilities
  averaged uniformly (the paper's protocol, ``eval_protocol: paper`` of the bundle). Output: class probabilities.
* ``slices`` (ACDC U-Net): every slice along the last spatial axis resized to ``--roi`` (``nearest``: SciPy's
  ``zoom(order=0)``; ``bilinear``), segmented, and the logits resized back. Output: logits.

Input and output are ``torch.save`` files: the input a float tensor ``(C, X, Y, Z)`` already preprocessed as the
bundle's ``preprocessing`` does (intensity normalisation); the output a dict with ``scores`` ``(K, X, Y, Z)`` and
``labels`` ``(X, Y, Z)`` (uint8 arg-max).

Example::

    python -m monai.bundle ckpt_export network_def --filepath model.ts --ckpt_file models/model.pt \\
        --meta_file configs/metadata.json --config_file configs/inference.yaml
    python scripts/torchscript_infer.py --model model.ts --input volume.pt --output pred.pt \\
        sliding --roi 112 112 80 --strides 18 18 4
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
import torch.nn.functional as F


def _window_starts(size: int, roi: int, stride: int) -> list[int]:
    count = int(math.ceil(max(size - roi, 0) / stride)) + 1
    return sorted({min(i * stride, size - roi) for i in range(count)})


def sliding_window(model: torch.jit.ScriptModule, volume: torch.Tensor, roi: list[int], strides: list[int],
                   batch: int = 1) -> torch.Tensor:
    """Uniformly averaged per-window softmax probabilities of ``volume`` ``(C, X, Y, Z)``: ``(K, X, Y, Z)``."""
    spatial = list(volume.shape[1:])
    pads = [max(r - s, 0) for r, s in zip(roi, spatial)]
    pad_arg: list[int] = []
    for p in reversed(pads):  # F.pad takes the last axis first
        pad_arg += [p // 2, p - p // 2]
    padded = F.pad(volume, pad_arg) if any(pads) else volume
    size = list(padded.shape[1:])
    starts = [_window_starts(s, r, t) for s, r, t in zip(size, roi, strides)]
    corners = [(x, y, z) for x in starts[0] for y in starts[1] for z in starts[2]]
    total = None
    count = torch.zeros(size, device=volume.device)
    for first in range(0, len(corners), batch):
        chunk = corners[first : first + batch]
        windows = torch.stack([padded[:, x : x + roi[0], y : y + roi[1], z : z + roi[2]] for x, y, z in chunk])
        with torch.no_grad():
            probabilities = torch.softmax(model(windows).float(), dim=1)
        if total is None:
            total = torch.zeros([probabilities.shape[1], *size], device=volume.device)
        for (x, y, z), p in zip(chunk, probabilities):
            total[:, x : x + roi[0], y : y + roi[1], z : z + roi[2]] += p
            count[x : x + roi[0], y : y + roi[1], z : z + roi[2]] += 1
    assert total is not None
    averaged = total / count
    crop = [slice(p // 2, p // 2 + s) for p, s in zip(pads, spatial)]
    return averaged[:, crop[0], crop[1], crop[2]]


def _zoom_nearest(length_in: int, length_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    # scipy.ndimage.zoom(order=0): corner-aligned coordinates rounded half up; past the border -> 0
    if length_out == 1:
        coords = torch.zeros(1, dtype=torch.float64)
    else:
        coords = torch.arange(length_out, dtype=torch.float64) * (float(length_in - 1) / float(length_out - 1))
    indices = torch.floor(coords + 0.5).long().clamp(0, length_in - 1)
    return indices, coords <= length_in - 1


def _resize(slices: torch.Tensor, size: list[int], mode: str) -> torch.Tensor:
    if list(slices.shape[2:]) == list(size):
        return slices
    if mode == "bilinear":
        return F.interpolate(slices, size=size, mode="bilinear", align_corners=False)
    rows, rows_in = (t.to(slices.device) for t in _zoom_nearest(slices.shape[2], size[0]))
    cols, cols_in = (t.to(slices.device) for t in _zoom_nearest(slices.shape[3], size[1]))
    out = slices.index_select(2, rows).index_select(3, cols)
    inside = rows_in[:, None] & cols_in[None, :]
    return torch.where(inside, out, torch.zeros((), dtype=out.dtype, device=out.device))


def slice_by_slice(model: torch.jit.ScriptModule, volume: torch.Tensor, roi: list[int], mode: str,
                   batch: int = 16) -> torch.Tensor:
    """Logits ``(K, X, Y, Z)`` of a 2D network applied to every slice ``volume[:, :, :, z]``."""
    slices = volume.permute(3, 0, 1, 2)  # (Z, C, X, Y)
    outputs = []
    for first in range(0, slices.shape[0], batch):
        chunk = _resize(slices[first : first + batch], roi, mode).contiguous()
        with torch.no_grad():
            logits = model(chunk).float()
        outputs.append(_resize(logits, list(slices.shape[2:]), mode))
    return torch.cat(outputs).permute(1, 2, 3, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="TorchScript file from `monai.bundle ckpt_export`")
    parser.add_argument("--input", required=True, help="torch.save file of a preprocessed (C, X, Y, Z) tensor")
    parser.add_argument("--output", required=True, help="where to torch.save {'scores', 'labels'}")
    parser.add_argument("--device", default="cpu")
    protocols = parser.add_subparsers(dest="protocol", required=True)
    sliding = protocols.add_parser("sliding", help="3D sliding window (LA)")
    sliding.add_argument("--roi", type=int, nargs=3, default=[112, 112, 80])
    sliding.add_argument("--strides", type=int, nargs=3, default=[18, 18, 4])
    sliding.add_argument("--batch", type=int, default=1)
    slices = protocols.add_parser("slices", help="2D slice by slice along the last axis (ACDC)")
    slices.add_argument("--roi", type=int, nargs=2, default=[256, 256])
    slices.add_argument("--mode", choices=["nearest", "bilinear"], default="nearest")
    slices.add_argument("--batch", type=int, default=16)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    model = torch.jit.load(args.model, map_location=device).eval()
    volume = torch.load(args.input, map_location=device, weights_only=True).float()
    if volume.ndim != 4:
        print(f"error: {args.input} holds a tensor of shape {tuple(volume.shape)}, expected (C, X, Y, Z)",
              file=sys.stderr)
        return 2
    if args.protocol == "sliding":
        scores = sliding_window(model, volume, args.roi, args.strides, args.batch)
    else:
        scores = slice_by_slice(model, volume, args.roi, args.mode, args.batch)
    torch.save({"scores": scores.cpu(), "labels": scores.argmax(0).to(torch.uint8).cpu()}, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
