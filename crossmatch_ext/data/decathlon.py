"""Medical Segmentation Decathlon folders with labels for only some cases: reading, generating and converting.

The layout is the Decathlon's, read so that a case without a label is unlabeled::

    <root>/dataset.json   {"name": "...", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver"},
                           "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"},
                                        {"image": "./imagesTr/b.nii.gz"}],          <- no label: unlabeled
                           "test": ["./imagesTs/c.nii.gz"]}
    <root>/imagesTr/      every training image (an image in the folder that dataset.json does not list is unlabeled)
    <root>/labelsTr/      the labels there are
    <root>/imagesTs/      images for inference
    <root>/val.list       optional: IDs of labeled training cases held out for validation

A MONAI datalist JSON (``{"training": [...], "validation": [...], "testing": [...]}``, unlabeled ``training`` items
without ``label``) is read the same way (layout ``"json"``); its ``validation`` section, or else a ``val.list`` beside
it, gives the validation cases. Without either, every labeled case trains (and a run keeps its final weights).

A MONAI Label studies folder (layout ``"studies"``: images, and the labels saved as final in ``labels/final/``) is
read as MONAI Label's bundle trainer splits it (:func:`crossmatch_ext.data.studies_datalists`): every study with a
final label is labeled, the last fifth of them (in name order) validates, every other study is unlabeled. It names
no classes or modality: the label values found are the classes, and the intensities are treated as non-CT.

Rules (:func:`read_decathlon`): paths are relative to the JSON's folder; a case's ID is its image's file name without
the extension; every ``training`` item with a ``label`` that is not a validation case is labeled (or the first
``num_labeled`` of them), every other ``training`` item is unlabeled. Problems of the folder's structure (a listed
file that does not exist, a validation case without a label, no labeled case, ...) are reported together, one line
each, naming the file and what to do. The module also follows the dataset-module protocol of
:mod:`crossmatch_ext.data.datasets` (``LAYOUTS``, ``detect_layout``, ``datalists``, ``RAW_LABEL_MAPS``), so a
bundle can name it as its ``dataset_module``.

:func:`write_decathlon_dataset` writes small CT-like (Hounsfield units, isotropic voxels) or MR-like (arbitrary
intensities, few thick slices) folders for tests; :func:`convert_la_to_decathlon` and
:func:`convert_acdc_to_decathlon` convert the LA and ACDC benchmark folders (any layout their dataset modules read)
into this layout, keeping which cases are labeled and the validation list.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import PathLike

from ..errors import InputError, InputFileNotFoundError, InputValueError
from .datasets.common import DATALIST_NAME, Datalists, Item, case_id_from_path, read_id_list, select_labeled
from .studies import is_studies_folder, studies_datalists
from .synthetic.common import write_nifti

__all__ = [
    "DATASET_JSON",
    "DECATHLON_KINDS",
    "IMAGE_SUFFIXES",
    "LAYOUTS",
    "RAW_LABEL_MAPS",
    "DecathlonDataset",
    "convert_acdc_to_decathlon",
    "convert_la_to_decathlon",
    "datalists",
    "detect_layout",
    "make_decathlon_case",
    "raise_problems",
    "read_decathlon",
    "write_decathlon_dataset",
]

logger = logging.getLogger(__name__)

#: The file that makes a folder a Decathlon folder.
DATASET_JSON = "dataset.json"
#: The layouts :func:`datalists` reads: a Decathlon folder (``"msd"``), a MONAI datalist JSON (``"json"``) or a MONAI
#: Label studies folder (``"studies"``).
LAYOUTS: tuple[str, ...] = ("msd", "json", "studies")
#: Decathlon labels store the classes themselves.
RAW_LABEL_MAPS: dict[str, dict[int, int]] = {}
#: Image files recognised in ``imagesTr/`` and ``imagesTs/``.
IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: The kinds of data :func:`write_decathlon_dataset` generates.
DECATHLON_KINDS: tuple[str, ...] = ("ct", "mr")

_MAX_PROBLEM_LINES = 20


# ---------------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class DecathlonDataset:
    """A Decathlon folder (or MONAI datalist) read into labeled / unlabeled / validation / test lists.

    Every item is ``{"image": path, "label": path, "case": id}`` (no ``label`` in unlabeled and test items); paths
    are absolute strings.

    Attributes:
        root: the folder of the JSON file.
        json_path: ``dataset.json`` or the datalist JSON.
        layout: ``"msd"``, ``"json"`` or ``"studies"``.
        name: the dataset's ``name`` (the folder's name when absent).
        modality: input channel -> modality (``{0: "CT"}``); empty when the JSON names none.
        classes: label value -> class name; empty when the JSON names none (the labels then say).
        labeled, unlabeled, validation, test: the lists.
        validation_source: where the validation cases were named (``val.list``, the JSON's section), or None.
        spacing_known: False when the JSON says ``"spacing_known": false`` (converted files whose source stored no
            voxel size; their spacing is written as 1).
    """

    root: Path
    json_path: Path
    layout: str
    name: str
    modality: dict[int, str]
    classes: dict[int, str]
    labeled: list[Item]
    unlabeled: list[Item]
    validation: list[Item]
    test: list[Item] = field(default_factory=list)
    validation_source: str | None = None
    spacing_known: bool = True

    def datalists(self) -> Datalists:
        """The ``{"labeled", "unlabeled", "validation"}`` lists of the bundles (copies of the items)."""
        return {key: [dict(item) for item in getattr(self, key)] for key in ("labeled", "unlabeled", "validation")}

    def describe(self) -> str:
        """One line: name, counts and the validation source."""
        validation = (f"{len(self.validation)} validation ({self.validation_source})" if self.validation
                      else "no validation cases (every labeled case trains; a run keeps its final weights)")
        return (f"{self.name} ({self.layout} layout, {self.json_path}): {len(self.labeled)} labeled, "
                f"{len(self.unlabeled)} unlabeled, {validation}, {len(self.test)} test")


def raise_problems(problems: Sequence[tuple[type[InputError], str]], where: PathLike) -> None:
    """Raise one input error listing every problem found, one line each (nothing to do when there is none).

    Args:
        problems: ``(error type, line)`` pairs; the first problem's type is raised.
        where: the folder or file checked, for the first line.

    Raises:
        InputError: the first problem's type (``InputFileNotFoundError`` or ``InputValueError``).
    """
    if not problems:
        return
    lines = [line for _, line in problems[:_MAX_PROBLEM_LINES]]
    if len(problems) > _MAX_PROBLEM_LINES:
        lines.append(f"... and {len(problems) - _MAX_PROBLEM_LINES} more")
    count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    text = f"{count} in {where} (nothing was written):\n" + "\n".join(f"  - {line}" for line in lines)
    raise problems[0][0](text)


def _image_id(path: Path) -> str | None:
    name = path.name
    if name.startswith("."):  # macOS resource forks ("._la_003.nii.gz") ship in some Decathlon archives
        return None
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def _find_json(path: Path) -> tuple[Path, str]:
    """The JSON file of a folder (or the file itself) and its layout; a MONAI Label studies folder has none and gives
    ``(folder, "studies")``."""
    if not path.exists():
        raise InputFileNotFoundError(
            f"dataset folder not found: {path}. Point it at a Decathlon folder (with {DATASET_JSON}) or a MONAI "
            "datalist JSON."
        )
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise InputValueError(f"{path} is not a folder or a JSON file: give a Decathlon folder or a datalist JSON.")
        return path, "msd" if path.name == DATASET_JSON else "json"
    if (path / DATASET_JSON).is_file():
        return path / DATASET_JSON, "msd"
    if (path / DATALIST_NAME).is_file():
        return path / DATALIST_NAME, "json"
    if is_studies_folder(path):
        return path, "studies"
    raise InputFileNotFoundError(
        f"no {DATASET_JSON} in {path}: a Decathlon folder needs one (name, modality, labels, training entries; "
        f"see crossmatch_ext.data.decathlon), or give a MONAI datalist JSON ({DATALIST_NAME}) or a MONAI Label "
        "studies folder (with labels/final/)."
    )


def _read_studies(root: Path, num_labeled: int | None) -> DecathlonDataset:
    """A MONAI Label studies folder as a dataset (see the module docstring)."""
    lists = studies_datalists(root)
    if not lists["labeled"]:
        raise InputValueError(f"no labeled study in {root}: save a final label (labels/final/) for a few studies, "
                              "then train again.")
    labeled, unlabeled = lists["labeled"], lists["unlabeled"]
    if num_labeled is not None:
        flags = select_labeled(range(len(labeled)), num_labeled, "studies", f"the final labels of {root}")
        unlabeled = unlabeled + [{k: v for k, v in item.items() if k != "label"}
                                 for item, flag in zip(labeled, flags) if not flag]
        labeled = [item for item, flag in zip(labeled, flags) if flag]
    return DecathlonDataset(
        root=root.resolve(), json_path=root.resolve(), layout="studies", name=root.resolve().name, modality={},
        classes={}, labeled=labeled, unlabeled=unlabeled, validation=lists["validation"],
        validation_source="MONAI Label's split of the studies with a final label" if lists["validation"] else None,
    )


def _load_json(json_path: Path) -> dict[str, Any]:
    try:
        content = json.loads(json_path.read_text())
    except json.JSONDecodeError as e:
        raise InputValueError(
            f"{json_path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}): fix the file."
        ) from e
    except (OSError, UnicodeDecodeError) as e:
        raise InputValueError(f"cannot read {json_path} ({e}): check the file.") from e
    if not isinstance(content, dict):
        raise InputValueError(f"{json_path} holds a {type(content).__name__}, expected a JSON object: fix the file.")
    return content


def _int_keyed(value: Any, key: str, json_path: Path, problems: list[tuple[type[InputError], str]]) -> dict[int, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append((InputValueError, f"{json_path}: {key!r} must map numbers to names, found {value!r}."))
        return {}
    out: dict[int, str] = {}
    for k, v in value.items():
        try:
            out[int(k)] = str(v)
        except (TypeError, ValueError):
            problems.append((InputValueError, f"{json_path}: {key!r} key {k!r} is not an integer: use \"0\", "
                             "\"1\", ..."))
    return dict(sorted(out.items()))


def _entry_paths(entry: Any) -> list[str]:
    return [str(p) for p in entry] if isinstance(entry, (list, tuple)) else [str(entry)]


def _resolve(root: Path, entry: Any) -> Any:
    """Absolute path(s) of a JSON entry (a path, or a list of paths for multi-file images)."""
    paths = [os.path.normpath(p if os.path.isabs(p) else os.path.join(root, p)) for p in _entry_paths(entry)]
    return paths if isinstance(entry, (list, tuple)) else paths[0]


def _items(
    content: Mapping[str, Any], key: str, root: Path, json_path: Path, problems: list[tuple[type[InputError], str]]
) -> list[Item]:
    raw = content.get(key, [])
    if not isinstance(raw, list):
        problems.append((InputValueError, f"{json_path}: {key!r} must be a list of entries, found "
                         f"{type(raw).__name__}."))
        return []
    items: list[Item] = []
    for i, entry in enumerate(raw):
        if isinstance(entry, str):  # the Decathlon's "test" entries are plain paths
            entry = {"image": entry}
        if not isinstance(entry, Mapping) or "image" not in entry:
            problems.append((InputValueError, f"{json_path}: entry {i} of {key!r} has no 'image': {entry!r}."))
            continue
        item: Item = {k: v for k, v in entry.items() if k not in ("image", "label")}
        item["image"] = _resolve(root, entry["image"])
        if entry.get("label") is not None:
            item["label"] = _resolve(root, entry["label"])
        first = _entry_paths(item["image"])[0]
        item["case"] = str(entry.get("case", case_id_from_path(first)))
        items.append(item)
    return items


def _missing_files(items: Sequence[Item], json_path: Path, section: str) -> list[tuple[type[InputError], str]]:
    problems: list[tuple[type[InputError], str]] = []
    for item in items:
        for key in ("image", "label"):
            for path in _entry_paths(item[key]) if key in item else []:
                if not Path(path).is_file():
                    remedy = ("add the file, or remove the entry's \"label\" to use the case as unlabeled"
                              if key == "label" and section == "training" else "add the file, or remove the entry")
                    problems.append((InputFileNotFoundError,
                                     f"{key} of case {item['case']!r} not found: {path} (named in {section!r} of "
                                     f"{json_path.name}): {remedy}."))
    return problems


def _unlisted_images(root: Path, listed: set[str], folder: str) -> list[Item]:
    directory = root / folder
    if not directory.is_dir():
        return []
    extra: list[Item] = []
    for path in sorted(directory.iterdir()):
        case = _image_id(path)
        if case is not None and path.is_file() and os.path.normpath(path) not in listed:
            extra.append({"image": os.path.normpath(path), "case": case})
    return extra


def read_decathlon(
    path: PathLike, *, val_list: str | None = "val.list", num_labeled: int | None = None
) -> DecathlonDataset:
    """Read a Decathlon folder (or a MONAI datalist JSON) into labeled / unlabeled / validation / test lists.

    Args:
        path: the folder (with ``dataset.json``, or with ``datalist.json``), or the JSON file itself.
        val_list: name of the validation list beside the JSON, used when the JSON has no ``validation`` section;
            a missing file means no validation cases. None: no validation list.
        num_labeled: None: every ``training`` item with a label (not held out for validation) is labeled; a number:
            only the first ``num_labeled`` of them, the others are used as unlabeled.

    Returns:
        The dataset.

    Raises:
        InputFileNotFoundError: no such folder, no JSON, or files the JSON (or ``val.list``) names are missing.
        InputValueError: an unreadable JSON, entries without an image, a validation case without a label, no labeled
            case, duplicate case IDs. Every problem found is listed, one line each.
    """
    json_path, layout = _find_json(Path(path).expanduser())
    if layout == "studies":
        return _read_studies(json_path, num_labeled)
    root = json_path.parent.resolve()
    json_path = root / json_path.name
    content = _load_json(json_path)
    problems: list[tuple[type[InputError], str]] = []
    if "training" not in content:
        problems.append((InputValueError, f"{json_path} has no 'training' list: add one (an entry per training "
                         "image)."))
    classes = _int_keyed(content.get("labels"), "labels", json_path, problems)
    modality = _int_keyed(content.get("modality"), "modality", json_path, problems)
    training = _items(content, "training", root, json_path, problems)
    json_validation = _items(content, "validation", root, json_path, problems)
    test = _items(content, "test" if "test" in content else "testing", root, json_path, problems)
    problems += _missing_files(training, json_path, "training")
    problems += _missing_files(json_validation, json_path, "validation")
    problems += _missing_files(test, json_path, "test")
    if layout == "msd":
        listed = {p for item in training + json_validation for p in _entry_paths(item["image"])}
        extra = _unlisted_images(root, listed, "imagesTr")
        if extra:
            logger.info(f"{len(extra)} image(s) of {root / 'imagesTr'} are not in {json_path.name}; used as unlabeled: "
                        f"{[i['case'] for i in extra[:5]]}")
            training += extra
        if "test" not in content and "testing" not in content:
            test = _unlisted_images(root, set(), "imagesTs")
        labels_dir = root / "labelsTr"
        named = {Path(p).resolve() for item in training + json_validation for p in _entry_paths(item.get("label", []))}
        if labels_dir.is_dir():
            stray = [p.name for p in sorted(labels_dir.iterdir()) if _image_id(p) and p.resolve() not in named]
            if stray:
                logger.warning(f"{len(stray)} label file(s) in {labels_dir} are not named by {json_path.name} (their "
                               f"cases are unlabeled): {stray[:5]}; add them to the training entries to use them.")
    seen: dict[str, str] = {}
    for item in training + json_validation:
        first = _entry_paths(item["image"])[0]
        if item["case"] in seen and seen[item["case"]] != first:
            problems.append((InputValueError, f"case ID {item['case']!r} names two images ({seen[item['case']]} and "
                             f"{first}) in {json_path.name}: rename one of them."))
        seen.setdefault(item["case"], first)

    validation_source: str | None = None
    validation: list[Item] = []
    if json_validation:
        validation_source = f"the 'validation' section of {json_path.name}"
        if val_list is not None and (root / val_list).is_file():
            logger.warning(f"{json_path.name} has a 'validation' section: {root / val_list} is not used.")
        for item in json_validation:
            if "label" not in item:
                problems.append((InputValueError, f"validation case {item['case']!r} has no label (in the 'validation'"
                                 f" section of {json_path}): add its \"label\", or move it to 'training'."))
        validation = json_validation
        held_out = {item["case"] for item in validation}
        training = [item for item in training if item["case"] not in held_out]
    elif val_list is not None and (root / val_list).is_file():
        list_path = root / val_list
        validation_source = str(list_path)
        by_case = {item["case"]: item for item in training}
        ids = read_id_list(list_path)
        for case in ids:
            if case not in by_case:
                problems.append((InputFileNotFoundError, f"validation case {case!r} of {list_path} is not a training "
                                 f"case of {json_path.name}: add it there, or remove it from {list_path.name}."))
            elif "label" not in by_case[case]:
                problems.append((InputValueError, f"validation case {case!r} (in {list_path}) has no label: add "
                                 f"labelsTr/{case} and its \"label\" entry, or remove it from {list_path.name}."))
        validation = [by_case[case] for case in ids if case in by_case]
        held = set(ids)
        training = [item for item in training if item["case"] not in held]

    candidates = [item for item in training if "label" in item]
    if not candidates:
        problems.append((InputValueError, f"no labeled case: no 'training' entry of {json_path} outside the validation "
                         "cases has a label: add labels (labelsTr/ and the entries' \"label\") for a few cases."))
    raise_problems(problems, json_path)
    if num_labeled is None:
        labeled = candidates
    else:
        flags = select_labeled(range(len(candidates)), num_labeled, "cases", f"the labeled entries of {json_path}")
        labeled = [item for item, flag in zip(candidates, flags) if flag]
    chosen = {id(item) for item in labeled}
    unlabeled = [{k: v for k, v in item.items() if k != "label"} for item in training if id(item) not in chosen]
    return DecathlonDataset(
        root=root,
        json_path=json_path,
        layout=layout,
        name=str(content.get("name") or root.name),
        modality=modality,
        classes=classes,
        labeled=labeled,
        unlabeled=unlabeled,
        validation=validation,
        test=test,
        validation_source=validation_source,
        spacing_known=bool(content.get("spacing_known", True)),
    )


# ------------------------------------------------------------------------------------ dataset-module protocol
def detect_layout(dataset_dir: PathLike) -> str:
    """``"msd"`` for a Decathlon folder (or its ``dataset.json``), ``"json"`` for a MONAI datalist, ``"studies"`` for a
    MONAI Label studies folder.

    Args:
        dataset_dir: the folder or JSON file.

    Returns:
        The layout.

    Raises:
        InputFileNotFoundError: when there is no such folder, or no JSON in it and no ``labels/final/``.
    """
    return _find_json(Path(dataset_dir).expanduser())[1]


def datalists(
    dataset_dir: PathLike, num_labeled: int | None = None, *, layout: str = "auto", val_list: str | None = "val.list"
) -> Datalists:
    """The labeled / unlabeled / validation lists of a Decathlon folder (the dataset-module protocol).

    Args:
        dataset_dir: the folder or JSON file.
        num_labeled: None or 0: every case with a label is labeled; else only the first ``num_labeled``.
        layout: ``"auto"``, ``"msd"``, ``"json"`` (both are read the same way) or ``"studies"``.
        val_list: see :func:`read_decathlon`.

    Returns:
        ``{"labeled", "unlabeled", "validation"}`` lists.

    Raises:
        InputValueError: for an unknown layout; see :func:`read_decathlon`.
    """
    if layout not in ("auto", *LAYOUTS):
        raise InputValueError(f"data_layout must be one of {['auto', *LAYOUTS]}, got {layout!r}.")
    dataset = read_decathlon(dataset_dir, val_list=val_list, num_labeled=num_labeled or None)
    logger.info(f"data lists: {dataset.describe()}")
    return dataset.datalists()


# ---------------------------------------------------------------------------------------------------- writing
def _write_json(path: Path, content: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n")


def _write_id_list(path: Path, ids: Sequence[str]) -> None:
    path.write_text("".join(f"{case}\n" for case in ids))


def _new_folder(dst: PathLike) -> tuple[Path, Path]:
    """Check that ``dst`` is new or empty and make a partial folder beside it (renamed to ``dst`` at the end)."""
    target = Path(dst).expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InputValueError(
            f"output folder {target} exists and is not empty: give a new folder (nothing was written)."
        )
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    return target, partial


def _finish(target: Path, partial: Path) -> None:
    if target.exists():
        target.rmdir()  # empty, checked by _new_folder
    partial.rename(target)


def _dataset_json(
    name: str,
    description: str,
    modality: Mapping[int, str],
    classes: Mapping[int, str],
    training: Sequence[Mapping[str, str]],
    test: Sequence[str],
    **extra: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "tensorImageSize": "3D",
        "modality": {str(k): v for k, v in modality.items()},
        "labels": {str(k): v for k, v in classes.items()},
        "numTraining": len(training),
        "numTest": len(test),
        "training": list(training),
        "test": list(test),
        **extra,
    }


def _ellipsoid(shape: Sequence[int], center: np.ndarray, radii: np.ndarray) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    distance = np.zeros(tuple(int(s) for s in shape), np.float32)
    for g, c, r in zip(grids, center, radii):
        distance += ((g - c) / r) ** 2
    return distance <= 1.0


def make_decathlon_case(
    kind: str, shape: Sequence[int], seed: int | Sequence[int] = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic case: a CT-like or MR-like image and its label.

    * ``"ct"``: Hounsfield units (``int16``): air at -1000 around an elliptic body of soft tissue (about 40 HU),
      an organ (class 1, about 60-80 HU) and a lesion inside it (class 2, about 110-130 HU), noise of 12 HU.
    * ``"mr"``: arbitrary positive intensities (``float32``) with a smooth bias field: a bright cavity (class 1)
      inside a darker wall (class 2) in tissue, shrinking from slice to slice along the last axis.

    Args:
        kind: ``"ct"`` or ``"mr"``.
        shape: the volume's shape (3 axes; for ``"mr"`` the last one is the slice axis).
        seed: seed of the case's random generator.

    Returns:
        ``(image, label)``; the label is ``uint8``.

    Raises:
        ValueError: for another kind or a shape of fewer than 8 voxels per in-plane axis.
    """
    if kind not in DECATHLON_KINDS:
        raise ValueError(f"kind must be one of {DECATHLON_KINDS}, got {kind!r}.")
    dims = tuple(int(s) for s in shape)
    if len(dims) != 3 or min(dims[:2]) < 8 or dims[2] < 1:
        raise ValueError(f"shape must be 3 axes with at least 8 voxels in-plane, got {list(shape)}.")
    rng = np.random.default_rng(seed)
    size = np.asarray(dims, dtype=np.float64)
    center = size / 2.0 + rng.uniform(-0.05, 0.05, 3) * size
    label = np.zeros(dims, np.uint8)
    if kind == "ct":
        body = _ellipsoid(dims, size / 2.0, size * np.array([0.46, 0.4, 0.6]))
        organ = _ellipsoid(dims, center, size * rng.uniform(0.18, 0.26, 3))
        lesion = _ellipsoid(dims, center + rng.uniform(-0.04, 0.04, 3) * size, size * rng.uniform(0.06, 0.09, 3))
        label[organ] = 1
        label[organ & lesion] = 2
        image = np.full(dims, -1000.0)
        image[body] = 40.0
        image[label == 1] = rng.uniform(60.0, 80.0)
        image[label == 2] = rng.uniform(110.0, 130.0)
        image += rng.normal(0.0, 12.0, dims)
        return np.clip(np.round(image), -1024, 3071).astype(np.int16), label
    image = np.full(dims, 20.0)
    tissue = _ellipsoid(dims[:2], size[:2] / 2.0, size[:2] * 0.42)
    image[tissue] = 250.0
    for z in range(dims[2]):
        scale = 1.0 - 0.5 * z / max(dims[2] - 1, 1)  # towards the apex the heart gets smaller
        wall = _ellipsoid(dims[:2], center[:2], size[:2] * 0.22 * scale)
        cavity = _ellipsoid(dims[:2], center[:2], size[:2] * 0.14 * scale)
        label[..., z][wall] = 2
        label[..., z][cavity] = 1
    image[label == 2] = rng.uniform(150.0, 200.0)
    image[label == 1] = rng.uniform(550.0, 650.0)
    grids = np.meshgrid(*[np.linspace(-1.0, 1.0, s) for s in dims], indexing="ij")
    bias = np.exp(sum(c * g for c, g in zip(rng.uniform(-0.25, 0.25, 3), grids)))
    image = image * bias + rng.normal(0.0, 15.0, dims)
    return np.clip(image, 0.0, None).astype(np.float32), label


def write_decathlon_dataset(
    root: PathLike,
    kind: str = "ct",
    *,
    num_labeled: int = 3,
    num_unlabeled: int = 3,
    num_validation: int = 1,
    num_test: int = 1,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    validation: str = "list",
    seed: int = 0,
) -> Path:
    """Write a small Decathlon folder in which only some training cases have a label (for tests and demos).

    Cases ``<kind>_000 ...``: the first ``num_labeled`` have a label, the next ``num_validation`` too (they are the
    validation cases), the rest are unlabeled (no label file, no ``label`` entry); ``num_test`` more go to
    ``imagesTs/``.

    Args:
        root: the output folder (created; must be new or empty).
        kind: ``"ct"`` (default shape 48x48x40, 1.5 mm isotropic voxels, classes liver / tumour) or ``"mr"``
            (default 64x64x8, 1.25 x 1.25 x 8 mm: few thick slices, classes cavity / wall).
        num_labeled, num_unlabeled, num_validation, num_test: the number of cases of each kind.
        shape: the volumes' shape (default: by kind).
        spacing: the voxel size in mm (default: by kind).
        validation: ``"list"`` (a ``val.list``) or ``"json"`` (a ``validation`` section in ``dataset.json``).
        seed: seed of the cases (case ``i`` uses ``(seed, i)``).

    Returns:
        ``root``.

    Raises:
        ValueError: for a bad kind, count, shape, spacing or validation mode.
        InputValueError: when ``root`` is not empty.
    """
    if kind not in DECATHLON_KINDS:
        raise ValueError(f"kind must be one of {DECATHLON_KINDS}, got {kind!r}.")
    if validation not in ("list", "json"):
        raise ValueError(f"validation must be 'list' or 'json', got {validation!r}.")
    counts = {"num_labeled": num_labeled, "num_unlabeled": num_unlabeled, "num_validation": num_validation,
              "num_test": num_test}
    for name, value in counts.items():
        if int(value) < 0:
            raise ValueError(f"{name} must be >= 0, got {value}.")
    dims = tuple(int(s) for s in (shape or ((48, 48, 40) if kind == "ct" else (64, 64, 8))))
    voxel = tuple(float(s) for s in (spacing or ((1.5, 1.5, 1.5) if kind == "ct" else (1.25, 1.25, 8.0))))
    if len(voxel) != 3 or not all(math.isfinite(s) and s > 0 for s in voxel):
        raise ValueError(f"spacing must be 3 positive numbers, got {spacing!r}.")
    affine = np.diag([*voxel, 1.0])
    affine[:3, 3] = [-(d - 1) * s / 2.0 for d, s in zip(dims, voxel)]
    target, partial = _new_folder(root)
    try:
        training: list[dict[str, str]] = []
        json_validation: list[dict[str, str]] = []
        validation_ids: list[str] = []
        total = num_labeled + num_validation + num_unlabeled
        for i in range(total + num_test):
            case = f"{kind}_{i:03d}"
            image, label = make_decathlon_case(kind, dims, seed=(seed, i))
            if i >= total:
                write_nifti(partial / "imagesTs" / f"{case}.nii.gz", image, affine)
                continue
            write_nifti(partial / "imagesTr" / f"{case}.nii.gz", image, affine)
            entry = {"image": f"./imagesTr/{case}.nii.gz"}
            if i < num_labeled + num_validation:
                write_nifti(partial / "labelsTr" / f"{case}.nii.gz", label, affine)
                entry["label"] = f"./labelsTr/{case}.nii.gz"
            if num_labeled <= i < num_labeled + num_validation:
                validation_ids.append(case)
                if validation == "json":
                    json_validation.append(entry)
                    continue
            training.append(entry)
        test = [f"./imagesTs/{kind}_{i:03d}.nii.gz" for i in range(total, total + num_test)]
        if kind == "ct":
            modality, classes = {0: "CT"}, {0: "background", 1: "liver", 2: "tumour"}
            description = "Synthetic CT-like volumes (Hounsfield units, isotropic voxels), some labels missing"
        else:
            modality, classes = {0: "MRI"}, {0: "background", 1: "cavity", 2: "wall"}
            description = "Synthetic MR-like volumes (few thick slices), some labels missing"
        extra = {"validation": json_validation} if validation == "json" else {}
        _write_json(partial / DATASET_JSON, _dataset_json(f"synthetic_{kind}", description, modality, classes,
                                                          training, test, **extra))
        if validation == "list" and validation_ids:
            _write_id_list(partial / "val.list", validation_ids)
        _finish(target, partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target


# -------------------------------------------------------------------------------------------------- converters
def _read_source(path: str, dataset: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The array of a source file and its affine (None for HDF5 files, which store no geometry)."""
    if path.lower().endswith((".h5", ".hdf5")):
        import h5py

        with h5py.File(path, "r") as handle:
            return np.asarray(handle[dataset][()]), None
    from monai.transforms import LoadImage

    image = LoadImage(image_only=True)(path)
    return np.asarray(image), np.asarray(image.affine, dtype=np.float64)


def _map_label(label: np.ndarray, mapping: Mapping[int, int] | None, path: str) -> np.ndarray:
    if not mapping:
        return label.astype(np.uint8)
    out = np.zeros(label.shape, np.uint8)
    values = np.unique(label)
    allowed = set(mapping) | set(mapping.values())
    unexpected = [v for v in values.tolist() if v not in allowed]
    if unexpected:
        raise InputValueError(f"label {path} holds values {unexpected[:10]}; expected only {sorted(mapping)}: fix the "
                              "label file.")
    for value in values.tolist():
        out[label == value] = mapping.get(int(value), int(value))
    return out


def _convert(
    module: Any,
    name: str,
    src: PathLike,
    dst: PathLike,
    num_labeled: int,
    layout: str,
    val_list: str | None,
    h5_affine: Callable[[int], np.ndarray],
    h5_order: Sequence[int] | None,
    h5_spacing_known: bool,
    classes: Mapping[int, str],
    description: str,
) -> DecathlonDataset:
    chosen = module.detect_layout(src) if layout == "auto" else layout
    lists = module.datalists(src, num_labeled, layout=chosen, val_list=val_list)
    mapping = module.RAW_LABEL_MAPS.get(chosen)
    target, partial = _new_folder(dst)
    spacing_known = True
    try:
        entries: list[dict[str, str]] = []
        for key in ("labeled", "unlabeled", "validation"):
            for item in lists[key]:
                case = str(item["case"])
                image, affine = _read_source(str(item["image"]), "image")
                if affine is None:
                    affine = h5_affine(image.ndim)
                    spacing_known = spacing_known and h5_spacing_known
                    image = np.transpose(image, h5_order) if h5_order is not None else image
                write_nifti(partial / "imagesTr" / f"{case}.nii.gz", image.astype(np.float32), affine)
                entry = {"image": f"./imagesTr/{case}.nii.gz"}
                if "label" in item:
                    label, label_affine = _read_source(str(item["label"]), "label")
                    if label_affine is None and h5_order is not None:
                        label = np.transpose(label, h5_order)
                    label = _map_label(label, mapping, str(item["label"]))
                    write_nifti(partial / "labelsTr" / f"{case}.nii.gz", label, affine)
                    entry["label"] = f"./labelsTr/{case}.nii.gz"
                entries.append(entry)
        note = ("" if spacing_known else " The source HDF5 files store no voxel size: spacing 1 was written, and "
                "spacing_known is false so that a plan does not take it for a real voxel size.")
        content = _dataset_json(
            name, description + note, {0: "MRI"}, classes, entries, [],
            spacing_known=spacing_known, source=str(Path(src).expanduser().resolve()), source_layout=chosen,
            labeled_cases=len(lists["labeled"]),
        )
        _write_json(partial / DATASET_JSON, content)
        if lists["validation"]:
            _write_id_list(partial / "val.list", [str(item["case"]) for item in lists["validation"]])
        _finish(target, partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    dataset = read_decathlon(target)
    logger.info(f"converted {src} ({chosen} layout) to {dataset.describe()}")
    return dataset


def convert_la_to_decathlon(
    src: PathLike,
    dst: PathLike,
    num_labeled: int,
    *,
    layout: str = "auto",
    val_list: str | None = "val.list",
    h5_spacing: float | Sequence[float] = 0.625,
) -> DecathlonDataset:
    """Convert an LA folder (HDF5, challenge NRRD or datalist layout) to a Decathlon folder of NIfTI files.

    The labeled cases are the first ``num_labeled`` of ``train.list`` (the LA dataset module's rule, as the
    community's ``train_N_label.list``): they get ``labelsTr/`` files; every other ``train.list`` case is written
    without a label; the validation cases (``val.list``) keep theirs and are listed in ``<dst>/val.list``.
    Geometry: NRRD / NIfTI sources keep their affine; HDF5 files store none, so ``h5_spacing`` (the benchmark's
    0.625 mm isotropic voxels) gives ``diag(spacing)``. Labels are 0 background / 1 left atrium (the challenge's 255
    mapped to 1).

    Args:
        src: the LA folder.
        dst: the output folder (new or empty; written in full or not at all).
        num_labeled: number of labeled cases.
        layout: the source layout (``"auto"`` detects it).
        val_list: the source's validation list name, or None.
        h5_spacing: voxel size of HDF5 sources (mm), one number or one per axis.

    Returns:
        The converted folder, read back.

    Raises:
        InputError: for a bad source (see :func:`crossmatch_ext.data.datasets.la.datalists`) or a non-empty ``dst``.
    """
    from .datasets import la

    spacing = np.broadcast_to(np.asarray(h5_spacing, dtype=np.float64), (3,))

    def affine(ndim: int) -> np.ndarray:
        return np.diag([*spacing[:ndim], 1.0])

    return _convert(la, "LA", src, dst, num_labeled, layout, val_list, affine, None, True, {0: "background",
                    1: "left atrium"}, "2018 Left Atrial Segmentation Challenge (3D LGE-MRI), converted by "
                    f"crossmatch_ext: the first {num_labeled} cases of train.list are labeled.")


def convert_acdc_to_decathlon(
    src: PathLike,
    dst: PathLike,
    num_labeled_patients: int,
    *,
    layout: str = "auto",
    val_list: str | None = "val.list",
) -> DecathlonDataset:
    """Convert an ACDC folder (HDF5, challenge NIfTI or datalist layout) to a Decathlon folder of NIfTI volumes.

    The labeled volumes are both frames of the first ``num_labeled_patients`` patients of ``train.list`` (the ACDC
    dataset module's rule); every other ``train.list`` volume is written without a label; the validation volumes
    keep theirs and are listed in ``<dst>/val.list``. HDF5 stacks ``(slices, H, W)`` are written as ``(W, H,
    slices)``, the challenge's NIfTI axis order (slice axis last, as the ACDC bundle reads them). The HDF5 files
    store no voxel size: their volumes get spacing 1 and ``dataset.json`` says ``"spacing_known": false``, which a
    plan reads as "spacing unknown" (it then finds the slice axis from the shape). NIfTI sources keep their geometry.

    Args:
        src: the ACDC folder.
        dst: the output folder (new or empty; written in full or not at all).
        num_labeled_patients: number of labeled patients.
        layout: the source layout (``"auto"`` detects it).
        val_list: the source's validation list name, or None.

    Returns:
        The converted folder, read back.

    Raises:
        InputError: for a bad source (see :func:`crossmatch_ext.data.datasets.acdc.datalists`) or a non-empty
            ``dst``.
    """
    from .datasets import acdc

    def affine(ndim: int) -> np.ndarray:
        return np.eye(ndim + 1)

    return _convert(acdc, "ACDC", src, dst, num_labeled_patients, layout, val_list, affine, (2, 1, 0), False,
                    {0: "background", 1: "right ventricle", 2: "myocardium", 3: "left ventricle"},
                    "Automated Cardiac Diagnosis Challenge (cine-MRI, short axis), converted by crossmatch_ext: "
                    f"both frames of the first {num_labeled_patients} patients of train.list are labeled.")
