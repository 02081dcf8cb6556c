"""Labeled / unlabeled / validation data lists for LA and ACDC, from the layouts users actually have.

Both builders return ``{"labeled": [...], "unlabeled": [...], "validation": [...]}``; every item is a dict with
``image`` (a path), ``label`` (labeled and validation items only) and ``case`` (the case or volume identifier,
used to name rows of evaluation CSVs). The load transforms live in the bundle configs; for HDF5 files the image
and the label point at the same file and :class:`crossmatch_ext.data.H5Reader` picks the dataset.

Layouts (``layout="auto"`` detects them in this order):

* ``"json"``: a MONAI datalist (a ``.json`` file, or a folder with ``datalist.json``), read with
  :func:`monai.data.load_decathlon_datalist` (paths relative to the JSON's folder). ``training`` items with a
  ``label`` are the labeled candidates, in file order; the first ``num_labeled`` are labeled (ACDC: all items of
  the first ``num_labeled_patients`` patients) and the remaining ones are used as unlabeled (their label dropped);
  ``training`` items without a label are unlabeled. ``validation`` items (optional) are the validation list.
  For LA, ``"nifti"`` names the same layout for NIfTI images and also finds ``<dir>/nifti/datalist.json`` (the
  synthetic generator's NIfTI copies); it is never detected, ``auto`` reports such a folder by its own layout.
* ``"h5"``: the community HDF5 layout. LA: ``<dir>/<ID>/mri_norm2.h5``; ACDC: ``<dir>/volumes/<ID>.h5``, or
  ``<dir>/data/<ID>.h5`` (the CrossMatch repository's layout, whose ``data/slices/`` is ignored).
* ``"studies"``: a MONAI Label studies folder (images, and final labels in ``labels/final/``): every study with a
  final label is labeled (``num_labeled`` is not used; 20 % of them validate), every other study is unlabeled
  (:mod:`crossmatch_ext.data.studies`).
* ``"nrrd"`` (LA) / ``"nifti"`` (ACDC): the challenges' own files. LA: ``<dir>/<ID>/lgemri.nrrd`` with the label
  ``laendo.nrrd`` (values 0/255: binarise in the pipeline); ACDC: ``<dir>/patientNNN/patientNNN_frameMM.nii.gz``
  with ``patientNNN_frameMM_gt.nii.gz`` (the ``_4d.nii.gz`` cine files are ignored).

For the file layouts the training pool is ``<dir>/train.list`` (one ID per line) when present, else every case
found on disk (sorted) that is not in the validation list; the validation list is ``<dir>/<val_list>``
(``val.list`` by default, e.g. ``test.list`` for the LA test cases; None for no validation list).

Labeled / unlabeled rule: the labeled cases are the first ``num_labeled`` IDs of ``train.list`` (LA) or all
volumes of the first ``num_labeled_patients`` distinct patients in ``train.list`` order (ACDC), which is exactly
how the community's ``train_N_label.list`` files were made; the unlabeled cases are **all other** IDs of
``train.list``. The community ``train_N_unlabel.list`` files are deliberately not read: the LA
``train_16_unlabel.list`` is not the complement of ``train_16_label.list`` (12 of its cases are also labeled and 12
training cases are missing from both lists), which would leak labeled cases into the unlabeled stream.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.config import PathLike
from monai.data import load_decathlon_datalist

from ..errors import InputFileNotFoundError, InputValueError
from .studies import is_studies_folder, studies_datalists

__all__ = [
    "ACDC_LAYOUTS",
    "LA_LAYOUTS",
    "acdc_datalists",
    "case_id_from_path",
    "detect_acdc_layout",
    "detect_la_layout",
    "la_datalists",
    "patient_id",
    "read_id_list",
]

logger = logging.getLogger(__name__)

LA_LAYOUTS: tuple[str, ...] = ("auto", "h5", "nrrd", "nifti", "json", "studies")
ACDC_LAYOUTS: tuple[str, ...] = ("auto", "h5", "nifti", "json", "studies")

LA_H5_NAME = "mri_norm2.h5"
LA_IMAGE_NAME = "lgemri.nrrd"
LA_LABEL_NAME = "laendo.nrrd"
DATALIST_NAME = "datalist.json"
TRAIN_LIST = "train.list"

_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".h5", ".hdf5", ".npy", ".npz")
_GENERIC_STEMS = {"mri_norm2", "lgemri", "laendo", "image", "img", "imaging", "label", "seg", "segmentation"}
_PATIENT_PATTERN = re.compile(r"^(.*?)_frame\d+$")

Item = dict[str, Any]


def case_id_from_path(path: PathLike) -> str:
    """Case identifier of an image path: the file name without its extension, or the parent folder's name when the
    file name is generic (``<CASE>/mri_norm2.h5``, ``<CASE>/lgemri.nrrd``, ``<CASE>/image.nii.gz``).

    Args:
        path: image path.

    Returns:
        The identifier.
    """
    p = Path(str(path))
    name = p.name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    if name.lower() in _GENERIC_STEMS and p.parent.name:
        return p.parent.name
    return name


def patient_id(case: str) -> str:
    """ACDC patient of a volume identifier: ``patient012_frame01`` -> ``patient012`` (else the identifier itself).

    Args:
        case: volume identifier.

    Returns:
        The patient identifier.
    """
    match = _PATIENT_PATTERN.match(case)
    return match.group(1) if match else case


def read_id_list(path: PathLike) -> list[str]:
    """Read a split list: one identifier per line; blank lines and ``#`` comments are skipped.

    A line holding a path (``data/patient001_frame01.h5``) is reduced to its identifier.

    Args:
        path: the list file.

    Returns:
        The identifiers in file order (duplicates removed, first occurrence kept).

    Raises:
        FileNotFoundError: when the file does not exist.
    """
    file = Path(path)
    if not file.is_file():
        raise InputFileNotFoundError(f"split list not found: {file}")
    ids: list[str] = []
    for line in file.read_text().splitlines():
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if "/" in entry or "\\" in entry or entry.lower().endswith(_SUFFIXES):
            entry = case_id_from_path(entry)
        ids.append(entry)
    return list(dict.fromkeys(ids))


def _resolve_json(dataset_dir: Path) -> Path | None:
    if dataset_dir.is_file() and dataset_dir.suffix.lower() == ".json":
        return dataset_dir
    candidate = dataset_dir / DATALIST_NAME
    return candidate if candidate.is_file() else None


def _check_dir(dataset_dir: PathLike) -> Path:
    path = Path(dataset_dir).expanduser()
    if not path.exists():
        raise InputFileNotFoundError(
            f"dataset_dir not found: {path}. Set --dataset_dir to the folder that holds the data (or to a datalist "
            "JSON); see the bundle's docs/README.md, section Data."
        )
    if path.is_dir() and not any(path.iterdir()):
        raise InputValueError(
            f"dataset_dir is empty: {path}. Set --dataset_dir to the folder that holds the data, or generate a test "
            "set with `python -m crossmatch_ext.data.synthetic --help`."
        )
    return path


def detect_la_layout(dataset_dir: PathLike) -> str:
    """Detect the LA layout of ``dataset_dir`` (``"json"``, ``"studies"``, ``"h5"`` or ``"nrrd"``).

    Args:
        dataset_dir: a datalist JSON file, or a folder.

    Returns:
        The layout name.

    Raises:
        FileNotFoundError: when the path does not exist.
        ValueError: when no known layout is found.
    """
    path = _check_dir(dataset_dir)
    if _resolve_json(path) is not None:
        return "json"
    if is_studies_folder(path):
        return "studies"
    if path.is_dir():
        if any(path.glob(f"*/{LA_H5_NAME}")):
            return "h5"
        if any(path.glob(f"*/{LA_IMAGE_NAME}")):
            return "nrrd"
    raise InputValueError(
        f"dataset_dir {path}: no LA data layout found: expected a datalist JSON ({DATALIST_NAME}), case folders with "
        f"{LA_H5_NAME} (HDF5 layout), or case folders with {LA_IMAGE_NAME} + {LA_LABEL_NAME} (challenge layout). "
        "Point --dataset_dir at such a folder."
    )


def _acdc_volume_dir(path: Path) -> Path | None:
    for sub in ("volumes", "data"):
        candidate = path / sub
        if candidate.is_dir() and any(candidate.glob("*.h5")):
            return candidate
    return None


def detect_acdc_layout(dataset_dir: PathLike) -> str:
    """Detect the ACDC layout of ``dataset_dir`` (``"json"``, ``"studies"``, ``"h5"`` or ``"nifti"``).

    Args:
        dataset_dir: a datalist JSON file, or a folder.

    Returns:
        The layout name.

    Raises:
        FileNotFoundError: when the path does not exist.
        ValueError: when no known layout is found.
    """
    path = _check_dir(dataset_dir)
    if _resolve_json(path) is not None:
        return "json"
    if is_studies_folder(path):
        return "studies"
    if path.is_dir():
        if _acdc_volume_dir(path) is not None:
            return "h5"
        if any(path.glob("*/*_frame[0-9][0-9].nii.gz")):
            return "nifti"
    raise InputValueError(
        f"dataset_dir {path}: no ACDC data layout found: expected a datalist JSON ({DATALIST_NAME}), HDF5 volumes in "
        "volumes/ or data/, or patient folders with patientNNN_frameMM.nii.gz + _gt.nii.gz (challenge layout). "
        "Point --dataset_dir at such a folder."
    )


def _check_layout(layout: str, allowed: Sequence[str]) -> str:
    if layout not in allowed:
        raise InputValueError(f"data_layout must be one of {list(allowed)}, got {layout!r}.")
    return layout


def _require(path: Path, case: str, referenced_by: str) -> str:
    if not path.is_file():
        raise InputFileNotFoundError(
            f"file of case {case!r} not found: {path} (the case is listed in {referenced_by}): add the file, or "
            "remove the case from that list."
        )
    return str(path)


def _pool_and_validation(
    root: Path, val_list: str | None, cases_on_disk: list[str]
) -> tuple[list[str], str, list[str], str]:
    """Training pool and validation IDs of a file layout, with the names of their sources for messages."""
    validation: list[str] = []
    val_source = "no validation list"
    if val_list is not None:
        val_path = root / val_list
        if not val_path.is_file():
            present = sorted(p.name for p in root.glob("*.list"))
            raise InputFileNotFoundError(
                f"validation list not found: {val_path} (list files present: {present}); set --validation_list to "
                "one of them, or to None for no validation list."
            )
        validation = read_id_list(val_path)
        val_source = str(val_path)
    train_path = root / TRAIN_LIST
    if train_path.is_file():
        pool = read_id_list(train_path)
        pool_source = str(train_path)
    else:
        held_out = set(validation)
        pool = [c for c in cases_on_disk if c not in held_out]
        pool_source = f"the case folders of {root} (no {TRAIN_LIST})"
    overlap = sorted(set(pool) & set(validation))
    if overlap:
        logger.warning(f"{len(overlap)} case(s) are in both {pool_source} and {val_source}: {overlap[:5]}")
    return pool, pool_source, validation, val_source


def _check_count(num: int, available: int, what: str, source: str) -> None:
    if isinstance(num, bool) or not isinstance(num, int):
        raise InputValueError(f"the number of labeled {what} must be an integer, got {num!r}.")
    if available == 0:
        raise InputValueError(f"no labeled {what}: {source} lists none; add cases to it.")
    if num <= 0 or num > available:
        raise InputValueError(
            f"the number of labeled {what} must be between 1 and {available} (the {what} in {source}), got {num}: "
            f"set --num_labeled{'_patients' if what == 'patients' else ''} in that range, or add cases to the list."
        )


def _log_summary(name: str, layout: str, root: Path, lists: dict[str, list[Item]]) -> None:
    logger.info(
        f"{name} data lists ({layout} layout, {root}): {len(lists['labeled'])} labeled, "
        f"{len(lists['unlabeled'])} unlabeled, {len(lists['validation'])} validation"
    )


def _json_items(json_path: Path) -> tuple[list[Item], list[Item]]:
    training = load_decathlon_datalist(json_path, is_segmentation=True, data_list_key="training")
    try:
        validation = load_decathlon_datalist(json_path, is_segmentation=True, data_list_key="validation")
    except ValueError:  # no "validation" key
        validation = []
    for section, items in (("training", training), ("validation", validation)):
        for i, item in enumerate(items):
            if "image" not in item:
                raise InputValueError(f"item {i} of {section!r} in {json_path} has no 'image' entry: {item}")
            if section == "validation" and "label" not in item:
                raise InputValueError(f"item {i} of 'validation' in {json_path} has no 'label' entry: {item}")
            item["image"] = str(item["image"])
            if "label" in item:
                item["label"] = str(item["label"])
            item.setdefault("case", case_id_from_path(item["image"]))
            item["case"] = str(item["case"])
            for key in ("image", "label"):
                if key in item:
                    _require(Path(item[key]), item["case"], str(json_path))
    return training, validation


def _json_lists(json_path: Path, num_labeled: int, group: bool) -> dict[str, list[Item]]:
    training, validation = _json_items(json_path)
    candidates = [item for item in training if "label" in item]
    if group:  # ACDC: whole patients
        patients = list(dict.fromkeys(str(item.get("patient", patient_id(item["case"]))) for item in candidates))
        _check_count(num_labeled, len(patients), "patients", f"the 'training' items with a label of {json_path}")
        chosen = set(patients[:num_labeled])
        labeled = [i for i in candidates if str(i.get("patient", patient_id(i["case"]))) in chosen]
    else:
        _check_count(num_labeled, len(candidates), "cases", f"the 'training' items with a label of {json_path}")
        labeled = candidates[:num_labeled]
    labeled_ids = {id(item) for item in labeled}
    unlabeled = [{k: v for k, v in item.items() if k != "label"} for item in training if id(item) not in labeled_ids]
    return {"labeled": labeled, "unlabeled": unlabeled, "validation": validation}


def la_datalists(
    dataset_dir: PathLike, num_labeled: int, layout: str = "auto", val_list: str | None = "val.list"
) -> dict[str, list[Item]]:
    """Build the LA labeled / unlabeled / validation lists (see the module docstring for layouts and rules).

    Args:
        dataset_dir: the data folder (or a datalist JSON file).
        num_labeled: number of labeled cases: the first ``num_labeled`` of ``train.list`` (4, 8, 16 in the paper's
            5 %, 10 %, 20 % settings with the 80-case list).
        layout: ``"auto"``, ``"h5"``, ``"nrrd"``, ``"nifti"``, ``"json"`` or ``"studies"``. ``"nifti"`` is the JSON
            layout for NIfTI images: the datalist is ``dataset_dir`` itself (a ``.json`` file or a folder with
            ``datalist.json``) or ``<dataset_dir>/nifti/datalist.json``, where the synthetic generator writes its
            NIfTI copies.
        val_list: name of the validation list in ``dataset_dir`` (``"val.list"``, ``"test.list"``), or None.
            Not used by the JSON layouts (their ``validation`` section is).

    Returns:
        ``{"labeled": [{"image", "label", "case"}], "unlabeled": [{"image", "case"}],
        "validation": [{"image", "label", "case"}]}``.

    Raises:
        FileNotFoundError: when the folder, a list or a referenced file is missing (the message names the list).
        ValueError: for an unknown layout, or ``num_labeled`` outside ``1 .. number of training cases``.
    """
    _check_layout(layout, LA_LAYOUTS)
    path = _check_dir(dataset_dir)
    chosen = detect_la_layout(path) if layout == "auto" else layout
    if chosen in ("json", "nifti"):
        json_path = _resolve_json(path)
        if json_path is None and chosen == "nifti" and path.is_dir():
            json_path = _resolve_json(path / "nifti")
        if json_path is None:
            also = f" or {path / 'nifti' / DATALIST_NAME}" if chosen == "nifti" else ""
            raise InputFileNotFoundError(
                f"no datalist JSON at {path} (expected a .json file or {path / DATALIST_NAME}{also}); layout "
                f"{chosen!r} reads the images a MONAI datalist lists."
            )
        lists = _json_lists(json_path, num_labeled, group=False)
        _log_summary("LA", chosen, json_path, lists)
        return lists
    if chosen == "studies":
        return studies_datalists(path)
    if not path.is_dir():
        raise InputValueError(f"layout {chosen!r} needs a folder, got the file {path}.")
    image_name, label_name = (LA_H5_NAME, LA_H5_NAME) if chosen == "h5" else (LA_IMAGE_NAME, LA_LABEL_NAME)
    on_disk = sorted(p.parent.name for p in path.glob(f"*/{image_name}"))
    pool, pool_source, validation, val_source = _pool_and_validation(path, val_list, on_disk)
    _check_count(num_labeled, len(pool), "cases", pool_source)

    def item(case: str, source: str, with_label: bool) -> Item:
        entry: Item = {"image": _require(path / case / image_name, case, source)}
        if with_label:
            entry["label"] = _require(path / case / label_name, case, source)
        entry["case"] = case
        return entry

    lists = {
        "labeled": [item(c, pool_source, True) for c in pool[:num_labeled]],
        "unlabeled": [item(c, pool_source, False) for c in pool[num_labeled:]],
        "validation": [item(c, val_source, True) for c in validation],
    }
    _log_summary("LA", chosen, path, lists)
    return lists


def _acdc_nifti_cases(root: Path) -> dict[str, tuple[Path, Path]]:
    cases: dict[str, tuple[Path, Path]] = {}
    for image in sorted(root.glob("*/*_frame[0-9][0-9].nii.gz")):
        case = image.name[: -len(".nii.gz")]
        cases[case] = (image, image.with_name(f"{case}_gt.nii.gz"))
    return cases


def acdc_datalists(
    dataset_dir: PathLike, num_labeled_patients: int, layout: str = "auto", val_list: str | None = "val.list"
) -> dict[str, list[Item]]:
    """Build the ACDC labeled / unlabeled / validation lists of volumes (see the module docstring).

    Training is 2D on slices of these volumes (sliced by the pipeline), evaluation per volume.

    Args:
        dataset_dir: the data folder (or a datalist JSON file).
        num_labeled_patients: number of labeled patients: all volumes (both frames) of the first
            ``num_labeled_patients`` distinct patients in ``train.list`` order (1, 3, 7 in the paper's settings).
            Without ``train.list`` the patients are sorted.
        layout: ``"auto"``, ``"h5"``, ``"nifti"``, ``"json"`` or ``"studies"``.
        val_list: name of the validation list (volume IDs) in ``dataset_dir``, or None. Not used by the JSON
            layout.

    Returns:
        ``{"labeled": [{"image", "label", "case"}], "unlabeled": [{"image", "case"}],
        "validation": [{"image", "label", "case"}]}``; ``case`` is the volume ID (``patient012_frame01``).

    Raises:
        FileNotFoundError: when the folder, a list or a referenced file is missing (the message names the list).
        ValueError: for an unknown layout, or ``num_labeled_patients`` outside ``1 .. number of patients``.
    """
    _check_layout(layout, ACDC_LAYOUTS)
    path = _check_dir(dataset_dir)
    chosen = detect_acdc_layout(path) if layout == "auto" else layout
    if chosen == "json":
        json_path = _resolve_json(path)
        if json_path is None:
            raise InputFileNotFoundError(
                f"no datalist JSON at {path} (expected a .json file or {path / DATALIST_NAME})."
            )
        lists = _json_lists(json_path, num_labeled_patients, group=True)
        _log_summary("ACDC", chosen, json_path, lists)
        return lists
    if chosen == "studies":
        return studies_datalists(path)
    if not path.is_dir():
        raise InputValueError(f"layout {chosen!r} needs a folder, got the file {path}.")

    if chosen == "h5":
        volume_dir = _acdc_volume_dir(path)
        if volume_dir is None:
            raise InputFileNotFoundError(f"no HDF5 volumes found in {path / 'volumes'} or {path / 'data'}.")

        def files(case: str) -> tuple[Path, Path]:
            file = volume_dir / f"{case}.h5"
            return file, file

        on_disk = sorted(p.stem for p in volume_dir.glob("*.h5"))
    else:
        nifti = _acdc_nifti_cases(path)

        def files(case: str) -> tuple[Path, Path]:
            folder = path / patient_id(case)
            return nifti.get(case, (folder / f"{case}.nii.gz", folder / f"{case}_gt.nii.gz"))

        on_disk = sorted(nifti)

    pool, pool_source, validation, val_source = _pool_and_validation(path, val_list, on_disk)
    patients = list(dict.fromkeys(patient_id(c) for c in pool))
    _check_count(num_labeled_patients, len(patients), "patients", pool_source)
    chosen_patients = set(patients[:num_labeled_patients])

    def item(case: str, source: str, with_label: bool) -> Item:
        image, label = files(case)
        entry: Item = {"image": _require(image, case, source)}
        if with_label:
            entry["label"] = _require(label, case, source)
        entry["case"] = case
        return entry

    lists = {
        "labeled": [item(c, pool_source, True) for c in pool if patient_id(c) in chosen_patients],
        "unlabeled": [item(c, pool_source, False) for c in pool if patient_id(c) not in chosen_patients],
        "validation": [item(c, val_source, True) for c in validation],
    }
    _log_summary("ACDC", chosen, path, lists)
    return lists
