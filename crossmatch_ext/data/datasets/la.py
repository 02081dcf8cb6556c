"""The 2018 Left Atrium challenge (3D LGE-MRI): layouts and data list rules.

Layouts (``layout="auto"`` detects them in this order):

* ``"json"``: a MONAI datalist (a ``.json`` file, or a folder with ``datalist.json``): the first ``num_labeled``
  ``training`` items with a label are labeled, all other ``training`` items unlabeled
  (:func:`crossmatch_ext.data.datasets.common.json_datalists`). ``"nifti"`` names the same layout for NIfTI images
  and also finds ``<dir>/nifti/datalist.json`` (the synthetic generator's NIfTI copies); it is never detected,
  ``auto`` reports such a folder by its own layout.
* ``"studies"``: a MONAI Label studies folder (:func:`crossmatch_ext.data.studies_datalists`).
* ``"h5"``: the community HDF5 layout, ``<dir>/<ID>/mri_norm2.h5`` (image and label in one file).
* ``"nrrd"``: the challenge's own files, ``<dir>/<ID>/lgemri.nrrd`` with the label ``laendo.nrrd`` (values 0/255,
  mapped to 0/1 by :data:`RAW_LABEL_MAPS`).

For the file layouts the training pool is ``<dir>/train.list`` (one ID per line) when present, else every case
found on disk (sorted) that is not in the validation list; the validation list is ``<dir>/<val_list>``
(``val.list`` by default, e.g. ``test.list`` for the LA test cases; None for no validation list).

Labeled / unlabeled rule: the labeled cases are the first ``num_labeled`` IDs of ``train.list``, which is exactly how
the community's ``train_N_label.list`` files were made; the unlabeled cases are **all other** IDs of ``train.list``.
The community ``train_N_unlabel.list`` files are deliberately not read: the LA ``train_16_unlabel.list`` is not the
complement of ``train_16_label.list`` (12 of its cases are also labeled and 12 training cases are missing from both
lists), which would leak labeled cases into the unlabeled stream.
"""

from __future__ import annotations

from pathlib import Path

from monai.config import PathLike

from .common import (
    DATALIST_NAME,
    Datalists,
    check_folder,
    detect_layout_in,
    file_layout_datalists,
    json_layout_datalists,
    requested_layout,
    shared_layout_datalists,
)

__all__ = ["H5_NAME", "IMAGE_NAME", "LABEL_NAME", "LAYOUTS", "RAW_LABEL_MAPS", "datalists", "detect_layout"]

#: The layouts :func:`datalists` reads (``"auto"`` detects one of them).
LAYOUTS: tuple[str, ...] = ("h5", "nrrd", "nifti", "json", "studies")
#: Raw label values of each layout whose files do not store classes: the challenge stores the atrium as 255.
RAW_LABEL_MAPS: dict[str, dict[int, int]] = {"nrrd": {0: 0, 255: 1}}

H5_NAME = "mri_norm2.h5"
IMAGE_NAME = "lgemri.nrrd"
LABEL_NAME = "laendo.nrrd"


def detect_layout(dataset_dir: PathLike) -> str:
    """Detect the LA layout of ``dataset_dir``: ``"json"``, ``"studies"``, ``"h5"`` or ``"nrrd"``
    (:func:`~crossmatch_ext.data.datasets.common.detect_layout_in`; errors name the path and what was expected).
    """
    return detect_layout_in(
        dataset_dir,
        [("h5", lambda path: any(path.glob(f"*/{H5_NAME}"))), ("nrrd", lambda path: any(path.glob(f"*/{IMAGE_NAME}")))],
        f"no LA data layout found: expected a datalist JSON ({DATALIST_NAME}), case folders with {H5_NAME} (HDF5 "
        f"layout), or case folders with {IMAGE_NAME} + {LABEL_NAME} (challenge layout). Point --dataset_dir at such a "
        "folder.",
    )


def datalists(
    dataset_dir: PathLike, num_labeled: int, *, layout: str = "auto", val_list: str | None = "val.list"
) -> Datalists:
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
    path, chosen = requested_layout(dataset_dir, layout, LAYOUTS, detect_layout)
    if chosen == "nifti":
        return json_layout_datalists("LA", path, num_labeled, layout="nifti", subfolders=("nifti",))
    if chosen in ("json", "studies"):
        return shared_layout_datalists("LA", path, chosen, num_labeled)
    check_folder(path, chosen)
    image_name, label_name = (H5_NAME, H5_NAME) if chosen == "h5" else (IMAGE_NAME, LABEL_NAME)
    on_disk = sorted(p.parent.name for p in path.glob(f"*/{image_name}"))

    def files(case: str) -> tuple[Path, Path]:
        return path / case / image_name, path / case / label_name

    return file_layout_datalists("LA", path, chosen, num_labeled, val_list, on_disk, files)
