"""Count the configuration lines two bundle configs share: non-blank, non-comment lines, stripped, present in both.

Usage: ``python tests/bundles/shared_lines.py [FILE_A FILE_B] [--list]`` (default: the two bundles' train.yaml).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = (ROOT / "bundles/crossmatch_la/configs/train.yaml", ROOT / "bundles/crossmatch_acdc/configs/train.yaml")


def config_lines(path: Path) -> set[str]:
    """The stripped, non-blank lines of ``path`` that are not comments."""
    stripped = (line.strip() for line in path.read_text().splitlines())
    return {line for line in stripped if line and not line.startswith("#")}


def shared_lines(first: Path, second: Path) -> list[str]:
    """The lines of ``first`` (in its order, once each) that ``second`` also holds."""
    common = config_lines(first) & config_lines(second)
    seen: list[str] = []
    for line in (line.strip() for line in first.read_text().splitlines()):
        if line in common and line not in seen:
            seen.append(line)
    return seen


_IMPORTS = ("MONAI's imports section: MONAI 1.6 evaluates each config file alone (no include), so each imports what "
            "its expressions use")
_MONAI_ID = ("a MONAI bundle id: the model-zoo convention and MONAI's bundle properties "
             "(ConfigWorkflow.check_properties)")
_LABEL = "an id MONAI Label sets or reads in a bundle's train.yaml (BundleTrainTask)"
_YAML = "YAML structure: the key of a MONAI component or list, spelled the same in any two configs"
_DATASET = "the bundle's own choice, the same here by coincidence (another dataset sets another value)"

#: Every line the two bundles' train.yaml may share, and why it cannot live in the package. A shared line missing
#: here fails ``tests/bundles/test_shared_lines.py``: move it into crossmatch_ext.bundle, or say here why not.
SHARED_LINE_REASONS: dict[str, str] = {
    "imports:": _IMPORTS,
    "- $import torch": _IMPORTS + " (torch.device)",
    "- $import monai": _IMPORTS + " (monai.transforms.Compose)",
    "- $import crossmatch_ext": _IMPORTS + " (MONAI binds `import a.b` as 'a.b', so the package name needs its own)",
    "- $import crossmatch_ext.bundle   # and with it every crossmatch_ext module the config uses": _IMPORTS,
    "ckpt_dir: \"$@bundle_root + '/models'\"": _MONAI_ID + ", under bundle_root (MONAI Label overrides bundle_root)",
    "output_dir: \"$@bundle_root + '/eval'\"": _MONAI_ID + ", under bundle_root",
    "device: \"$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')\"": _MONAI_ID + "; " + _LABEL,
    "num_workers: 4": _DATASET + ": loader workers of the bundle's own datasets, referenced by their components",
    "resolved_layout: \"$crossmatch_ext.data.resolve_layout(@dataset_module, @dataset_dir, @data_layout, "
    "bundle_root=@bundle_root)\"": "the layout of dataset_dir, referenced by the bundle's own load transforms "
    "(train::load), which differ per bundle; a config id so that it is resolved once",
    "weight_decay: 0.0001": _DATASET + " (AdamW for LA, SGD for ACDC): an argument of the bundle's optimizer",
    "network_def:": _MONAI_ID + " (ckpt_export, verify_net_in_out, MONAI Label instantiate network_def)",
    "in_channels: 1": "an argument of network_def (single-channel MRI in both bundles); " + _DATASET,
    "network: \"$@network_def.to(@device)\"": _MONAI_ID + "; " + _LABEL + " (it sets `network`)",
    "optimizer:": "the bundle's optimizer (AdamW for LA, SGD for ACDC): a torch component the checkpoints hold",
    "params: \"$@network.parameters()\"": "an argument of the bundle's own optimizer component (torch's spelling)",
    "lr: \"@learning_rate\"": "an argument of the bundle's own optimizer component",
    "weight_decay: \"@weight_decay\"": "an argument of the bundle's own optimizer component",
    "train:": _MONAI_ID + " (train::trainer, train::dataset)",
    "geometric:": "the bundle's own random spatial transforms (LA: pad, rot90 + flip, crop; ACDC: rot90 + flip, "
    "rotation or nothing, resize); the name coincides",
    "- _target_: OneOf": _YAML,
    "transforms:": _YAML,
    "- {_target_: Flipd, keys: [image, label], spatial_axis: 0, allow_missing_keys: true}": "part of the "
    "authors' RandomRotFlip in each bundle's MONAI pipeline: folding it into one package transform would change the "
    "per-transform seeds MONAI's Compose derives, so every augmentation draw of a seeded run",
    "- {_target_: Flipd, keys: [image, label], spatial_axis: 1, allow_missing_keys: true}": "as the flip along axis 0",
    "strong_augmentation:": "the bundle's own strong views (LA: bias field, gamma, blur; ACDC: colour jitter, blur, "
    "8 bits); the name coincides",
    "_target_: Compose": _YAML,
    "unlabeled_views:": "the bundle's own unlabeled view transforms (ACDC adds the 8-bit weak view); the name "
    "coincides",
    "- {_target_: crossmatch_ext.transforms.RandCutMixBoxd, keys: [cutmix_box_s1, cutmix_box_s2], reference_key: "
    "image,": "the first line of the CutMix box transform, whose arguments differ (LA: the authors' axis-order option)",
    "dataset:": _LABEL + " (train#dataset#data, validate#dataset#data)",
    "data: \"$@datalists['labeled']\"": _LABEL + " (train#dataset#data)",
    "transform: \"@train::preprocessing\"": "an argument of the bundle's own dataset component (LA: CacheDataset, "
    "ACDC: VolumeSliceDataset)",
    "cache_rate: \"@cache_rate\"": "an argument of the bundle's own dataset component",
    "unlabeled_dataset:": "the unlabeled twin of train::dataset, the bundle's own component (LA: CacheDataset, ACDC: "
    "VolumeSliceDataset)",
    "data: \"$[] if @mode == 'supervised' else @datalists['unlabeled']\"": "an argument of the unlabeled dataset",
    "transform: \"@train::unlabeled_preprocessing\"": "an argument of the unlabeled dataset",
    "dataloader: {_target_: crossmatch_ext.bundle.train_loader}   # labeled + unlabeled + mix batches (see mode, "
    "cutmix)": _MONAI_ID + " (train::dataloader), naming the package builder",
    "inferer: {_target_: SimpleInferer}": _MONAI_ID + " (train::inferer is a required training property)",
    "handlers: [{_target_: crossmatch_ext.bundle.TrainingHandlers}]": _LABEL + " (it adds its handlers to "
    "train#handlers), naming the package builder",
    "trainer: {_target_: crossmatch_ext.bundle.crossmatch_trainer, max_epochs: 1}   # MONAI Label sets max_epochs":
    _LABEL + " (train#trainer#max_epochs), naming the package builder",
    "sw_batch_size: \"@sw_batch_size\"": "an argument of the bundle's own inferer (LA: sliding window, ACDC: slices)",
    "validate:": _MONAI_ID + " (validate::evaluator, validate::dataset)",
    "preprocessing: \"$monai.transforms.Compose(@train::load)\"": _MONAI_ID + " (validate::preprocessing, read "
    "by tools such as the benchmarks and the plots)",
    "dataset: {_target_: crossmatch_ext.bundle.validation_dataset, data: \"$@datalists['validation']\"}": _LABEL
    + " (validate#dataset#data), naming the package builder",
    "handlers: [{_target_: crossmatch_ext.bundle.ValidationMonitors, output_dir: \"@output_dir\", ckpt_dir: "
    "\"@ckpt_dir\", network: \"@network\"}]": _MONAI_ID + " (validate::handlers, a list that --tracking mlflow "
    "appends to), naming the package handler",
    "evaluator: {_target_: crossmatch_ext.bundle.validation_evaluator}   # validate::* above, network, device, amp":
    _MONAI_ID + " (validate::evaluator), naming the package builder",
    "run: [\"$crossmatch_ext.bundle.run_training()\"]": _MONAI_ID + " (`run` is the model-zoo run id), naming the "
    "package step",
    "training: \"%run\"": "the run id `training` of `python -m monai.bundle run training` (MONAI Label runs it too)",
}


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--list"]
    files = (Path(args[0]), Path(args[1])) if len(args) == 2 else DEFAULT
    lines = shared_lines(*files)
    if "--list" in sys.argv:
        print("\n".join(f"{line}\n    {SHARED_LINE_REASONS.get(line, 'NO REASON GIVEN')}" for line in lines))
    print(len(lines))
