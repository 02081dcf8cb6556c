"""The LA and ACDC data list functions under their earlier names (the rules live in :mod:`.datasets`).

New code names a dataset module instead: :func:`crossmatch_ext.data.dataset_datalists` with
``crossmatch_ext.data.datasets.la`` or ``crossmatch_ext.data.datasets.acdc``.
"""

from __future__ import annotations

from monai.config import PathLike

from .datasets import acdc, la
from .datasets.acdc import patient_id
from .datasets.common import Datalists, case_id_from_path, read_id_list

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

#: ``data_layout`` values of LA and ACDC (``"auto"`` and the modules' ``LAYOUTS``).
LA_LAYOUTS: tuple[str, ...] = ("auto", *la.LAYOUTS)
ACDC_LAYOUTS: tuple[str, ...] = ("auto", *acdc.LAYOUTS)

detect_la_layout = la.detect_layout
detect_acdc_layout = acdc.detect_layout


def la_datalists(
    dataset_dir: PathLike, num_labeled: int, layout: str = "auto", val_list: str | None = "val.list"
) -> Datalists:
    """:func:`crossmatch_ext.data.datasets.la.datalists`."""
    return la.datalists(dataset_dir, num_labeled, layout=layout, val_list=val_list)


def acdc_datalists(
    dataset_dir: PathLike, num_labeled_patients: int, layout: str = "auto", val_list: str | None = "val.list"
) -> Datalists:
    """:func:`crossmatch_ext.data.datasets.acdc.datalists` (``num_labeled_patients`` is its ``num_labeled``)."""
    return acdc.datalists(dataset_dir, num_labeled_patients, layout=layout, val_list=val_list)
