"""Data lists from a MONAI Label studies folder: every study with a final label is labeled, every other is unlabeled.

MONAI Label's local datastore keeps the images in the studies folder itself and the labels a user saved as final
in ``labels/final/`` under the image's identifier (the file name without its extension)::

    studies/
        case01.nii.gz            <- labeled (labels/final/case01.nii.gz exists)
        case02.nii.gz            <- unlabeled
        labels/final/case01.nii.gz

For semi-supervised training this is the whole point: a user labels three studies and CrossMatch learns from all
thirty. MONAI Label itself passes only the labeled studies to a bundle (``train::dataset::data`` and
``validate::dataset::data``, split by its ``val_split``); :func:`studies_datalists` reads the same folder and
adds every study without a final label as unlabeled. The bundles use it as the ``"studies"`` data layout, chosen
automatically for a folder with ``labels/final/`` and, under a MONAI Label server, for the server's studies folder
(:func:`monailabel_studies`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from monai.config import PathLike
from monai.data import partition_dataset

__all__ = ["STUDY_SUFFIXES", "is_studies_folder", "monailabel_studies", "studies_datalists"]

logger = logging.getLogger(__name__)

#: Image files recognised in a studies folder (DICOM series are converted by MONAI Label, not listed here).
STUDY_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_FINAL_LABELS = Path("labels") / "final"


def _study_id(path: Path) -> str | None:
    name = path.name
    for suffix in STUDY_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def is_studies_folder(path: PathLike) -> bool:
    """True when ``path`` is a folder in MONAI Label's local datastore layout (it has ``labels/final/``).

    Args:
        path: a folder.
    """
    return (Path(path) / _FINAL_LABELS).is_dir()


def monailabel_studies() -> str | None:
    """The studies folder of the MONAI Label server running this process, or None outside MONAI Label.

    MONAI Label exports its settings as environment variables to the processes it starts (``/train`` runs in one);
    ``MONAI_LABEL_STUDIES`` is the ``--studies`` folder. A remote datastore (a DICOMweb URL) gives None.

    Returns:
        The folder as a string, or None.
    """
    studies = os.environ.get("MONAI_LABEL_STUDIES", "")
    return studies if studies and Path(studies).is_dir() else None


def studies_datalists(studies_dir: PathLike, val_split: float = 0.2) -> dict[str, list[dict[str, Any]]]:
    """Labeled / unlabeled / validation lists of a MONAI Label studies folder.

    The studies with a final label are split as MONAI Label's bundle trainer does by default (the first
    ``1 - val_split`` of them in identifier order for training, the rest for validation; all for training when there
    are fewer than two); every study without a final label is unlabeled.

    Args:
        studies_dir: the studies folder.
        val_split: fraction of the labeled studies used for validation.

    Returns:
        ``{"labeled": [{"image", "label", "case"}], "unlabeled": [{"image", "case"}],
        "validation": [{"image", "label", "case"}]}``.

    Raises:
        FileNotFoundError: when the folder does not exist.
        ValueError: when it holds no image, or ``val_split`` is outside ``[0, 1)``.
    """
    root = Path(studies_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"studies folder not found: {root}")
    if not 0.0 <= float(val_split) < 1.0:
        raise ValueError(f"val_split must be in [0, 1), got {val_split}.")
    labels: dict[str, Path] = {}
    if (root / _FINAL_LABELS).is_dir():
        for path in sorted((root / _FINAL_LABELS).iterdir()):
            study = _study_id(path)
            if study is not None and path.is_file():
                labels.setdefault(study, path)
    labeled: list[dict[str, Any]] = []
    unlabeled: list[dict[str, Any]] = []
    for path in sorted(root.iterdir()):
        study = _study_id(path)
        if study is None or not path.is_file() or path.name.startswith("."):
            continue
        if study in labels:
            labeled.append({"image": str(path), "label": str(labels[study]), "case": study})
        else:
            unlabeled.append({"image": str(path), "case": study})
    if not labeled and not unlabeled:
        raise ValueError(f"no study found in {root}: expected images ending with {list(STUDY_SUFFIXES)}.")
    validation: list[dict[str, Any]] = []
    if len(labeled) > 1 and val_split > 0:
        labeled, validation = partition_dataset(labeled, ratios=[1.0 - float(val_split), float(val_split)],
                                                shuffle=False)
    logger.info(
        f"studies {root}: {len(labeled) + len(validation)} with a final label ({len(labeled)} for training, "
        f"{len(validation)} for validation), {len(unlabeled)} without (unlabeled)"
    )
    return {"labeled": list(labeled), "unlabeled": unlabeled, "validation": list(validation)}
