"""Active learning: which study to label next, scored by CrossMatch's own perturbed decoders.

Two scores per study, both computed in one pass of the bundle's inference config (its network, preprocessing and
sliding-window / slice inferer) and both restricted to the foreground the model predicts:

- ``disagreement``: the decoder runs three times on the same encoder features: clean, weakly and strongly
  feature-perturbed (the training run's dropout rates, ``perturbation_gap`` of ``train.yaml``), with the backbone in
  evaluation mode and only the feature dropout active. Per voxel, the score is the mean of the three pairwise
  total-variation distances ``0.5 * sum_c |p_c - q_c|`` between the softmax outputs (clean-weak, clean-strong,
  weak-strong), in ``[0, 1]``; the study's score is its mean over the foreground voxels.
- ``entropy``: the softmax entropy of the clean prediction divided by ``log(C)`` (in ``[0, 1]``), mean over the same
  foreground voxels.

The foreground is the union of the voxels that any of the three decodes labels non-background (argmax > 0). A study
with no predicted foreground scores 0 for both (it ranks last: the model sees nothing to learn from there; its
``foreground_voxels`` is 0 in the output). Ties are broken by the study's name, so a ranking is deterministic; the
dropout masks are seeded per study (from its file name), so a study's score does not depend on the other studies.

Scores are cached in a JSON file (default: ``<model>.active_learning.json`` beside the checkpoint) keyed by the
checkpoint's SHA-256: a second ranking with the same weights only runs studies not scored yet (or whose file changed),
new weights discard the cache.

Command line::

    python -m crossmatch_ext.active_learning rank --bundle bundles/crossmatch_la --model model.pt --images studies/
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "STRATEGIES",
    "StudyScore",
    "compute_study_scores",
    "default_cache_path",
    "main",
    "rank_studies",
    "score_studies",
]

STRATEGIES = ("disagreement", "entropy")
CACHE_VERSION = 1
_SEED = 20240601


@dataclass
class StudyScore:
    """The active-learning scores of one study.

    Attributes:
        image: path of the image file.
        id: the study's name (file name without its image extension), as MONAI Label names it.
        disagreement: mean pairwise total-variation distance of the clean / weak / strong decodes on the foreground.
        entropy: normalised softmax entropy of the clean decode on the foreground.
        foreground_voxels: number of voxels in the union of the predicted foregrounds.
    """

    image: str
    id: str
    disagreement: float
    entropy: float
    foreground_voxels: int


def study_id(image: str | os.PathLike) -> str:
    """The study's name: the file name without its extension (MONAI Label's image id), or the folder's name for a
    per-case folder with a generic file name (``<CASE>/mri_norm2.h5``), as the data lists name cases."""
    from crossmatch_ext.data import case_id_from_path

    return case_id_from_path(image)


def compute_study_scores(clean: Tensor, weak: Tensor, strong: Tensor) -> tuple[float, float, int]:
    """Disagreement and entropy of one study from its three softmax predictions.

    Args:
        clean: softmax of the clean decode, ``(C, *spatial)``.
        weak: softmax of the weakly perturbed decode, same shape.
        strong: softmax of the strongly perturbed decode, same shape.

    Returns:
        ``(disagreement, entropy, foreground_voxels)``; ``(0.0, 0.0, 0)`` where no decode predicts foreground.

    Raises:
        ValueError: if the shapes differ or there are fewer than two channels.
    """
    if clean.shape != weak.shape or clean.shape != strong.shape:
        raise ValueError(f"compute_study_scores: shapes differ: {tuple(clean.shape)}, {tuple(weak.shape)}, "
                         f"{tuple(strong.shape)}.")
    channels = clean.shape[0]
    if channels < 2:
        raise ValueError(f"compute_study_scores: expected at least 2 channels (background first), got {channels}.")
    clean, weak, strong = clean.float(), weak.float(), strong.float()
    foreground = (clean.argmax(0) > 0) | (weak.argmax(0) > 0) | (strong.argmax(0) > 0)
    count = int(foreground.sum())
    if count == 0:
        return 0.0, 0.0, 0

    def total_variation(p: Tensor, q: Tensor) -> Tensor:
        return 0.5 * (p - q).abs().sum(0)

    disagreement = (total_variation(clean, weak) + total_variation(clean, strong) + total_variation(weak, strong)) / 3
    entropy = -(clean * clean.clamp_min(1e-12).log()).sum(0) / math.log(channels)
    return float(disagreement[foreground].mean()), float(entropy[foreground].mean()), count


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_cache_path(model: str | os.PathLike) -> Path:
    """Where the scores of ``model`` are cached: ``<model>.active_learning.json`` beside it."""
    model = Path(model)
    return model.with_name(model.name + ".active_learning.json")


def _load_state_dict(model: Path, device: torch.device) -> dict[str, Tensor]:
    try:
        checkpoint = torch.load(model, map_location=device, weights_only=True)
    except Exception as error:
        raise ValueError(f"active learning: cannot load the model weights {model}: {error}") from error
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, dict):
        raise ValueError(f"active learning: {model} is not a state_dict (found {type(checkpoint).__name__}).")
    return checkpoint


def _perturbation_settings(bundle: Path) -> dict[str, Any]:
    """The bundle's feature perturbation: its ``train.yaml`` values, else the shared defaults."""
    from crossmatch_ext.bundle.config import METHOD_SETTINGS

    settings = {name: METHOD_SETTINGS[key][0] for key, name in (
        ("perturbation_gap", "gap"), ("perturbation_type", "kind"), ("perturbation_levels", "levels"))}
    train = bundle / "configs" / "train.yaml"
    if train.is_file():
        from monai.bundle import ConfigParser

        config = ConfigParser.load_config_file(os.fspath(train)) or {}
        for key, name in (("perturbation_gap", "gap"), ("perturbation_type", "kind"),
                          ("perturbation_levels", "levels")):
            if isinstance(config.get(key), (int, float, str)):
                settings[name] = config[key]
    return settings


def _inference_parts(bundle: Path, images: list[str], device: torch.device, overrides: dict[str, Any] | None
                     ) -> tuple[nn.Module, Callable, Any]:
    from monai.bundle import ConfigParser

    config_file = next((bundle / "configs" / f"inference.{e}" for e in ("yaml", "json")
                        if (bundle / "configs" / f"inference.{e}").is_file()), None)
    if config_file is None:
        raise FileNotFoundError(f"active learning: no configs/inference.yaml or .json in the bundle {bundle}.")
    parser = ConfigParser()
    parser.read_config(os.fspath(config_file))
    parser["bundle_root"] = os.fspath(bundle)
    parser["device"] = f"$torch.device('{device}')"
    parser["datalist"] = [{"image": image} for image in images]
    for key, value in (overrides or {}).items():
        parser[key] = value
    network = parser.get_parsed_content("network")
    preprocessing = parser.get_parsed_content("preprocessing")
    inferer = parser.get_parsed_content("inferer")
    return network, preprocessing, inferer


def _perturbed_predictor(network: nn.Module, spatial_dims: int, settings: dict[str, Any]) -> Callable[[Tensor], Tensor]:
    from crossmatch_ext.networks import FeaturePerturbation, FeaturePerturbedNetwork

    perturbation = FeaturePerturbation(gap=float(settings["gap"]), kind=str(settings["kind"]),
                                       levels=str(settings["levels"]), spatial_dims=spatial_dims)
    wrapped = FeaturePerturbedNetwork(network, perturbation)
    wrapped.eval()
    perturbation.train()  # only the feature dropout is active; the backbone (BatchNorm, its own dropout) evaluates

    def predict(x: Tensor) -> Tensor:
        batch = x.shape[0]
        clean, weak, strong = FeaturePerturbedNetwork.split(wrapped(x, perturbed=batch), batch, batch)
        return torch.cat([clean.softmax(1), weak.softmax(1), strong.softmax(1)], dim=1)

    return predict


def score_studies(bundle: str | os.PathLike, model: str | os.PathLike, images: Sequence[str | os.PathLike],
                  cache_path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                  overrides: dict[str, Any] | None = None,
                  progress: Callable[[str], None] | None = None) -> tuple[list[StudyScore], dict[str, Any]]:
    """Score studies with a bundle's inference config and a checkpoint, using and updating the score cache.

    Args:
        bundle: the bundle folder (with ``configs/inference.yaml``).
        model: the checkpoint (``state_dict``) the scores belong to.
        images: image files to score.
        cache_path: the JSON cache; default :func:`default_cache_path` of ``model``.
        device: where the network runs.
        overrides: config ids to set before parsing (e.g. ``{"patch_size": [32, 32, 16]}``).
        progress: called with one line per study scored.

    Returns:
        ``(scores, cache_info)``: the scores in the order of ``images``, and ``{"path", "hits", "misses"}``.

    Raises:
        FileNotFoundError: if the bundle, the model or an image is missing.
        ValueError: if the model or an image cannot be read.
    """
    bundle, model = Path(bundle), Path(model)
    if not (bundle / "configs").is_dir():
        raise FileNotFoundError(f"active learning: {bundle} is not a bundle folder (no configs/).")
    if not model.is_file():
        raise FileNotFoundError(f"active learning: model weights not found: {model}.")
    paths = [Path(image).resolve() for image in images]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"active learning: image not found: {path}.")
    cache_file = Path(cache_path) if cache_path is not None else default_cache_path(model)
    model_hash = _file_sha256(model)
    cached: dict[str, Any] = {}
    if cache_file.is_file():
        try:
            content = json.loads(cache_file.read_text())
        except (OSError, json.JSONDecodeError):
            content = {}
        if content.get("version") == CACHE_VERSION and content.get("model_sha256") == model_hash:
            cached = content.get("studies", {})

    def file_key(path: Path) -> list[int]:
        stat = path.stat()
        return [stat.st_size, stat.st_mtime_ns]

    todo = [p for p in paths if not (os.fspath(p) in cached and cached[os.fspath(p)].get("file") == file_key(p))]
    if todo:
        device = torch.device(device)
        network, preprocessing, inferer = _inference_parts(bundle, [os.fspath(p) for p in todo], device, overrides)
        network.load_state_dict(_load_state_dict(model, device))
        network.to(device)
        for index, path in enumerate(todo, 1):
            try:
                data = preprocessing({"image": os.fspath(path)})
            except Exception as error:
                raise ValueError(f"active learning: cannot read the image {path}: {error}") from error
            image = torch.as_tensor(data["image"]).to(device)
            predict = _perturbed_predictor(network, image.ndim - 1, _perturbation_settings(bundle))
            torch.manual_seed(_SEED + zlib.crc32(path.name.encode()))
            with torch.no_grad():
                probabilities = inferer(image[None], predict)[0]
            channels = probabilities.shape[0] // 3
            clean, weak, strong = (probabilities[i * channels:(i + 1) * channels] for i in range(3))
            disagreement, entropy, voxels = compute_study_scores(torch.as_tensor(clean), torch.as_tensor(weak),
                                                                 torch.as_tensor(strong))
            cached[os.fspath(path)] = {"file": file_key(path), "disagreement": disagreement, "entropy": entropy,
                                       "foreground_voxels": voxels}
            if progress is not None:
                progress(f"[{index}/{len(todo)}] {study_id(path)}: disagreement {disagreement:.4f}, "
                         f"entropy {entropy:.4f}, foreground {voxels} voxels")
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache_file.with_name(cache_file.name + ".tmp")
        temporary.write_text(json.dumps({"version": CACHE_VERSION, "model": os.fspath(model.resolve()),
                                         "model_sha256": model_hash, "studies": cached}, indent=1))
        temporary.replace(cache_file)
    scores = [StudyScore(image=os.fspath(p), id=study_id(p), disagreement=cached[os.fspath(p)]["disagreement"],
                         entropy=cached[os.fspath(p)]["entropy"],
                         foreground_voxels=cached[os.fspath(p)]["foreground_voxels"]) for p in paths]
    return scores, {"path": os.fspath(cache_file), "hits": len(paths) - len(todo), "misses": len(todo)}


def rank_studies(scores: Sequence[StudyScore], strategy: str = "disagreement") -> list[StudyScore]:
    """Studies by decreasing score of ``strategy``, ties by name (deterministic).

    Raises:
        ValueError: if ``strategy`` is not one of :data:`STRATEGIES`.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"active learning: strategy must be one of {STRATEGIES}, got {strategy!r}.")
    return sorted(scores, key=lambda s: (-getattr(s, strategy), s.id, s.image))


def list_images(folder: str | os.PathLike) -> list[str]:
    """The image files of a folder (the inference patterns of ``crossmatch_ext.data``), sorted.

    Raises:
        FileNotFoundError: if the folder does not exist or holds no image.
    """
    from crossmatch_ext.data import INFERENCE_PATTERNS, image_folder_datalist

    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"active learning: --images folder not found: {folder}.")
    images = sorted(d["image"] for d in image_folder_datalist(os.fspath(folder), INFERENCE_PATTERNS))
    if not images:
        raise FileNotFoundError(f"active learning: no images ({', '.join(INFERENCE_PATTERNS)}) in {folder}.")
    return images


def ranking_json(ranked: Sequence[StudyScore], strategy: str, model: str | os.PathLike,
                 cache: dict[str, Any]) -> dict[str, Any]:
    """The JSON the command line prints: the strategy, the next study, the ranking and the cache use."""
    return {"strategy": strategy, "model": os.fspath(model), "next": ranked[0].id if ranked else None,
            "ranking": [{"rank": i + 1, "score": getattr(s, strategy), **asdict(s)} for i, s in enumerate(ranked)],
            "cache": cache}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``rank`` prints the ranking of a folder of images as JSON."""
    parser = argparse.ArgumentParser(prog="python -m crossmatch_ext.active_learning",
                                     description=(__doc__ or "").split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rank = commands.add_parser("rank", help="rank a folder of images by a strategy, print JSON",
                               description="Score every image of a folder with a bundle's inference config and a "
                                           "checkpoint; print the ranking (highest score first) as JSON on stdout.")
    rank.add_argument("--bundle", required=True, help="bundle folder, e.g. bundles/crossmatch_la")
    rank.add_argument("--model", required=True, help="checkpoint (state_dict), e.g. models/model.pt")
    rank.add_argument("--images", required=True, help="folder of images to rank (the studies without a label)")
    rank.add_argument("--strategy", choices=STRATEGIES, default="disagreement",
                      help="disagreement of the perturbed decoders (default) or softmax entropy")
    rank.add_argument("--cache", default=None, help="score cache JSON (default: <model>.active_learning.json)")
    rank.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    rank.add_argument("--override", action="append", default=[], metavar="ID=VALUE",
                      help="set an inference config id to a JSON value (or a string), e.g. patch_size=[32,32,16] "
                           "(repeatable)")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    for item in args.override:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--override expects ID=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    try:
        images = list_images(args.images)
        scores, cache = score_studies(args.bundle, args.model, images, cache_path=args.cache, device=args.device,
                                      overrides=overrides, progress=lambda line: print(line, file=sys.stderr))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{len(scores)} studies, {cache['hits']} from the cache {cache['path']}", file=sys.stderr)
    print(json.dumps(ranking_json(rank_studies(scores, args.strategy), args.strategy, args.model, cache), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
