"""Figures of a trained bundle: training curves from ``training_log.jsonl`` and prediction overlays.

Plotting needs matplotlib, which is not a dependency of the package (``pip install 'crossmatch-ext[benchmarks]'``);
:func:`plots_available` says whether it is installed. The numbers never depend on it: curves are in the JSON-lines
log and in TensorBoard, metrics in the evaluation CSVs.
"""

from __future__ import annotations

import importlib
import importlib.util
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crossmatch_ext.engines.handlers import read_training_log

__all__ = [
    "CURVE_PANELS",
    "plot_overlays",
    "plot_training_curves",
    "plots_available",
    "predict_validation_cases",
    "read_training_log",
]

#: The panels of :func:`plot_training_curves`: ``(title, keys of the training log)``; the last one is validation.
CURVE_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("total loss", ("loss",)),
    ("supervised loss (Dice + CE) / 2", ("loss_supervised",)),
    ("image-level terms (strong views vs mixed teacher)", ("loss_strong1", "loss_strong2")),
    ("distillation terms", ("loss_teacher_kd", "loss_decoder_kd")),
    ("share of confident pixels (mask ratio)", ("mask_ratio",)),
    ("validation Dice (foreground mean)", ("val_mean_dice",)),
)


def plots_available() -> bool:
    """Whether matplotlib is installed (the ``benchmarks`` extra)."""
    return importlib.util.find_spec("matplotlib") is not None


def _matplotlib(module: str = "pyplot") -> Any:
    """``matplotlib.<module>`` with the file-only Agg backend (imported by name: matplotlib is optional)."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise ImportError(
            "plots need matplotlib, which crossmatch-ext does not install by default: "
            "pip install 'crossmatch-ext[benchmarks]' (or pip install matplotlib)."
        ) from None
    matplotlib.use("Agg")
    return importlib.import_module(f"matplotlib.{module}")


def plot_training_curves(
    logs: Mapping[str, str | Path],
    path: str | Path,
    title: str = "training curves",
    colors: Mapping[str, str] | None = None,
) -> Path:
    """Loss terms, mask ratio and validation Dice against iteration, one line per run (:data:`CURVE_PANELS`).

    Training terms with more than 20 points are shown as a moving average over about 5 % of the run; a term a run
    does not log (the CrossMatch terms of a supervised run) is left out of its panel.

    Args:
        logs: ``{run label: training_log.jsonl}``, in legend order.
        path: the PNG to write (its folder is created).
        title: the figure's title.
        colors: ``{run label: matplotlib colour}`` (default: matplotlib's cycle).

    Returns:
        ``path`` as a Path.

    Raises:
        ImportError: when matplotlib is not installed.
    """
    plt = _matplotlib()
    records = {label: read_training_log(log) for label, log in logs.items()}
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    for ax, (panel, keys) in zip(axes.ravel(), CURVE_PANELS):
        event = "validation" if keys == ("val_mean_dice",) else "train"
        for index, (label, run_records) in enumerate(records.items()):
            color = (colors or {}).get(label, f"C{index}")
            rows = [r for r in run_records if r.get("event") == event]
            for k, key in enumerate(keys):
                points = [(r["iteration"], r[key]) for r in rows if r.get(key) is not None]
                if not points:
                    continue
                xs, ys = zip(*points)
                if event == "train" and len(ys) > 20:
                    width = max(3, len(ys) // 20)
                    ys = tuple(statistics.fmean(ys[max(0, i - width + 1): i + 1]) for i in range(len(ys)))
                ax.plot(xs, ys, "-" if k == 0 else "--", color=color, alpha=0.8, lw=1.2,
                        marker="o" if event == "validation" else None, ms=3,
                        label=label + (f" {key}" if len(keys) > 1 else ""))
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def predict_validation_cases(
    config_files: Sequence[str | Path],
    overrides: Mapping[str, Any],
    checkpoint: str | Path,
    num_cases: int = 3,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Predict the first validation cases of a bundle with its own evaluation pipeline (preprocessing + inferer).

    Args:
        config_files: the bundle's ``train.yaml`` and ``evaluate.yaml`` (merged in order).
        overrides: the config overrides of the run (``dataset_dir``, ``patch_size``, ...).
        checkpoint: the weights (``models/model.pt``).
        num_cases: how many cases of the validation list.
        device: torch device name.

    Returns:
        One dict per case: ``case`` (the case folder's or file's name), ``image`` (first channel), ``label`` and
        ``pred`` (argmax), NumPy arrays on the image's grid.
    """
    import torch
    from monai.bundle import ConfigParser

    from .handlers import case_id_from_item

    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files])
    parser.update({**overrides, "device": f"$torch.device({device!r})", "num_workers": 0})
    network = parser.get_parsed_content("network_def").to(device)
    weights = str(checkpoint)
    network.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
    network.eval()
    preprocessing = parser.get_parsed_content("validate::preprocessing")
    inferer = parser.get_parsed_content("validate::inferer")
    items = parser.get_parsed_content("datalists")["validation"][:num_cases]
    outputs: list[dict[str, Any]] = []
    for item in items:
        data = preprocessing(dict(item))
        image = data["image"]
        with torch.no_grad():
            pred = inferer(image[None].to(device), network)
        outputs.append({
            "case": case_id_from_item(data) or case_id_from_item(item) or str(len(outputs)),
            "image": image[0].cpu().numpy(),
            "label": data["label"][0].cpu().numpy(),
            "pred": pred[0].argmax(0).cpu().numpy(),
        })
    return outputs


def plot_overlays(predictions: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path, title: str = "") -> Path:
    """Image, ground truth and each run's prediction on the slice (last axis) with the most foreground of each case.

    Args:
        predictions: ``{column title: cases}`` as :func:`predict_validation_cases` returns them, the same cases in
            the same order for every run; image and label are taken from the first run.
        path: the PNG to write (its folder is created).
        title: the figure's title.

    Returns:
        ``path`` as a Path.

    Raises:
        ImportError: when matplotlib is not installed.
        ValueError: when ``predictions`` is empty or the runs hold different numbers of cases.
    """
    if not predictions:
        raise ValueError("plot_overlays: no predictions were given.")
    counts = {name: len(cases) for name, cases in predictions.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"plot_overlays: every run needs the same cases, found {counts}.")
    plt = _matplotlib()
    ListedColormap = _matplotlib("colors").ListedColormap

    runs = list(predictions)
    num_cases = counts[runs[0]]
    cmap = ListedColormap([(0, 0, 0, 0), (1.0, 0.2, 0.2, 0.55), (0.2, 1.0, 0.2, 0.55), (0.2, 0.5, 1.0, 0.55)])
    fig, axes = plt.subplots(num_cases, 2 + len(runs), figsize=(3.25 * (2 + len(runs)), 3.3 * num_cases),
                             squeeze=False)
    for row in range(num_cases):
        first = predictions[runs[0]][row]
        label = np.asarray(first["label"])
        z = int(np.argmax(label.reshape(-1, label.shape[-1]).astype(bool).sum(0)))
        image = np.asarray(first["image"])[..., z].T
        panels = [("image", None), ("ground truth", label[..., z])]
        panels += [(name, np.asarray(predictions[name][row]["pred"])[..., z]) for name in runs]
        for col, (panel, overlay) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(image, cmap="gray")
            if overlay is not None:
                ax.imshow(overlay.T, cmap=cmap, vmin=0, vmax=3, interpolation="nearest")
                if col > 1:
                    inter = np.logical_and(overlay > 0, label[..., z] > 0).sum()
                    denom = (overlay > 0).sum() + (label[..., z] > 0).sum()
                    panel += f" (slice Dice {2 * inter / max(denom, 1):.2f})"
            ax.set_title(f"{first['case']} z={z}: {panel}" if col == 0 else panel, fontsize=9)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
