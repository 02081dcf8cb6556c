"""Dataset-independent rules for building labeled / unlabeled / validation data lists.

Every dataset module (:mod:`crossmatch_ext.data.datasets.la`, :mod:`~crossmatch_ext.data.datasets.acdc`, or a
bundle's own ``scripts/dataset.py``) builds its lists from these pieces:

* :func:`check_dataset_dir`, :func:`check_layout`: the ``dataset_dir`` and ``data_layout`` settings;
* :func:`detect_shared_layout` and :func:`shared_layout_datalists`: the layouts every dataset has, a MONAI datalist
  JSON (``"json"``) and a MONAI Label studies folder (``"studies"``), each in one call;
* :func:`file_layout_datalists`: the lists of a folder of cases, from ``train.list`` (or the cases on disk) and a
  validation list, with the labeled cases chosen as the first ``num_labeled`` cases (or groups of cases);
* :func:`read_id_list`, :func:`case_id_from_path`, :func:`require_file`, :func:`check_labeled_count`,
  :func:`log_summary` for dataset modules with rules of their own.

Every item is a dict with ``image`` (a path), ``label`` (labeled and validation items only) and ``case`` (the case
identifier, used to name rows of evaluation CSVs). Summaries and warnings are logged on the logger
``crossmatch_ext.data.datalists``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from monai.config import PathLike
from monai.data import load_decathlon_datalist

from ...errors import InputFileNotFoundError, InputValueError
from ..studies import is_studies_folder, studies_datalists

__all__ = [
    "DATALIST_NAME",
    "FILE_SUFFIXES",
    "SHARED_LAYOUTS",
    "TRAIN_LIST",
    "Datalists",
    "Item",
    "TrainingSplit",
    "case_id_from_path",
    "check_dataset_dir",
    "check_folder",
    "check_labeled_count",
    "check_layout",
    "detect_layout_in",
    "detect_shared_layout",
    "file_layout_datalists",
    "find_datalist_json",
    "json_datalists",
    "json_layout_datalists",
    "log_summary",
    "read_id_list",
    "read_json_datalist",
    "requested_layout",
    "require_file",
    "select_labeled",
    "shared_layout_datalists",
    "training_split",
]

#: Logger of the data list summaries (the name the lists were always logged under).
logger = logging.getLogger("crossmatch_ext.data.datalists")

#: The layouts every dataset module can delegate to :func:`shared_layout_datalists`.
SHARED_LAYOUTS: tuple[str, ...] = ("json", "studies")
#: File name of a MONAI datalist in a dataset folder.
DATALIST_NAME = "datalist.json"
#: File name of the training pool's list (one case ID per line) in a dataset folder.
TRAIN_LIST = "train.list"
#: Image file endings stripped from paths to make case identifiers.
FILE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".h5", ".hdf5", ".npy", ".npz")
_GENERIC_STEMS = {"mri_norm2", "lgemri", "laendo", "image", "img", "imaging", "label", "seg", "segmentation"}

Item = dict[str, Any]
Datalists = dict[str, list[Item]]


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
    for suffix in FILE_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    if name.lower() in _GENERIC_STEMS and p.parent.name:
        return p.parent.name
    return name


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
        if "/" in entry or "\\" in entry or entry.lower().endswith(FILE_SUFFIXES):
            entry = case_id_from_path(entry)
        ids.append(entry)
    return list(dict.fromkeys(ids))


def check_dataset_dir(dataset_dir: PathLike) -> Path:
    """Check the ``dataset_dir`` setting: it exists and, when a folder, is not empty.

    Args:
        dataset_dir: a folder or a file (a datalist JSON).

    Returns:
        The path, with ``~`` expanded.

    Raises:
        FileNotFoundError: when it does not exist.
        ValueError: when it is an empty folder.
    """
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


def check_folder(path: Path, layout: str) -> Path:
    """Check that a layout made of files in a folder was given a folder (not a datalist JSON file).

    Args:
        path: ``dataset_dir``.
        layout: the layout, for the message.

    Returns:
        ``path``.

    Raises:
        ValueError: when ``path`` is not a folder.
    """
    if not path.is_dir():
        raise InputValueError(f"layout {layout!r} needs a folder, got the file {path}.")
    return path


def check_layout(layout: str, allowed: Sequence[str]) -> str:
    """Check the ``data_layout`` setting against the layouts a dataset module knows.

    Args:
        layout: the requested layout.
        allowed: the allowed names (with ``"auto"`` where detection is allowed).

    Returns:
        ``layout``.

    Raises:
        ValueError: when ``layout`` is not allowed.
    """
    if layout not in allowed:
        raise InputValueError(f"data_layout must be one of {list(allowed)}, got {layout!r}.")
    return layout


def find_datalist_json(path: Path) -> Path | None:
    """The MONAI datalist of ``path``: ``path`` itself when it is a ``.json`` file, else ``<path>/datalist.json``.

    Args:
        path: a file or a folder.

    Returns:
        The JSON file, or None when there is none.
    """
    if path.is_file() and path.suffix.lower() == ".json":
        return path
    candidate = path / DATALIST_NAME
    return candidate if candidate.is_file() else None


def detect_shared_layout(path: Path) -> str | None:
    """Detect the layouts shared by every dataset: ``"json"`` (a datalist JSON) or ``"studies"`` (MONAI Label).

    Args:
        path: ``dataset_dir``, checked by :func:`check_dataset_dir`.

    Returns:
        The layout name, or None when ``path`` is neither (a dataset's own layout then applies).
    """
    if find_datalist_json(path) is not None:
        return "json"
    if is_studies_folder(path):
        return "studies"
    return None


def detect_layout_in(
    dataset_dir: PathLike, detectors: Sequence[tuple[str, Callable[[Path], bool]]], not_found: str
) -> str:
    """Detect the layout of ``dataset_dir``: a shared layout (:func:`detect_shared_layout`), else the first of a
    dataset's own layouts whose test accepts the folder.

    Args:
        dataset_dir: a datalist JSON file, or a folder.
        detectors: ``(layout, test of the folder)`` pairs, tried in order.
        not_found: the message when no layout matches (after ``"dataset_dir <path>: "``): what was expected.

    Returns:
        The layout name.

    Raises:
        FileNotFoundError: when the path does not exist.
        ValueError: when no layout matches.
    """
    path = check_dataset_dir(dataset_dir)
    shared = detect_shared_layout(path)
    if shared is not None:
        return shared
    if path.is_dir():
        for layout, test in detectors:
            if test(path):
                return layout
    raise InputValueError(f"dataset_dir {path}: {not_found}")


def requested_layout(
    dataset_dir: PathLike, layout: str, layouts: Sequence[str], detect: Callable[[Path], str]
) -> tuple[Path, str]:
    """Check ``dataset_dir`` and ``layout`` (``"auto"`` or one of ``layouts``) and resolve ``"auto"``.

    Args:
        dataset_dir: the data folder (or a datalist JSON file).
        layout: the ``data_layout`` setting.
        layouts: the dataset module's ``LAYOUTS``.
        detect: the dataset module's ``detect_layout``.

    Returns:
        ``(checked dataset_dir, layout to read)``.

    Raises:
        ValueError, FileNotFoundError: see :func:`check_layout` and :func:`check_dataset_dir`.
    """
    check_layout(layout, ("auto", *layouts))
    path = check_dataset_dir(dataset_dir)
    return path, detect(path) if layout == "auto" else layout


def require_file(path: Path, case: str, referenced_by: str) -> str:
    """Check that a file of a case exists.

    Args:
        path: the file.
        case: the case identifier, for the message.
        referenced_by: the list that names the case (a list file or a JSON), for the message.

    Returns:
        ``str(path)``.

    Raises:
        FileNotFoundError: when the file does not exist; the message names the case and the list.
    """
    if not path.is_file():
        raise InputFileNotFoundError(
            f"file of case {case!r} not found: {path} (the case is listed in {referenced_by}): add the file, or "
            "remove the case from that list."
        )
    return str(path)


class TrainingSplit(NamedTuple):
    """Training pool and validation IDs of a folder of cases, with where each came from (for messages)."""

    pool: list[str]
    pool_source: str
    validation: list[str]
    validation_source: str


def training_split(root: Path, val_list: str | None, cases_on_disk: Sequence[str]) -> TrainingSplit:
    """Training pool and validation IDs of a folder of cases.

    The pool is ``<root>/train.list`` when present, else every case on disk that is not in the validation list; the
    validation IDs are those of ``<root>/<val_list>``. A case in both is reported as a warning.

    Args:
        root: the dataset folder.
        val_list: name of the validation list in ``root`` (``"val.list"``, ``"test.list"``), or None.
        cases_on_disk: the case IDs found on disk, in the order to use without ``train.list``.

    Returns:
        The split.

    Raises:
        FileNotFoundError: when ``val_list`` is given and missing (the message lists the list files present).
    """
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
    return TrainingSplit(pool, pool_source, validation, val_source)


def check_labeled_count(num: int, available: int, what: str, source: str) -> None:
    """Check the number of labeled cases (or patients) asked for.

    Args:
        num: the number asked for (``num_labeled``, or ``num_labeled_patients`` when ``what`` is ``"patients"``).
        available: how many there are.
        what: what is counted (``"cases"``, ``"patients"``), for the message.
        source: where they are listed, for the message.

    Raises:
        ValueError: when ``num`` is not an integer in ``1 .. available``.
    """
    if isinstance(num, bool) or not isinstance(num, int):
        raise InputValueError(f"the number of labeled {what} must be an integer, got {num!r}.")
    if available == 0:
        raise InputValueError(f"no labeled {what}: {source} lists none; add cases to it.")
    if num <= 0 or num > available:
        raise InputValueError(
            f"the number of labeled {what} must be between 1 and {available} (the {what} in {source}), got {num}: "
            f"set --num_labeled{'_patients' if what == 'patients' else ''} in that range, or add cases to the list."
        )


def select_labeled(keys: Sequence[Hashable], num_labeled: int, what: str, source: str) -> list[bool]:
    """Choose the labeled entries: those whose key is one of the first ``num_labeled`` distinct keys.

    With one key per case (its position or its ID) these are the first ``num_labeled`` cases; with the patient as
    the key, all cases of the first ``num_labeled`` patients.

    Args:
        keys: a key per entry, in list order.
        num_labeled: the number of keys to label.
        what: what a key counts (``"cases"``, ``"patients"``), for messages.
        source: where the entries are listed, for messages.

    Returns:
        A flag per entry, True for labeled.

    Raises:
        ValueError: when ``num_labeled`` is not in ``1 .. number of distinct keys``.
    """
    distinct = list(dict.fromkeys(keys))
    check_labeled_count(num_labeled, len(distinct), what, source)
    chosen = set(distinct[:num_labeled])
    return [key in chosen for key in keys]


def log_summary(name: str, layout: str, root: Path, lists: Datalists) -> None:
    """Log the size of each list.

    Args:
        name: the dataset's name (``"LA"``).
        layout: the layout read.
        root: the folder or JSON read.
        lists: the lists.
    """
    logger.info(
        f"{name} data lists ({layout} layout, {root}): {len(lists['labeled'])} labeled, "
        f"{len(lists['unlabeled'])} unlabeled, {len(lists['validation'])} validation"
    )


def read_json_datalist(json_path: Path) -> tuple[list[Item], list[Item]]:
    """Read the ``training`` and ``validation`` items of a MONAI datalist, checking that every file exists.

    Paths are resolved relative to the JSON's folder (:func:`monai.data.load_decathlon_datalist`); items get a
    ``case`` (default: :func:`case_id_from_path` of the image).

    Args:
        json_path: the JSON file.

    Returns:
        ``(training items, validation items)``; validation is empty when the JSON has no ``validation`` key.

    Raises:
        ValueError: for an item without ``image`` (or a validation item without ``label``).
        FileNotFoundError: for a listed file that does not exist.
    """
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
                    require_file(Path(item[key]), item["case"], str(json_path))
    return training, validation


def json_datalists(json_path: Path, num_labeled: int, group_by: Callable[[Item], str] | None = None) -> Datalists:
    """The lists of a MONAI datalist JSON.

    ``training`` items with a ``label`` are the labeled candidates, in file order; the first ``num_labeled`` are
    labeled (with ``group_by``: all items of the first ``num_labeled`` groups, e.g. patients) and the remaining ones
    are used as unlabeled (their label dropped); ``training`` items without a label are unlabeled. ``validation``
    items are the validation list.

    Args:
        json_path: the JSON file.
        num_labeled: number of labeled cases, or of labeled groups with ``group_by``.
        group_by: the group of an item (counted as ``"patients"`` in messages), or None to count cases.

    Returns:
        ``{"labeled", "unlabeled", "validation"}`` lists.

    Raises:
        ValueError, FileNotFoundError: see :func:`read_json_datalist` and :func:`check_labeled_count`.
    """
    training, validation = read_json_datalist(json_path)
    candidates = [item for item in training if "label" in item]
    source = f"the 'training' items with a label of {json_path}"
    if group_by is None:
        flags = select_labeled(range(len(candidates)), num_labeled, "cases", source)
    else:
        flags = select_labeled([group_by(item) for item in candidates], num_labeled, "patients", source)
    labeled = [item for item, flag in zip(candidates, flags) if flag]
    labeled_ids = {id(item) for item in labeled}
    unlabeled = [{k: v for k, v in item.items() if k != "label"} for item in training if id(item) not in labeled_ids]
    return {"labeled": labeled, "unlabeled": unlabeled, "validation": validation}


def json_layout_datalists(
    name: str,
    dataset_dir: Path,
    num_labeled: int,
    layout: str = "json",
    subfolders: Sequence[str] = (),
    group_by: Callable[[Item], str] | None = None,
) -> Datalists:
    """The lists of the ``"json"`` layout: ``dataset_dir`` is a datalist JSON or a folder with ``datalist.json``.

    Args:
        name: the dataset's name, for the log.
        dataset_dir: the data folder or JSON file.
        num_labeled: see :func:`json_datalists`.
        layout: the layout's name, for messages (a dataset may give the JSON layout another name).
        subfolders: folders of ``dataset_dir`` also searched for ``datalist.json``, in order.
        group_by: see :func:`json_datalists`.

    Returns:
        ``{"labeled", "unlabeled", "validation"}`` lists.

    Raises:
        FileNotFoundError: when no datalist JSON is found.
    """
    json_path = find_datalist_json(dataset_dir)
    for sub in subfolders:
        if json_path is None and dataset_dir.is_dir():
            json_path = find_datalist_json(dataset_dir / sub)
    if json_path is None:
        also = "".join(f" or {dataset_dir / sub / DATALIST_NAME}" for sub in subfolders)
        raise InputFileNotFoundError(
            f"no datalist JSON at {dataset_dir} (expected a .json file or {dataset_dir / DATALIST_NAME}{also}); "
            f"layout {layout!r} reads the images a MONAI datalist lists."
        )
    lists = json_datalists(json_path, num_labeled, group_by=group_by)
    log_summary(name, layout, json_path, lists)
    return lists


def shared_layout_datalists(
    name: str,
    dataset_dir: Path,
    layout: str,
    num_labeled: int,
    group_by: Callable[[Item], str] | None = None,
) -> Datalists:
    """The lists of a layout of :data:`SHARED_LAYOUTS`, for a dataset module to delegate to in one call.

    * ``"json"``: :func:`json_layout_datalists`;
    * ``"studies"``: a MONAI Label studies folder (:func:`crossmatch_ext.data.studies_datalists`): every study
      with a final label is labeled (``num_labeled`` is not used; 20 % of them validate), every other study is
      unlabeled.

    Args:
        name: the dataset's name, for the log.
        dataset_dir: the data folder (or JSON file), checked by :func:`check_dataset_dir`.
        layout: ``"json"`` or ``"studies"``.
        num_labeled: number of labeled cases (or groups with ``group_by``) of the JSON layout.
        group_by: see :func:`json_datalists`.

    Returns:
        ``{"labeled", "unlabeled", "validation"}`` lists.

    Raises:
        ValueError: for another layout.
    """
    if layout == "studies":
        return studies_datalists(dataset_dir)
    if layout == "json":
        return json_layout_datalists(name, dataset_dir, num_labeled, group_by=group_by)
    raise InputValueError(f"layout {layout!r} is not one of the shared layouts {list(SHARED_LAYOUTS)}.")


def file_layout_datalists(
    name: str,
    dataset_dir: Path,
    layout: str,
    num_labeled: int,
    val_list: str | None,
    cases_on_disk: Sequence[str],
    files: Callable[[str], tuple[Path, Path]],
    group_by: Callable[[str], str] | None = None,
) -> Datalists:
    """The lists of a folder of cases (see :func:`training_split`).

    The labeled cases are the first ``num_labeled`` IDs of the pool (with ``group_by``: all cases of the first
    ``num_labeled`` groups, counted as ``"patients"``); the unlabeled cases are all other IDs of the pool.

    Args:
        name: the dataset's name, for the log.
        dataset_dir: the dataset folder.
        layout: the layout's name, for the log.
        num_labeled: number of labeled cases (or groups).
        val_list: name of the validation list in ``dataset_dir``, or None.
        cases_on_disk: the case IDs found on disk (the pool without ``train.list``).
        files: ``case -> (image path, label path)``.
        group_by: ``case -> group`` (e.g. the patient), or None.

    Returns:
        ``{"labeled": [{"image", "label", "case"}], "unlabeled": [{"image", "case"}],
        "validation": [{"image", "label", "case"}]}``.

    Raises:
        FileNotFoundError: for a missing list or a missing file of a listed case (the message names the list).
        ValueError: for ``num_labeled`` out of range.
    """
    split = training_split(dataset_dir, val_list, cases_on_disk)
    if group_by is None:
        flags = select_labeled(split.pool, num_labeled, "cases", split.pool_source)
    else:
        flags = select_labeled([group_by(c) for c in split.pool], num_labeled, "patients", split.pool_source)

    def item(case: str, source: str, with_label: bool) -> Item:
        image, label = files(case)
        entry: Item = {"image": require_file(image, case, source)}
        if with_label:
            entry["label"] = require_file(label, case, source)
        entry["case"] = case
        return entry

    lists = {
        "labeled": [item(c, split.pool_source, True) for c, flag in zip(split.pool, flags) if flag],
        "unlabeled": [item(c, split.pool_source, False) for c, flag in zip(split.pool, flags) if not flag],
        "validation": [item(c, split.validation_source, True) for c in split.validation],
    }
    log_summary(name, layout, dataset_dir, lists)
    return lists
