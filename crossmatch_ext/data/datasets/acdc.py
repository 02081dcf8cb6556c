"""The Automated Cardiac Diagnosis Challenge (2D cine-MRI slices): layouts and data list rules.

The lists hold volumes (one per patient and frame); training is 2D on their slices (sliced by the pipeline),
evaluation per volume. ``num_labeled`` counts patients: all volumes of the first ``num_labeled`` patients are
labeled.

Layouts (``layout="auto"`` detects them in this order):

* ``"json"``: a MONAI datalist (a ``.json`` file, or a folder with ``datalist.json``): all ``training`` items with a
  label of the first ``num_labeled`` patients (an item's ``patient`` entry, else :func:`patient_id` of its case) are
  labeled, all other ``training`` items unlabeled.
* ``"studies"``: a MONAI Label studies folder (:func:`crossmatch_ext.data.studies_datalists`).
* ``"h5"``: the community HDF5 layout, ``<dir>/volumes/<ID>.h5``, or ``<dir>/data/<ID>.h5`` (the CrossMatch
  repository's layout, whose ``data/slices/`` is ignored).
* ``"nifti"``: the challenge's own files, ``<dir>/patientNNN/patientNNN_frameMM.nii.gz`` with
  ``patientNNN_frameMM_gt.nii.gz`` (the ``_4d.nii.gz`` cine files are ignored).

For the file layouts the training pool is ``<dir>/train.list`` (volume IDs) when present, else every volume found on
disk (sorted) that is not in the validation list ``<dir>/<val_list>``. The labeled volumes are all volumes of the
first ``num_labeled`` distinct patients in ``train.list`` order, which is exactly how the community's
``train_N_label.list`` files were made; the unlabeled volumes are all other IDs of ``train.list``.
"""

from __future__ import annotations

import re
from pathlib import Path

from monai.config import PathLike

from ...errors import InputFileNotFoundError
from .common import (
    DATALIST_NAME,
    Datalists,
    Item,
    check_folder,
    detect_layout_in,
    file_layout_datalists,
    requested_layout,
    shared_layout_datalists,
)

__all__ = ["LAYOUTS", "RAW_LABEL_MAPS", "datalists", "detect_layout", "patient_id"]

#: The layouts :func:`datalists` reads (``"auto"`` detects one of them).
LAYOUTS: tuple[str, ...] = ("h5", "nifti", "json", "studies")
#: Every ACDC layout stores the classes themselves (0 background, 1 right ventricle, 2 myocardium, 3 left ventricle).
RAW_LABEL_MAPS: dict[str, dict[int, int]] = {}

_PATIENT_PATTERN = re.compile(r"^(.*?)_frame\d+$")


def patient_id(case: str) -> str:
    """ACDC patient of a volume identifier: ``patient012_frame01`` -> ``patient012`` (else the identifier itself).

    Args:
        case: volume identifier.

    Returns:
        The patient identifier.
    """
    match = _PATIENT_PATTERN.match(case)
    return match.group(1) if match else case


def _item_patient(item: Item) -> str:
    return str(item.get("patient", patient_id(item["case"])))


def _volume_dir(path: Path) -> Path | None:
    for sub in ("volumes", "data"):
        candidate = path / sub
        if candidate.is_dir() and any(candidate.glob("*.h5")):
            return candidate
    return None


def _nifti_cases(root: Path) -> dict[str, tuple[Path, Path]]:
    cases: dict[str, tuple[Path, Path]] = {}
    for image in sorted(root.glob("*/*_frame[0-9][0-9].nii.gz")):
        case = image.name[: -len(".nii.gz")]
        cases[case] = (image, image.with_name(f"{case}_gt.nii.gz"))
    return cases


def detect_layout(dataset_dir: PathLike) -> str:
    """Detect the ACDC layout of ``dataset_dir``: ``"json"``, ``"studies"``, ``"h5"`` or ``"nifti"``
    (:func:`~crossmatch_ext.data.datasets.common.detect_layout_in`; errors name the path and what was expected).
    """
    return detect_layout_in(
        dataset_dir,
        [("h5", lambda path: _volume_dir(path) is not None),
         ("nifti", lambda path: any(path.glob("*/*_frame[0-9][0-9].nii.gz")))],
        f"no ACDC data layout found: expected a datalist JSON ({DATALIST_NAME}), HDF5 volumes in volumes/ or data/, "
        "or patient folders with patientNNN_frameMM.nii.gz + _gt.nii.gz (challenge layout). Point --dataset_dir at "
        "such a folder.",
    )


def datalists(
    dataset_dir: PathLike, num_labeled: int, *, layout: str = "auto", val_list: str | None = "val.list"
) -> Datalists:
    """Build the ACDC labeled / unlabeled / validation lists of volumes (see the module docstring); the labeled
    volumes are those of whole patients.

    Args:
        dataset_dir: the data folder, or a datalist JSON file.
        num_labeled: number of labeled patients (the bundle's ``num_labeled_patients``): all volumes (both frames)
            of the first ``num_labeled`` distinct patients in ``train.list`` order (1, 3, 7 in the paper's
            settings). Without ``train.list`` the patients are sorted.
        layout: ``"auto"``, ``"h5"``, ``"nifti"``, ``"json"`` or ``"studies"``.
        val_list: name of the validation list (volume IDs) in ``dataset_dir``, or None. Not used by the JSON
            layout.

    Returns:
        ``{"labeled": [{"image", "label", "case"}], "unlabeled": [{"image", "case"}],
        "validation": [{"image", "label", "case"}]}``; ``case`` is the volume ID (``patient012_frame01``).

    Raises:
        FileNotFoundError: when the folder, a list or a referenced file is missing (the message names the list).
        ValueError: for an unknown layout, or ``num_labeled`` outside ``1 .. number of patients``.
    """
    path, chosen = requested_layout(dataset_dir, layout, LAYOUTS, detect_layout)
    if chosen in ("json", "studies"):
        return shared_layout_datalists("ACDC", path, chosen, num_labeled, group_by=_item_patient)
    check_folder(path, chosen)
    if chosen == "h5":
        volume_dir = _volume_dir(path)
        if volume_dir is None:
            raise InputFileNotFoundError(f"no HDF5 volumes found in {path / 'volumes'} or {path / 'data'}.")

        def files(case: str) -> tuple[Path, Path]:
            file = volume_dir / f"{case}.h5"
            return file, file

        on_disk = sorted(p.stem for p in volume_dir.glob("*.h5"))
    else:
        nifti = _nifti_cases(path)

        def files(case: str) -> tuple[Path, Path]:
            folder = path / patient_id(case)
            return nifti.get(case, (folder / f"{case}.nii.gz", folder / f"{case}_gt.nii.gz"))

        on_disk = sorted(nifti)
    return file_layout_datalists("ACDC", path, chosen, num_labeled, val_list, on_disk, files, group_by=patient_id)
